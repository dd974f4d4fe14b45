"""Built-in executor for target kind ``local``: the appliance itself.

Checks of kind ``local`` carry a Python ``probe`` (params -> facts) instead
of a script; probes may block (stat, statvfs, adjtimex), so they run in the
agent's bounded thread pool, each with its own time budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from osiris import hookimpl
from osiris import budget
from osiris.flow import error_observations, evaluate
from osiris.records import CheckSpec, Observation, RunbookResult, RunbookSpec, Target

KIND = "local"


class LocalExecutor:
    kind = KIND

    def __init__(self, ctx: Any):
        self.ctx = ctx

    async def observe(self, target: Target, checks: Sequence[CheckSpec], *, deadline: float) -> list[Observation]:
        return list(await asyncio.gather(*(self._one(target, c, deadline) for c in checks)))

    async def _one(self, target: Target, spec: CheckSpec, deadline: float) -> Observation:
        if spec.probe is None:
            return error_observations(target, [spec], "a local check needs a probe")[0]
        start = time.perf_counter()
        try:
            limit = min(spec.timeout, budget.remaining(deadline))
            facts = await asyncio.wait_for(self.ctx.run_blocking(spec.probe, dict(spec.params)), limit)
        except asyncio.TimeoutError:
            return error_observations(target, [spec], f"probe took longer than {limit:g} s")[0]
        except Exception as exc:  # noqa: BLE001 - one probe's failure is that check's error
            return error_observations(target, [spec], f"probe failed: {type(exc).__name__}: {exc}")[0]
        return evaluate(target, spec, facts, (time.perf_counter() - start) * 1000)

    async def run_runbook(self, target: Target, runbook: RunbookSpec, params: Mapping[str, Any], *,
                          deadline: float) -> RunbookResult:
        if runbook.action is None:
            return RunbookResult(target.name, runbook.id, False, "a local runbook needs an action")
        start = time.perf_counter()
        try:
            limit = min(runbook.timeout, budget.remaining(deadline))
            out = await asyncio.wait_for(self.ctx.run_blocking(runbook.action, dict(params)), limit)
        except Exception as exc:  # noqa: BLE001
            return RunbookResult(target.name, runbook.id, False, f"{type(exc).__name__}: {exc}")
        if out is not None and not isinstance(out, Mapping):
            return RunbookResult(target.name, runbook.id, False, f"action returned {type(out).__name__}, expected a mapping")
        return RunbookResult(target.name, runbook.id, True, "done", dict(out or {}), (time.perf_counter() - start) * 1000)


@hookimpl
def osiris_executors(ctx):
    return LocalExecutor(ctx)
