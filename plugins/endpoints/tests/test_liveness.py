"""An auditor can tell "compliant" from "not reporting": a silent endpoint,
events it dropped and a replaced queue each become an observation (and an
incident) that passes again when the endpoint is whole again."""

from __future__ import annotations

import json
import time

import grpc

from osiris_endpoint.agent import EndpointAgent, enrol
from osiris_lab.endpoint import EmulatedHost
from osiris_endpoint_proto import agent_pb2 as pb

from .helpers import FIREWALL, Endpoint, until
from .test_refusals import call_stream, creds

FACTS = json.dumps({"profiles": [{"name": p, "enabled": True, "default_inbound": "Block"}
                                 for p in ("Domain", "Private", "Public")]})


def latest(app, check):
    return {(r["target"], r["check_id"]): r for r in app.agent.store.latest()}.get(("ws01", check))


async def test_a_silent_endpoint_is_not_reporting_until_it_comes_back(appliance, endpoint):
    app = await appliance()
    ep = await endpoint(app)
    await until(lambda: ep.agent.connected.is_set(), what="the stream")
    await ep.close()  # silent from now on (silence_allowance 3 s here)
    row = await until(lambda: latest(app, "endpoints.reporting"), what="the endpoint to be reported silent")
    assert row["status"] == "fail" and row["reason"].startswith("no report from the endpoint for ")
    [incident] = [i for i in app.agent.store.incidents(None) if i.check_id == "endpoints.reporting"]
    # The same machine (its identity and queue) comes back.
    again = Endpoint(EndpointAgent(ep.agent.dir, EmulatedHost(ep.agent.host.lab_host), check_interval=0.2,
                                   backoff=0.05, backoff_cap=0.5)).start()
    try:
        await until(lambda: latest(app, "endpoints.reporting")["status"] == "pass", what="reporting again")
        # The incident ended (escalated: nothing heals silence) and none is open any more.
        assert app.agent.store.incident(incident.id).state == "resolved"
        assert not [i for i in app.agent.store.incidents("open") if i.check_id == "endpoints.reporting"]
    finally:
        await again.close()


async def test_dropped_events_and_a_replaced_queue_are_evidence_gaps(appliance, tmp_path):
    app = await appliance()
    identity = await enrol(tmp_path / "e", app.token(), "ws01")
    now = int(time.time() * 1000)
    address = f"127.0.0.1:{app.source.port}"

    def event(seq):
        return pb.Event(seq=seq, check_id=FIREWALL, observed_at_ms=now, facts_json=FACTS)

    hello = pb.EndpointMessage(hello=pb.Hello(queue_id="q1"))
    dropped = pb.EndpointMessage(batch=pb.Batch(events=[event(6), event(7)], gaps=[
        pb.Gap(from_seq=1, to_seq=5, reason="the endpoint's queue was full")]))
    got, code, _, _ = await call_stream(address, creds(identity), [hello, dropped])
    assert code == grpc.StatusCode.OK and got[1].ack.through_seq == 7
    row = latest(app, "endpoints.events_complete")
    assert row["status"] == "fail"
    assert row["reason"] == ("evidence gap: the endpoint dropped 5 events (sequence 1..5: the endpoint's queue "
                             "was full)")
    # The next complete batch closes the gap.
    got, code, _, _ = await call_stream(address, creds(identity), [
        hello, pb.EndpointMessage(batch=pb.Batch(events=[event(8)]))])
    assert got[0].welcome.acked_seq == 7 and got[1].ack.through_seq == 8
    assert latest(app, "endpoints.events_complete")["status"] == "pass"
    # A new queue id: what the old queue had not delivered is gone, and said so.
    got, code, _, _ = await call_stream(address, creds(identity), [pb.EndpointMessage(hello=pb.Hello(queue_id="q2"))])
    assert code == grpc.StatusCode.OK and got[0].welcome.acked_seq == 0
    row = latest(app, "endpoints.events_complete")
    assert row["status"] == "fail" and "the endpoint's queue was replaced" in row["reason"]
    assert app.agent.store.has_report("endpoint/ws01/q1/reset")
