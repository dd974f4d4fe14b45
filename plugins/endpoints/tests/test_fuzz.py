"""Hypothesis fuzzing of every message field over a real stream (sizes,
times far in the past and future, unknown ids, sequence numbers going
backwards, odd JSON): each stream ends with OK or a status that says what
was wrong, never an internal error, and the appliance keeps serving."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osiris_endpoint_proto import agent_pb2 as pb
from osiris_endpoint.agent import enrol

from .helpers import FIREWALL
from .test_refusals import call_stream, creds

NOW = int(time.time() * 1000)
U64 = st.integers(0, 2 ** 64 - 1)
I64 = st.integers(-2 ** 63, 2 ** 63 - 1)
text = st.text(max_size=300)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
# Fixed odd documents (drawn whole: hypothesis keeps its draws small).
ODD = ['{"a": ' * 2000 + "1" + "}" * 2000, '{"x": NaN}', '{"x": 1e999}', '{"x": 12345678901234567890}',
       '{"x": "\\ud800"}', "{}", "[]", "null", json.dumps({"profiles": []}), json.dumps({"big": "x" * 70_000})]
facts = st.one_of(json_values.map(lambda v: json.dumps(v)), text, st.sampled_from(ODD))
times = st.one_of(I64, st.integers(NOW - 86_400_000 * 30, NOW + 86_400_000), st.just(NOW))
check_ids = st.one_of(st.just(FIREWALL), st.just("windows.screenlock"), text)
events = st.builds(pb.Event, seq=st.one_of(U64, st.integers(0, 20)), check_id=check_ids, observed_at_ms=times,
                   facts_json=facts, error=st.one_of(st.just(""), text), duration_ms=st.floats())
gaps = st.builds(pb.Gap, from_seq=st.one_of(U64, st.integers(0, 20)), to_seq=st.one_of(U64, st.integers(0, 20)),
                 reason=text)
hellos = st.builds(pb.Hello, queue_id=st.one_of(st.just("fuzz-q"), st.from_regex(r"[A-Za-z0-9-]{1,64}", fullmatch=True),
                                                text),
                   agent_version=text, catalogue_version=text, queue_depth=U64)
messages = st.one_of(
    hellos.map(lambda h: pb.EndpointMessage(hello=h)),
    st.builds(pb.Batch, events=st.lists(events, max_size=6), gaps=st.lists(gaps, max_size=3)).map(
        lambda b: pb.EndpointMessage(batch=b)),
    st.builds(pb.Heartbeat, sent_at_ms=I64, queue_depth=U64).map(lambda h: pb.EndpointMessage(heartbeat=h)),
    st.just(pb.EndpointMessage()),
)
conversations = st.one_of(
    st.lists(messages, max_size=5).map(lambda ms: [pb.EndpointMessage(hello=pb.Hello(queue_id="fuzz-q"))] + ms),
    st.lists(messages, max_size=5))
CLEAR = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}


@pytest.fixture
async def running(appliance, tmp_path):
    app = await appliance(endpoints={"handshake_rate": 10_000, "handshake_burst": 10_000, "event_rate": 1e6,
                                     "event_burst": 1_000_000})
    identity = await enrol(tmp_path / "fuzzer", app.token(), "ws01")
    return app, identity


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(conversation=conversations)
async def test_any_message_gets_a_clear_status_and_never_a_crash(running, conversation):
    app, identity = running
    address = f"127.0.0.1:{app.source.port}"
    got, code, details, _ = await call_stream(address, creds(identity), conversation, read=len(conversation) + 1)
    assert code in CLEAR, (code, details)
    if code != grpc.StatusCode.OK:
        assert details and "Traceback" not in details and "Exception" not in details
    assert not app.task.done()
    # And the next endpoint is served as ever.
    got, code, _, _ = await call_stream(address, creds(identity), [pb.EndpointMessage(hello=pb.Hello(queue_id="probe"))])
    assert code == grpc.StatusCode.OK and got[0].WhichOneof("kind") == "welcome"

