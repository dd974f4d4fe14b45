"""End to end over real gRPC with mutual TLS: an endpoint enrolled with a
token streams the drift it sees; the appliance turns it into an incident
that the ladder heals over WinRM, verifies, and resolves."""

from __future__ import annotations

import json

from .helpers import FIREWALL, until


async def test_enrolled_endpoint_streams_drift_that_the_ladder_heals(lab, appliance, endpoint):
    app = await appliance()
    store = app.agent.store
    # The start-up sweep over WinRM saw the firewall on; it is not swept again soon.
    await until(lambda: any(r["check_id"] == FIREWALL for r in store.latest()), what="the first sweep")
    ep = await endpoint(app)
    await until(lambda: ep.agent.connected.is_set(), what="the endpoint's stream")
    assert FIREWALL in ep.agent.checks  # the catalogue came with the enrolment

    lab.break_setting("ws01", "firewall.public.enabled")
    resolved = await until(lambda: [i for i in store.incidents("resolved") if i.check_id == FIREWALL],
                           timeout=90, what="the incident to be resolved")
    [incident] = resolved
    assert (incident.target, incident.outcome, incident.tier) == ("ws01", "healed", "L1")
    assert lab.host("ws01").state.get("firewall.public.enabled") is True

    # The drift came from the endpoint: the incident's first observation is
    # one of its reports, stored once under its report id.
    rows = app.observations("target = 'ws01' AND check_id = ?", (FIREWALL,))
    pushed = [r for r in rows if r["report_id"]]
    failing = [r for r in pushed if r["status"] == "fail"]
    assert failing and failing[0]["report_id"].startswith(f"endpoint/ws01/{ep.agent.queue.queue_id}/")
    assert json.loads(failing[0]["facts"])["profiles"][2] == {"name": "Public", "enabled": False,
                                                             "default_inbound": "Block"}
    assert len({r["report_id"] for r in pushed}) == len(pushed)
    # Everything the endpoint queued is acknowledged in the end.
    await until(lambda: ep.agent.queue.depth() == 0 and ep.agent.queue.acked == ep.agent.queue.last_seq(),
                what="every event acknowledged")
    assert store.has_report(f"endpoint/ws01/{ep.agent.queue.queue_id}/{ep.agent.queue.last_seq()}")
