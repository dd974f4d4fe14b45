"""The engine: schedule checks, record observations, open incidents.

The first stage of the one-way flow (:mod:`osiris.flow`): executors (on the
engine's schedule) and sources (pushing) produce observations; the engine
records them in the store, which compares them with policy (a failing check
is drift) and keeps at most one open incident per target and check, and
hands each target's recorded observations to its downstream stage (the
healing ladder) as one :class:`~osiris.flow.Batch`. It never resolves an
incident and never hears back from downstream.

The scheduler ticks on its own: each tick it starts a task for every target
that has checks due and is not already being observed, so one slow or
hanging host never delays the others, and the heartbeat that ``/health`` and
the systemd watchdog read keeps beating while hosts are slow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any
from datetime import datetime, timedelta

from . import budget
from .flow import Batch, Recorded, Stage, observe, record
from .records import CheckSpec, Observation, Status, Target, utcnow
from .store import Store

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        registry: Any,
        store: Store,
        targets: Sequence[Target],
        *,
        downstream: Stage | None = None,
        max_concurrent_targets: int = 32,
        tick: float = 5.0,
    ):
        self.registry = registry
        self.store = store
        self.targets = {t.name: t for t in targets}
        self.downstream = downstream
        self.tick = tick
        self._sem = asyncio.Semaphore(max_concurrent_targets)
        self._in_flight: dict[str, asyncio.Task] = {}
        self._last_run: dict[tuple[str, str], datetime] = store.last_observed()
        self.heartbeat = time.monotonic()
        self.started = time.monotonic()
        self.sweeps = 0
        self.observations_total: dict[str, int] = {s.value: 0 for s in Status}
        self.incidents_opened = 0
        self.last_error: str | None = None

    # -- scheduling -------------------------------------------------------------

    def due(self, now: datetime | None = None, force: bool = False) -> dict[str, list[CheckSpec]]:
        now = now or utcnow()
        out: dict[str, list[CheckSpec]] = {}
        for name, target in self.targets.items():
            checks = []
            for spec in self.registry.checks_for(target):
                last = self._last_run.get((name, spec.id))
                if force or last is None or last + timedelta(seconds=spec.interval) <= now:
                    checks.append(spec)
            if checks:
                out[name] = checks
        return out

    async def sweep(self, *, force: bool = False, only_targets: set[str] | None = None,
                    only_checks: set[str] | None = None) -> list[Observation]:
        """Observe every due target once and wait for all of them."""
        due = self.due(force=force)
        jobs = []
        for name, checks in due.items():
            if only_targets is not None and name not in only_targets:
                continue
            if only_checks is not None:
                checks = [c for c in checks if c.id in only_checks]
            if checks:
                jobs.append(self.observe_target(self.targets[name], checks))
        results = await asyncio.gather(*jobs)
        self.sweeps += 1
        return [o for batch in results for o in batch]

    async def run(self, stop: asyncio.Event) -> None:
        """The scheduler loop: tick, start due targets, beat the heart."""
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            for name, checks in self.due().items():
                if name in self._in_flight:
                    continue
                task = asyncio.create_task(self.observe_target(self.targets[name], checks), name=f"observe:{name}")
                self._in_flight[name] = task
                task.add_done_callback(lambda t, n=name: self._observed(n, t))
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.tick)
            except asyncio.TimeoutError:
                pass
        for task in list(self._in_flight.values()):
            task.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    def _observed(self, name: str, task: asyncio.Task) -> None:
        self._in_flight.pop(name, None)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.last_error = f"observing {name} failed: {type(exc).__name__}: {exc}"
            log.error("observing %s failed", name, exc_info=exc)

    def heartbeat_age(self) -> float:
        return time.monotonic() - self.heartbeat

    def alive(self, grace: float | None = None) -> bool:
        grace = grace if grace is not None else max(3 * self.tick, 15.0)
        return self.heartbeat_age() <= grace

    # -- observing ----------------------------------------------------------------

    async def observe_target(self, target: Target, checks: list[CheckSpec]) -> list[Observation]:
        """Observe one target's due checks by one deadline, record the
        results and hand them downstream."""
        # Mark them as run now, so a slow host is not started twice.
        started = utcnow()
        for c in checks:
            self._last_run[(target.name, c.id)] = started
        async with self._sem:
            observations = await observe(self.registry, target, checks, budget.for_checks(c.timeout for c in checks))
        await self._record("sweep", target, checks, observations)
        return observations

    async def submit(self, observations: Observation | Sequence[Observation]) -> None:
        """What sources push (an endpoint agent's reports): one observation
        or several, recorded in one transaction and handed downstream like
        a sweep's results, one batch per target. When it returns they are
        stored (a source may acknowledge them then)."""
        if isinstance(observations, Observation):
            observations = [observations]
        observations = list(observations)
        if not observations:
            return
        recorded = self._store_all(observations)
        by_target: dict[str, list[Recorded]] = {}
        for r in recorded:
            by_target.setdefault(r.observation.target, []).append(r)
        for name, rs in by_target.items():
            ids = dict.fromkeys(r.observation.check for r in rs)
            checks = [c.spec for c in (self.registry.checks.get(i) for i in ids) if c is not None]
            await self._downstream("push", self.targets.get(name), checks, tuple(rs))

    async def _record(self, origin: str, target: Target | None, checks: Sequence[CheckSpec],
                      observations: Sequence[Observation]) -> None:
        await self._downstream(origin, target, checks, self._store_all(observations))

    def _store_all(self, observations: Sequence[Observation]) -> tuple[Recorded, ...]:
        recorded = record(self.store, observations)
        for r in recorded:
            obs = r.observation
            key = (obs.target, obs.check)
            last = self._last_run.get(key)
            self._last_run[key] = obs.observed_at if last is None else max(last, obs.observed_at)
            self.observations_total[obs.status.value] += 1
            if r.new:
                self.incidents_opened += 1
                log.warning("incident %d opened: %s on %s: %s", r.incident.id, obs.check, obs.target, obs.reason)
        return recorded

    async def _downstream(self, origin: str, target: Target | None, checks: Sequence[CheckSpec],
                          recorded: tuple[Recorded, ...]) -> None:
        if self.downstream is None or not recorded:
            return
        try:
            await self.downstream.accept(Batch(origin, target, tuple(checks), recorded))
        except Exception as exc:  # a downstream bug must not stop the sweep; it is stored
            self.last_error = f"downstream failed: {type(exc).__name__}: {exc}"
            log.exception("downstream stage failed on %s", target.name if target else "a pushed observation")

    def in_flight(self) -> list[str]:
        return sorted(self._in_flight)

    def uptime(self) -> float:
        return time.monotonic() - self.started
