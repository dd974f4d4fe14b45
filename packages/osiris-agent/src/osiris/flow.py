"""The one-way data flow and what travels along it.

::

    sources ─push─┐
                  ├─> engine ──Batch──> ladder ──Batch──> evidence ──> sinks
    executors ────┘    (store)          (store)

Each stage hands a :class:`Batch` to the next stage's ``accept`` and never
calls back up: the engine records what was observed and opens incidents;
the ladder decides what each recorded observation means for its incident
(heal, recovered, nothing) and passes the batch on; the evidence service
signs it. Observations the ladder makes itself (verifying a runbook,
looking again at an incident adopted after a restart) are recorded in the
store and passed on to evidence in the same way, never sent back through
the engine.

To follow one observation end to end: :meth:`osiris.engine.Engine.observe_target`
-> :func:`observe` -> :func:`record` -> :meth:`osiris.healing.ladder.Ladder.accept`
-> :meth:`osiris.evidence.service.EvidenceService.accept`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import budget
from .records import CheckSpec, Observation, Status, Target, Verdict, utcnow
from .store import Incident, Store

log = logging.getLogger(__name__)

#: Where a batch came from: the engine's schedule (``sweep``), a source
#: (``push``), the ladder checking a runbook's effect (``verify``) or looking
#: again at an incident adopted after a restart (``recheck``).
ORIGINS = ("sweep", "push", "verify", "recheck")


@dataclass(frozen=True)
class Recorded:
    """One stored observation and the open incident it belongs to, if any
    (``new``: this observation opened it)."""

    observation: Observation
    incident: Incident | None
    new: bool


@dataclass(frozen=True)
class Batch:
    """What one stage hands the next: one target's recorded observations.

    ``target`` is None for observations a source pushed about a host that is
    not a configured target; ``checks`` are the specs that applied (the
    policy the evidence records)."""

    origin: str
    target: Target | None
    checks: tuple[CheckSpec, ...]
    recorded: tuple[Recorded, ...]

    @property
    def observations(self) -> list[Observation]:
        return [r.observation for r in self.recorded]


class Stage(Protocol):
    """A downstream stage: takes a batch, never calls back up."""

    async def accept(self, batch: Batch) -> None: ...


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


def complete(target: Target, checks: Sequence[CheckSpec], observations: Any) -> list[Observation]:
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


async def observe(registry: Any, target: Target, checks: Sequence[CheckSpec], deadline: float) -> list[Observation]:
    """Observe ``checks`` on ``target`` through its executor by ``deadline``:
    one observation per check, error observations for whatever went wrong
    (no executor, no answer in time, an executor that raised)."""
    executor = registry.executor(target.kind)
    if executor is None:
        return error_observations(target, checks, f"no executor for target kind {target.kind!r}")
    allowed = budget.remaining(deadline)
    try:
        observations = await budget.within(deadline, executor.observe(target, list(checks), deadline=deadline))
    except asyncio.TimeoutError:
        return error_observations(target, checks, f"no answer within {allowed:.0f} s")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one host's failure never stops the sweep
        log.exception("executor %s failed on %s", target.kind, target.name)
        return error_observations(target, checks, f"executor failed: {type(exc).__name__}: {exc}")
    return complete(target, checks, observations)


def record(store: Store, observations: Sequence[Observation]) -> tuple[Recorded, ...]:
    """Store observations in one transaction; each with its open incident.
    One whose ``report_id`` was stored before is left out: it travels no
    further (a source's redelivery)."""
    return tuple(Recorded(obs, r[1], r[2])
                 for obs, r in zip(observations, store.record_many(observations)) if r is not None)
