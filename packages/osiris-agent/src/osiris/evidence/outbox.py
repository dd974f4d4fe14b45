"""Durable delivery of evidence to sinks: an unreachable sink delays, never
loses, never duplicates.

The outbox of a sink is a cursor over the append-only log, kept in the log's
own database (``sink_cursors``): for bundles, "entries ``[0, delivered)``
were delivered"; for checkpoints, "every checkpoint up to size
``delivered`` was delivered". Nothing has to be enqueued, so nothing can be
lost between appending a bundle and queuing it: a new sink, or one that was
down for a month, starts where its cursor is and catches up in order.

Delivery is at-least-once with an idempotency key: the cursor advances only
after ``deliver`` returned, so a crash in between makes the same item go out
again with the same ``item_id``. Sinks make that idempotent (the HTTP sink
sends it as ``Idempotency-Key``, the local store finds the identical file
already there), which is what "never duplicates" rests on.

A sink that raises is retried with exponential backoff (``backoff_initial``
doubling to ``backoff_max``, with jitter; longer if the exception carries a
``retry_after`` hint in seconds), persisted in the cursor. A delivery may
take ``evidence.delivery_timeout`` seconds, or the sink's own
``delivery_timeout`` if that is longer; one that takes longer is cancelled
and is a failure naming the sink and the setting, so a restart does
not hammer a sink that was failing. Items are delivered in
order, one at a time per sink; sinks are independent. A sink that takes
both kinds gets a checkpoint only after every bundle it covers.

Item ids: a bundle's id (a UUID); a checkpoint's is
``checkpoint-<key id>-<size>``, and its payload is the signed note.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .bundle import SignedBundle
from .log import EvidenceLog

__all__ = ["Outbox", "sink_kinds", "Delivery", "DeliveryTimeout"]

log = logging.getLogger(__name__)

KINDS = ("bundle", "checkpoint")


class DeliveryTimeout(Exception):
    """A sink's ``deliver`` outlived its delivery timeout and was cancelled."""


def sink_kinds(sink: Any) -> tuple[str, ...]:
    """What a sink takes: its ``kinds`` attribute, default bundles only."""
    kinds = tuple(getattr(sink, "kinds", ("bundle",)))
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"sink {getattr(sink, 'name', sink)!r}: unknown kinds {bad}; expected {KINDS}")
    return kinds


@dataclass(frozen=True)
class Delivery:
    sink: str
    kind: str
    item_id: str
    position: int  # entry index, or checkpoint size
    ok: bool
    error: str | None = None


class Outbox:
    """Delivers from ``log`` to ``sinks``. Synchronous log calls go through
    ``run`` (the agent passes its evidence thread; tests call directly)."""

    def __init__(self, log: EvidenceLog, sinks: list[Any], *, timeout: float = 30.0, backoff_initial: float = 2.0,
                 backoff_max: float = 900.0, clock: Callable[[], float] = time.time,
                 run: Callable[..., Any] | None = None, rng: random.Random | None = None):
        self.log = log
        self.sinks = {s.name: s for s in sinks}
        if len(self.sinks) != len(sinks):
            raise ValueError("two evidence sinks have the same name")
        self.kinds = {s.name: sink_kinds(s) for s in sinks}
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.clock = clock
        self.rng = rng or random.Random()
        self._run = run
        self._wakes = {name: asyncio.Event() for name in self.sinks}
        # One deliverer per sink at a time (its loop, a flush at exit...).
        self._locks = {name: asyncio.Lock() for name in self.sinks}
        self.key_id = log.verify_key.key_id(log.origin).hex()

    def _declared(self, sink_name: str) -> float | None:
        value = getattr(self.sinks[sink_name], "delivery_timeout", None)
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    def timeout_for(self, sink_name: str) -> float:
        """Seconds one delivery to this sink may take: ``evidence.delivery_timeout``,
        or more if the sink declares a longer ``delivery_timeout`` of its own."""
        return max(self.timeout, self._declared(sink_name) or 0.0)

    def notify(self) -> None:
        """New evidence: wake every sink's delivery loop."""
        for event in self._wakes.values():
            event.set()

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._run is None:
            return fn(*args)
        return await self._run(fn, *args)

    def backoff(self, attempts: int) -> float:
        base = min(self.backoff_max, self.backoff_initial * (2 ** max(0, attempts - 1)))
        return base * (0.5 + self.rng.random() / 2)

    def _due(self, sink: str, kind: str, now: float) -> tuple[dict, Any]:
        """One read of the sink's cursors: this kind's cursor and its next
        item, which is None when there is none or the whole sink is held
        after a failure (it is most likely down), or the LookupError of an
        entry pruned before delivery."""
        cursors = {k: self.log.cursor(sink, k) for k in self.kinds[sink]}
        cur = cursors[kind] if kind in cursors else self.log.cursor(sink, kind)
        if max(c["next_attempt_at"] for c in cursors.values()) > now:
            return cur, None
        # A sink that takes both kinds never gets a checkpoint before every
        # bundle it covers: what it holds always verifies against what it
        # holds. (Without this, a bundle appended while the sink drained its
        # checkpoints could arrive after the checkpoint covering it.)
        covered = cursors["bundle"]["delivered"] if kind == "checkpoint" and "bundle" in cursors else None
        try:
            return cur, self._next_item(cur, kind, covered)
        except LookupError as exc:
            return cur, exc

    def _next_item(self, cur: dict, kind: str, covered: int | None = None) -> tuple[str, int, bytes, int] | None:
        """(item id, position, payload, new cursor) of the item after ``cur``, or None.
        ``covered``: for a checkpoint, the bundles the sink has; a checkpoint
        of a larger tree waits for them."""
        if kind == "bundle":
            idx = cur["delivered"]
            if idx >= self.log.size():
                return None
            e = self.log.entry(idx)
            if e.body is None or e.sig is None:
                # Pruned before this sink got it (prune refuses that; a log
                # pruned by hand could still get here): say so, do not stall.
                raise LookupError(f"entry {idx} was pruned before delivery")
            sb = SignedBundle(self.log.origin, idx, e.bundle_id, e.body, e.sig, bytes.fromhex(self.key_id))
            return e.bundle_id, idx, sb.to_envelope(), idx + 1
        cp = self.log.checkpoint_covering(cur["delivered"])  # the first after the one delivered
        if cp is None or (covered is not None and cp.size > covered):
            return None
        return f"checkpoint-{self.key_id}-{cp.size}", cp.size, cp.note, cp.size

    def pending(self, sink: str) -> dict[str, int]:
        """How many items wait for ``sink``, per kind."""
        out = {}
        for kind in self.kinds[sink]:
            cur = self.log.cursor(sink, kind)
            if kind == "bundle":
                out[kind] = max(0, self.log.size() - cur["delivered"])
            else:
                out[kind] = self.log.count_checkpoints(since_size=cur["delivered"] + 1)
        return out

    async def deliver_one(self, sink_name: str, kind: str, *, now: float | None = None) -> Delivery | None:
        """Deliver the next item of one kind to one sink, if it is due."""
        now = self.clock() if now is None else now
        cur, item = await self._call(self._due, sink_name, kind, now)
        if isinstance(item, LookupError):
            await self._call(self.log.fail_cursor, sink_name, kind, str(item), now + self.backoff_max)
            return Delivery(sink_name, kind, "", cur["delivered"], False, str(item))
        if item is None:
            return None
        item_id, position, payload, new_cursor = item
        sink = self.sinks[sink_name]
        timeout = self.timeout_for(sink_name)
        task = asyncio.ensure_future(sink.deliver(item_id, payload))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise DeliveryTimeout(
                    f"sink {sink_name} did not finish delivering {kind} {item_id} within {timeout:g} s "
                    f"(evidence.delivery_timeout is {self.timeout:g} s"
                    + (f", the sink asks for {self._declared(sink_name):g} s" if self._declared(sink_name) else "")
                    + ")")
            task.result()
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - any failure means "later"
            error = f"{type(exc).__name__}: {exc}"[:500] if str(exc) else type(exc).__name__
            attempts = cur["attempts"] + 1
            delay = self.backoff(attempts)
            hint = getattr(exc, "retry_after", None)  # e.g. the HTTP sink's Retry-After
            if isinstance(hint, (int, float)):
                delay = max(delay, min(float(hint), 86400.0))
            await self._call(self.log.fail_cursor, sink_name, kind, error, now + delay)
            if attempts in (1, 10, 100) or attempts % 1000 == 0:
                log.warning("evidence sink %s: %s %s not delivered (attempt %d): %s",
                            sink_name, kind, item_id, attempts, error)
            return Delivery(sink_name, kind, item_id, position, False, error)
        await self._call(self.log.advance_cursor, sink_name, kind, new_cursor)
        return Delivery(sink_name, kind, item_id, position, True)

    async def drain(self, sink_name: str | None = None, *, now: float | None = None,
                    limit: int | None = None) -> list[Delivery]:
        """Deliver everything due (checkpoints after bundles), stopping at a
        sink's first failure. Returns what was attempted."""
        out: list[Delivery] = []
        for name in [sink_name] if sink_name else list(self.sinks):
            async with self._locks[name]:
                for kind in self.kinds[name]:
                    while limit is None or len(out) < limit:
                        d = await self.deliver_one(name, kind, now=now)
                        if d is None:
                            break
                        out.append(d)
                        if not d.ok:
                            break
        return out

    def _held_until(self, sink_name: str) -> float:
        return max(self.log.cursor(sink_name, k)["next_attempt_at"] for k in self.kinds[sink_name])

    def next_due(self, sink_name: str) -> float:
        """Seconds until the sink's next retry (0 if nothing is held)."""
        return max(0.0, self._held_until(sink_name) - self.clock())

    async def run_sink(self, sink_name: str, stop: asyncio.Event, *, idle: float = 30.0) -> None:
        """One sink's delivery loop: drain, then sleep until new evidence
        (``wake``), the next retry, or ``idle`` seconds."""
        wake = self._wakes[sink_name]
        while not stop.is_set():
            wake.clear()
            try:
                await self.drain(sink_name)
                wait = await self._call(self.next_due, sink_name) or idle
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive a log error
                log.exception("evidence sink %s: delivery loop error", sink_name)
                wait = idle
            try:
                await asyncio.wait_for(_first(stop.wait(), wake.wait()), timeout=min(wait, idle))
            except asyncio.TimeoutError:
                pass


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
