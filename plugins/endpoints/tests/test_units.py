"""Small parts of the appliance side: acknowledged ranges, the TLS 1.3
rule, token encoding, rate buckets."""

from __future__ import annotations

import grpc
import pytest

from osiris_endpoints import tokens
from osiris_endpoints.limits import Bucket
from osiris_endpoints.server import Refused, Service, _advance


def test_acks_advance_only_over_contiguous_sequences():
    pending: list[tuple[int, int]] = [(3, 3), (5, 9)]
    assert _advance(0, pending) == 0 and pending == [(3, 3), (5, 9)]
    pending.append((1, 2))
    assert _advance(0, pending) == 3 and pending == [(5, 9)]
    pending.append((4, 4))
    assert _advance(3, pending) == 9 and pending == []
    pending.extend([(2, 2), (10, 12)])  # a replay below the mark, then a gap range
    assert _advance(9, pending) == 12 and pending == []


class FakeContext:
    def __init__(self, auth):
        self.auth = auth

    def auth_context(self):
        return self.auth


def test_anything_but_tls_1_3_is_refused_by_name():
    service = Service.__new__(Service)
    service.stream_port = 50051
    with pytest.raises(Refused) as refused:
        service._peer(FakeContext({"ssl_tls_version": [b"TLSv1.2"], "x509_pem_cert": [b"..."]}))
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details == "TLS 1.3 is required; this connection uses TLSv1.2"
    with pytest.raises(Refused, match="a client certificate is required"):
        service._peer(FakeContext({"ssl_tls_version": [b"TLSv1.3"]}))


def test_a_token_round_trips_and_damage_is_named_without_echoing_it():
    t = tokens.Token("clinic", "appliance.lan:50052", "ab" * 32, "s3cret")
    assert tokens.decode(t.encode()) == t
    for bad in ("osiris-enrol-1.!!!", "osiris-enrol-1." + t.encode()[20:], "nonsense"):
        with pytest.raises(tokens.TokenError) as err:
            tokens.decode(bad)
        assert "s3cret" not in str(err.value)


def test_buckets_refill_at_their_rate():
    now = [0.0]
    b = Bucket(rate=10, burst=5, clock=lambda: now[0])
    assert [b.take() for _ in range(5)] == [0.0] * 5
    assert b.take() == pytest.approx(0.1)
    now[0] = 0.5
    assert b.take() == 0.0
    assert b.debt(10) == pytest.approx(0.6)


def test_facts_are_json_objects_that_canonical_json_can_sign():
    from osiris_endpoints.server import parse_facts

    assert parse_facts('{"x": "\\uD83D\\uDE00", "n": 9007199254740991}') == {"x": "\U0001F600", "n": 2 ** 53 - 1}
    for bad, why in (('{"x": "\\ud800"}', "lone surrogate"), ('{"x": NaN}', "not JSON"), ('{"x": 1e999}', "not JSON"),
                     ('{"x": 9007199254740992}', "not JSON"), ("[1]", "expected a JSON object"),
                     ('{"a": ' * 5000 + "1" + "}" * 5000, "nested too deeply")):
        with pytest.raises(ValueError, match=why):
            parse_facts(bad)


async def test_a_batch_waiting_for_the_pipeline_is_not_decoded_yet():
    """Back-pressure without memory: while the pipeline is full, a waiting
    batch stays one protobuf message; its events become observations only
    when it gets its turn (at saturation every stream had 50 decoded
    observations waiting)."""
    import asyncio
    import types

    from osiris_endpoint_proto import agent_pb2 as pb
    from osiris_endpoints.settings import Settings

    service = Service.__new__(Service)
    service.s = Settings(pipeline=1)
    service.rates, service._seen = {}, {}
    service.pipeline = asyncio.Semaphore(1)
    service.counts = {"events": 0, "duplicates": 0, "batches": 0, "refused": 0}
    decoded, emitted = [], []
    service._observation = lambda target, cat, queue, ev, now: decoded.append(ev.seq) or types.SimpleNamespace(
        check="c", seq=ev.seq)

    async def emit(observations):
        emitted.append(list(observations))

    service.emit = emit
    service.endpoints = types.SimpleNamespace(update=lambda name, change: None)
    stream = types.SimpleNamespace(peer=types.SimpleNamespace(name="ws01"), target=None, gap_open=False)
    batch = pb.Batch(events=[pb.Event(seq=i, check_id="c", facts_json="{}") for i in range(1, 51)])
    await service.pipeline.acquire()  # another batch is being stored
    task = asyncio.create_task(service._batch(stream, "q", None, 0, [], batch))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done() and decoded == [], "the waiting batch was decoded before its turn"
    service.pipeline.release()
    assert await asyncio.wait_for(task, 30) == 50
    assert decoded == list(range(1, 51)) and [[o.seq for o in b] for b in emitted] == [list(range(1, 51))]
