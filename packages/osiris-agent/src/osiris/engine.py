"""The engine: schedule checks, record observations, open and resolve incidents.

Data flows one way: sources and executors produce observations, the engine
compares them with policy (a failing check is drift), records them and opens
at most one incident per target and check; listeners (the healing ladder)
are told about incident events and end every path in :meth:`Engine.resolve`.

The scheduler ticks on its own: each tick it starts a task for every target
that has checks due and is not already being observed, so one slow or
hanging host never delays the others, and the heartbeat that ``/health`` and
the systemd watchdog read keeps beating while hosts are slow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .records import CheckSpec, Observation, Status, Target, Verdict, utcnow
from .store import Incident, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IncidentEvent:
    kind: str  # "opened" | "recurred" | "resolved"
    incident: Incident
    observation: Observation | None = None


Listener = Callable[[IncidentEvent], Awaitable[None]]

#: Seconds an executor may take beyond the scripts' own time budgets
#: (connecting, starting PowerShell, cleaning up). Executors plan within it:
#: the engine gives a target ``sum(check timeouts) + TRANSPORT_GRACE`` and the
#: ladder gives a runbook ``timeout + TRANSPORT_GRACE``.
TRANSPORT_GRACE = 30.0
# Told about every target's results once they are recorded (the evidence log
# makes one bundle of them): (target, checks asked for, observations).
ObservationListener = Callable[[Target, Sequence[CheckSpec], Sequence[Observation]], Awaitable[None]]


def evaluate(target: Target, spec: CheckSpec, facts: Mapping[str, Any], duration_ms: float = 0.0,
             params: Mapping[str, Any] | None = None) -> Observation:
    """Turn facts into an observation with the check's own evaluator.

    Executors call this so that a parser that raises yields an error
    observation for that check only, with the facts kept for diagnosis.
    """
    try:
        kept = dict(facts)
    except (TypeError, ValueError):
        return Observation(target.name, spec.id, Status.ERROR,
                           f"the check produced {type(facts).__name__}, expected a mapping of facts", {}, utcnow(),
                           duration_ms)
    try:
        verdict = spec.evaluate(kept, spec.params if params is None else params)
        if not isinstance(verdict, Verdict):
            raise TypeError(f"evaluator returned {type(verdict).__name__}, expected Verdict")
    except Exception as exc:  # noqa: BLE001 - a broken parser is an error result, not a crash
        verdict = Verdict(Status.ERROR, f"could not evaluate facts: {type(exc).__name__}: {exc}")
    return Observation(target.name, spec.id, verdict.status, verdict.reason, kept, utcnow(), duration_ms)


def error_observations(target: Target, checks: Sequence[CheckSpec], reason: str) -> list[Observation]:
    now = utcnow()
    return [Observation(target.name, c.id, Status.ERROR, reason, {}, now) for c in checks]


class Engine:
    def __init__(
        self,
        registry: Any,
        store: Store,
        targets: Sequence[Target],
        *,
        max_concurrent_targets: int = 32,
        tick: float = 5.0,
    ):
        self.registry = registry
        self.store = store
        self.targets = {t.name: t for t in targets}
        self.tick = tick
        self.listeners: list[Listener] = []
        self.observation_listeners: list[ObservationListener] = []
        self._sem = asyncio.Semaphore(max_concurrent_targets)
        self._in_flight: dict[str, asyncio.Task] = {}
        self._last_run: dict[tuple[str, str], datetime] = store.last_observed()
        self.heartbeat = time.monotonic()
        self.started = time.monotonic()
        self.sweeps = 0
        self.observations_total: dict[str, int] = {s.value: 0 for s in Status}
        self.incidents_opened = 0
        self.incidents_resolved: dict[str, int] = {}
        self.last_error: str | None = None
        store.upsert_targets(list(targets))

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
                jobs.append(self._observe_target(self.targets[name], checks))
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
                task = asyncio.create_task(self._observe_target(self.targets[name], checks), name=f"observe:{name}")
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

    async def _observe_target(self, target: Target, checks: list[CheckSpec]) -> list[Observation]:
        # Mark them as run now, so a slow host is not started twice.
        started = utcnow()
        for c in checks:
            self._last_run[(target.name, c.id)] = started
        executor = self.registry.executor(target.kind)
        async with self._sem:
            if executor is None:
                observations = error_observations(target, checks, f"no executor for target kind {target.kind!r}")
            else:
                budget = sum(c.timeout for c in checks) + TRANSPORT_GRACE
                try:
                    observations = await asyncio.wait_for(executor.observe(target, checks), timeout=budget)
                except asyncio.TimeoutError:
                    observations = error_observations(target, checks, f"no answer within {budget:.0f} s")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one host's failure never stops the sweep
                    log.exception("executor %s failed on %s", target.kind, target.name)
                    observations = error_observations(target, checks, f"executor failed: {type(exc).__name__}: {exc}")
        observations = self.complete(target, checks, observations)
        await self.record_many(observations)
        for listener in self.observation_listeners:
            try:
                await listener(target, checks, observations)
            except Exception as exc:  # noqa: BLE001 - a listener bug must not stop the sweep
                self.last_error = f"observation listener failed: {exc}"
                log.exception("observation listener failed on %s", target.name)
        return observations

    @staticmethod
    def complete(target: Target, checks: Sequence[CheckSpec], observations: Sequence[Observation]) -> list[Observation]:
        """Exactly one observation per requested check, whatever the executor did."""
        wanted = {c.id for c in checks}
        if not isinstance(observations, (list, tuple)):
            observations = []  # a broken executor: every check gets an error below
        got = {o.check: o for o in observations
               if isinstance(o, Observation) and o.check in wanted and o.target == target.name}
        missing = [c for c in checks if c.id not in got]
        return [got[c.id] for c in checks if c.id in got] + error_observations(
            target, missing, "the executor returned no result for this check"
        )

    async def record(self, obs: Observation) -> None:
        """Record one observation (from an executor or a pushing source)."""
        await self.record_many([obs])

    async def record_many(self, observations: Sequence[Observation]) -> None:
        """Record one target's observations in one store transaction, then
        act on each in order (at most one per check: see :meth:`complete`)."""
        for obs, (_oid, incident, new) in zip(observations, self.store.record_many(observations)):
            await self._apply(obs, incident, new)

    async def _apply(self, obs: Observation, incident: Incident | None, new: bool) -> None:
        key = (obs.target, obs.check)
        last = self._last_run.get(key)
        self._last_run[key] = obs.observed_at if last is None else max(last, obs.observed_at)
        self.observations_total[obs.status.value] += 1
        if incident is None:
            return  # nothing open, or the same drift episode already set aside
        if obs.status is Status.FAIL:
            if new:
                self.incidents_opened += 1
                log.warning("incident %d opened: %s on %s: %s", incident.id, obs.check, obs.target, obs.reason)
            await self._notify(IncidentEvent("opened" if new else "recurred", incident, obs))
        elif obs.status is Status.PASS and not self._claimed(incident):
            await self.resolve(incident.id, "recovered", "none", f"check passed: {obs.reason}")

    def _claimed(self, incident: Incident) -> bool:
        """Whether a listener (the ladder) owns this incident's path. Without
        one, the engine itself resolves incidents whose check passes again."""
        return any(getattr(listener, "owns", lambda _i: False)(incident) for listener in self.listeners)

    async def resolve(self, incident_id: int, outcome: str, tier: str = "none", detail: str = "") -> Incident:
        incident = self.store.resolve_incident(incident_id, outcome, tier, detail)
        self.incidents_resolved[outcome] = self.incidents_resolved.get(outcome, 0) + 1
        log.info("incident %d resolved: %s (%s) %s", incident.id, outcome, tier, detail)
        await self._notify(IncidentEvent("resolved", incident))
        return incident

    async def _notify(self, event: IncidentEvent) -> None:
        for listener in self.listeners:
            try:
                await listener(event)
            except Exception as exc:  # noqa: BLE001 - a listener bug must not lose the observation
                self.last_error = f"incident listener failed: {exc}"
                log.exception("incident listener failed on incident %d", event.incident.id)

    def in_flight(self) -> list[str]:
        return sorted(self._in_flight)

    def uptime(self) -> float:
        return time.monotonic() - self.started
