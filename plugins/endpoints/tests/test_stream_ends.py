"""Every way a stream ends is a reconnect for the endpoint agent, never
the end of its stream loop: the chaos test once saw an endpoint fall
silent for good after the appliance ended its stream while batches were
still going out (grpc raises ``InvalidStateError`` for a write into a call
whose status has arrived, and reports a write racing it as INTERNAL)."""

from __future__ import annotations

import asyncio
import types

import grpc

from osiris_endpoint import agent as agent_module
from osiris_endpoint.agent import EndpointAgent, enrol
from osiris_endpoint_proto import agent_pb2_grpc as rpc
from osiris_lab.endpoint import EmulatedHost

from .helpers import until


class _HeldCall:
    """The first stream's call, whose first batch is written only once the
    appliance has ended the call: a slow writer on a loaded machine."""

    def __init__(self, call, holding: asyncio.Event):
        self._call, self._holding = call, holding

    def __getattr__(self, name):
        return getattr(self._call, name)

    async def write(self, message):
        if message.WhichOneof("kind") == "batch" and not self._holding.is_set():
            self._holding.set()
            loop = asyncio.get_running_loop()
            end = loop.time() + 60
            while not self._call.done() and loop.time() < end:
                await asyncio.sleep(0.01)
        await self._call.write(message)


async def test_a_write_into_a_stream_the_appliance_ended_is_a_reconnect_with_its_status(
        lab, appliance, monkeypatch, tmp_path):
    app = await appliance()
    holding = asyncio.Event()
    calls = []

    class Stub(rpc.EndpointAgentStub):
        def __init__(self, channel):
            super().__init__(channel)
            stream = self.Stream

            def held():
                calls.append(stream())
                return _HeldCall(calls[-1], holding) if len(calls) == 1 else calls[-1]

            self.Stream = held

    monkeypatch.setattr(agent_module, "rpc", types.SimpleNamespace(EndpointAgentStub=Stub))
    await enrol(tmp_path / "ws01", app.token(), "ws01")
    ep = EndpointAgent(tmp_path / "ws01", EmulatedHost(lab.host("ws01")), check_interval=0.2, backoff=0.05,
                       backoff_cap=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(ep.run(stop))
    try:
        await until(holding.is_set, what="the first batch")
        app.service.streams["ws01"].close(grpc.StatusCode.ABORTED, "ended by the test")
        await until(lambda: ep.connects >= 2 or task.done(), what="a second stream")
        assert not task.done(), task
        # The status is the appliance's, not grpc's local one.
        assert ep.last_status == ("ABORTED", "ended by the test")
        await until(lambda: ep.queue.last_seq() and ep.queue.acked == ep.queue.last_seq(),
                    what="everything queued to be acknowledged")
        last = ep.queue.acked
        stored = app.observations("report_id LIKE ?", (f"endpoint/ws01/{ep.queue.queue_id}/%",))
        assert sorted(int(r["report_id"].rsplit("/", 1)[1]) for r in stored)[:last] == list(range(1, last + 1))
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        ep.close()


async def test_anything_a_session_raises_is_a_stream_end_and_only_stop_ends_the_loop(appliance, lab, tmp_path):
    app = await appliance()
    await enrol(tmp_path / "ws01", app.token(), "ws01")
    ep = EndpointAgent(tmp_path / "ws01", EmulatedHost(lab.host("ws01")), backoff=0.01, backoff_cap=0.01)
    stop = asyncio.Event()
    ends = [asyncio.CancelledError(), asyncio.InvalidStateError("invalid state"), RuntimeError("a bug")]
    seen = []

    async def session(_stop):
        seen.append(ep.last_status)
        if ends:
            raise ends.pop(0)
        stop.set()

    ep._session = session  # the one seam: what a session raises
    try:
        await asyncio.wait_for(ep.run_stream(stop), 60)
    finally:
        ep.close()
    assert seen == [None, ("CANCELLED", "the call was cancelled by grpc"),
                    ("UNKNOWN", "InvalidStateError: invalid state"), ("UNKNOWN", "RuntimeError: a bug")]
    assert ep.last_status is None  # the last session ended because of stop
