"""The ``windows`` executor: one batched PowerShell round trip per host.

``observe`` composes the host's due checks into one batch
(:mod:`.script`), runs it with pywinrm in the agent's thread pool
(:mod:`.client`), and turns each unit's result into an observation with the
check's own evaluator. Hosts run concurrently up to ``max_concurrency``;
each batch has a deadline (the sum of its checks' budgets plus
``script_overhead``) that bounds its attempts, retries and backoff, so an
unreachable or hanging host costs the sweep nothing beyond its own error
observations. All of a host's batches end before the deadline the caller
passed (:mod:`osiris.budget`), less :data:`CLEANUP_RESERVE`: a batch that
would run past it is cut short, and
one with no time left is not started, so the results of the batches that
finished are kept and the others get an error that says why. Runbooks travel the same way as a batch of one unit, and are
retried only if the failure came before the Command request was sent (a
lost reply to it leaves the script possibly running: never sent twice).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from osiris.flow import error_observations, evaluate
from osiris.records import CheckSpec, Observation, RunbookResult, RunbookSpec, Status, Target, utcnow

from . import script
from .client import Failed, Output, Session, Transient
from .settings import Credentials, OptionsError, Settings, TargetOptions, credentials, parse_options

log = logging.getLogger(__name__)
KIND = "windows"

# The caller hands observe() and run_runbook() one deadline (osiris.budget)
# and stops waiting at it, which discards every result. A host's batches,
# retries and backoff must therefore end before it: each batch gets its
# checks' budgets plus script_overhead, but never past the deadline less
# CLEANUP_RESERVE, kept for stopping a script and deleting its shell (two
# requests of at most read_timeout(2) = 4 s each) and for returning.
CLEANUP_RESERVE = 10.0
MIN_BATCH_START = 3.0  # a batch with less time left than this is not started


class _Attempt:
    """Runs one batch on one host with retries, inside the host's deadline."""

    def __init__(self, executor: WindowsExecutor, target: Target, opts: TargetOptions, creds: Credentials):
        self.ex = executor
        self.target = target
        self.opts = opts
        self.creds = creds
        self.endpoint = opts.endpoint(target.address)

    async def run(self, env: Mapping[str, str], deadline: float, retry_after_start: bool) -> Output:
        s = self.ex.settings
        command, args = script.command_line()
        attempt = 0
        while True:
            attempt += 1
            session = Session(self.endpoint, self.opts, self.creds, s)
            async with self.ex.slot():
                try:
                    return await self.ex.ctx.run_blocking(session.run, command, args, env, deadline)
                except Transient as exc:
                    failure = exc
            delay = min(s.backoff_max, s.backoff * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            started = session.started
            if started and not retry_after_start:
                tries = f" (attempt {attempt})" if attempt > 1 else ""
                raise Failed(f"{failure}{tries} after the command was sent: it may have run on the host, so it "
                             "was not sent again; check the host before running it again")
            if attempt > s.retries or time.monotonic() + delay + 1 > deadline:
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                raise Failed(f"{failure}{tries}")
            log.info("windows %s: %s; retrying in %.1f s", self.target.name, failure, delay)
            await asyncio.sleep(delay)


class WindowsExecutor:
    kind = KIND

    def __init__(self, ctx: Any, settings: Settings, options: Mapping[str, TargetOptions] | None = None):
        self.ctx = ctx
        self.settings = settings
        self._options = dict(options or {})
        self._sem: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def slot(self) -> asyncio.Semaphore:
        """The concurrency bound across hosts (one per event loop)."""
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem[0] is not loop:
            self._sem = (loop, asyncio.Semaphore(self.settings.max_concurrency))
        return self._sem[1]

    def _prepare(self, target: Target) -> _Attempt:
        opts = self._options.get(target.name)
        if opts is None:
            opts = self._options[target.name] = parse_options(target.name, target.options)
        if not target.address:
            raise OptionsError(f"target {target.name!r}: key 'address': expected a host name or IP address")
        if not target.credential:
            raise OptionsError(f"target {target.name!r}: key 'credential': expected the name of a secret")
        return _Attempt(self, target, opts, credentials(self.ctx.secret(target.credential), target.name))

    # -- observe -------------------------------------------------------------------------

    async def observe(self, target: Target, checks: Sequence[CheckSpec], *, deadline: float) -> list[Observation]:
        try:
            attempt = self._prepare(target)
        except Exception as exc:  # noqa: BLE001 - bad options or secret: this host's error, named
            return error_observations(target, checks, str(exc))
        units: dict[str, script.Unit] = {}
        out: list[Observation] = []
        for spec in checks:
            try:
                units[spec.id] = script.unit("check", spec.id, spec.script)
            except script.ScriptError as exc:
                out += error_observations(target, [spec], str(exc))
        specs = {c.id: c for c in checks if c.id in units}
        if not specs:
            return out
        params = {cid: c.params for cid, c in specs.items()}
        timeouts = {cid: c.timeout for cid, c in specs.items()}

        def env_of(batch: Sequence[script.Unit]) -> dict[str, str]:
            return script.environment(script.compose(tuple(batch)),
                                      script.encode_params(batch, params, timeouts))

        # Each candidate batch that fits is kept, by its unit ids, and sent as
        # measured; one that grew by a unit replaces its shorter self, so this
        # holds at most one environment per batch.
        limit = self.settings.max_envelope_kb * 1024
        fitting: dict[tuple[str, ...], dict[str, str]] = {}

        def size_of(batch: Sequence[script.Unit]) -> int:
            env = env_of(batch)
            size = script.envelope_bytes(env)
            if size <= limit:
                ids = tuple(u.id for u in batch)
                fitting.pop(ids[:-1], None)
                fitting[ids] = env
            return size

        # The whole host, every batch included, ends within the caller's deadline.
        host_budget = deadline - time.monotonic()
        host_end = deadline - CLEANUP_RESERVE
        try:
            batches = script.plan_batches(list(units.values()), size_of, limit)
        except script.ScriptError as exc:
            return out + error_observations(target, list(specs.values()), str(exc))
        for i, batch in enumerate(batches):
            now = time.monotonic()
            if host_end - now < MIN_BATCH_START:
                reason = (f"not run: the host's time budget ({host_budget:.0f} s) was used up by {i} earlier "
                          f"batch{'es' if i > 1 else ''} of {len(batches)}")
                log.warning("windows %s: %d checks %s", target.name, len(batch), reason)
                out += error_observations(target, [specs[u.id] for u in batch], reason)
                continue
            deadline = min(now + sum(timeouts[u.id] for u in batch) + self.settings.script_overhead, host_end)
            started = time.perf_counter()
            env = fitting.pop(tuple(u.id for u in batch), None)
            try:
                output = await attempt.run(env if env is not None else env_of(batch), deadline,
                                           retry_after_start=True)
                results = _results(output)
            except (Failed, ValueError) as exc:
                reason = f"WinRM {attempt.endpoint}: {exc}"
                log.warning("windows %s: %s", target.name, reason)
                out += error_observations(target, [specs[u.id] for u in batch], reason)
                continue
            wall_ms = (time.perf_counter() - started) * 1000
            for u in batch:
                spec, r = specs[u.id], results.get(u.id)
                if r is None:
                    out.append(Observation(target.name, u.id, Status.ERROR,
                                           "the batch returned no result for this check", {}, utcnow(), wall_ms))
                elif r.ok:
                    out.append(evaluate(target, spec, r.data, r.ms))
                else:
                    out.append(Observation(target.name, u.id, Status.ERROR, _unit_error(r), {}, utcnow(), r.ms))
        return out

    # -- runbooks ----------------------------------------------------------------------------

    async def run_runbook(self, target: Target, runbook: RunbookSpec, params: Mapping[str, Any], *,
                          deadline: float) -> RunbookResult:
        started = time.perf_counter()

        def result(ok: bool, detail: str, output: Mapping[str, Any] | None = None) -> RunbookResult:
            return RunbookResult(target.name, runbook.id, ok, detail, dict(output or {}),
                                 (time.perf_counter() - started) * 1000)

        try:
            attempt = self._prepare(target)
            u = script.unit("runbook", runbook.id, runbook.script)
            env = script.environment(script.compose((u,)),
                                     script.encode_params([u], {u.id: params}, {u.id: runbook.timeout}))
        except Exception as exc:  # noqa: BLE001 - bad options, secret, script or params
            return result(False, str(exc))
        try:
            # End (and clean up) before the caller gives up, whatever
            # script_overhead says.
            end = min(time.monotonic() + runbook.timeout + self.settings.script_overhead, deadline - CLEANUP_RESERVE)
            output = await attempt.run(env, end, retry_after_start=False)
            r = _results(output).get(u.id)
        except (Failed, ValueError) as exc:
            return result(False, f"WinRM {attempt.endpoint}: {exc}")
        if r is None:
            return result(False, "the batch returned no result for this runbook")
        if not r.ok:
            return result(False, _unit_error(r))
        return result(True, "done", r.data)


def _unit_error(r: script.UnitResult) -> str:
    kind = r.error_type.rsplit(".", 1)[-1] if r.error_type else "error"
    return f"{kind}: {r.error}" if r.error else kind


_CLIXML_S = re.compile(r'<S S="Error">(.*?)</S>', re.S)


def _stderr_text(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace")
    if text.startswith("#< CLIXML"):
        parts = _CLIXML_S.findall(text)
        text = "".join(parts).replace("_x000D__x000A_", " ")
        text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    return " ".join(text.split())[:300]


def _results(output: Output) -> dict[str, script.UnitResult]:
    try:
        return script.parse_output(output.stdout)
    except ValueError as exc:
        err = _stderr_text(output.stderr)
        raise ValueError(f"the batch failed (exit code {output.exit_code}): {err or exc}") from None
