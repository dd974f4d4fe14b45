"""Faults of an endpoint agent that the network and the machine make, for
the lab's fleet: a clock off by some seconds (from the start, or stepping
once the agent has been welcomed), and sends duplicated or reordered on
the way. The agent is the real one (``EndpointAgent``); only its two
seams, :meth:`~osiris_endpoint.agent.EndpointAgent.now` and
:meth:`~osiris_endpoint.agent.EndpointAgent.send`, are replaced.

Faults strike by count, not by chance, so a test sees them every run:
every ``duplicate``-th batch is written twice and the batch before it once
more; every ``reorder``-th batch is held back until the next one has been
written (or ``hold`` seconds passed). Pausing is the whole process's
(SIGSTOP/SIGCONT from outside).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from osiris_endpoint.agent import EndpointAgent
from osiris_endpoint_proto import agent_pb2 as pb


@dataclass
class Faults:
    skew: float = 0.0  # seconds this machine's clock is ahead (negative: behind) from the start
    step: float = 0.0  # seconds it jumps by right after the first Welcome
    duplicate: int = 0  # every Nth batch is sent twice, with the one before it again
    reorder: int = 0  # every Nth batch is held back behind the next one
    hold: float = 0.2  # the longest a held batch waits for a next one


class Clock:
    """One machine's wall clock: real time plus its skew."""

    def __init__(self, skew: float = 0.0):
        self.skew = skew

    def __call__(self) -> float:
        return time.time() + self.skew


class FaultyAgent(EndpointAgent):
    def __init__(self, *args: Any, faults: Faults, clock: Clock, stepped: asyncio.Event, **kw: Any):
        """``stepped`` is set once the clock has stepped (at once when it
        does not step): the host samples only after it, so every event it
        queues carries the stepped time."""
        super().__init__(*args, **kw)
        self.faults, self.clock, self.stepped = faults, clock, stepped
        self.batches = 0
        self.duplicated = 0
        self.reordered = 0
        self._lock = asyncio.Lock()
        self._held: tuple[Any, pb.EndpointMessage] | None = None
        self._previous: tuple[Any, pb.EndpointMessage] | None = None
        if not faults.step:
            stepped.set()

    def now(self) -> float:
        return self.clock()

    async def _step_when_welcomed(self) -> None:
        await self.connected.wait()  # set after Welcome's offset was taken with the old clock
        self.clock.skew += self.faults.step
        self.stepped.set()

    async def run(self, stop: asyncio.Event) -> None:
        stepping = asyncio.create_task(self._step_when_welcomed()) if self.faults.step else None
        try:
            await super().run(stop)
        finally:
            if stepping is not None:
                stepping.cancel()

    async def send(self, call: Any, message: pb.EndpointMessage) -> None:
        async with self._lock:
            if message.WhichOneof("kind") != "batch":
                await call.write(message)
                return
            self.batches += 1
            f = self.faults
            if f.reorder and self.batches % f.reorder == 0 and self._held is None:
                self._held = (call, message)
                self.reordered += 1
                asyncio.get_running_loop().call_later(f.hold, lambda: asyncio.ensure_future(self._release(call)))
                return
            await call.write(message)
            if self._held is not None and self._held[0] is call:
                await call.write(self._held[1])  # after a later one: out of order
            self._held = None
            if f.duplicate and self.batches % f.duplicate == 0:
                await call.write(message)
                if self._previous is not None and self._previous[0] is call:
                    await call.write(self._previous[1])
                self.duplicated += 1
            self._previous = (call, message)

    async def _release(self, call: Any) -> None:
        """A held batch whose next one did not come in time goes alone
        (on a call that ended it is lost, as on a cut connection: the
        agent replays it on the next)."""
        async with self._lock:
            if self._held is None or self._held[0] is not call:
                return
            message = self._held[1]
            self._held = None
            with contextlib.suppress(Exception):
                await call.write(message)
