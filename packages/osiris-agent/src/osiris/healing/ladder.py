"""The healing ladder: L1 rule -> L2 planner -> L3 escalation.

The second stage of the one-way flow (:mod:`osiris.flow`): the engine hands
it each target's recorded observations (:meth:`Ladder.accept`); the ladder
decides what each means for its incident (a new or unowned failure is
walked up the ladder in its own task, so the engine never waits for
healing; a pass ends an incident nobody is healing as ``recovered``) and
hands the batch on to the evidence service. It owns every incident's
outcome: every path ends in :meth:`Ladder.resolve` with an outcome and the
tier that resolved it, including exceptions and timeouts: the learning
loop feeds on outcomes, so an incident left open is a bug.

What the ladder observes itself (verifying a runbook, looking again at an
incident adopted after a restart) is recorded in the store and handed to
evidence like the engine's batches, never sent back through the engine.

Safety rails, in the order they are applied:

* maintenance windows hold healing (the incident stays open, not owned, and
  is taken up when the window closes, unless the check recovers first);
* the flap guard escalates instead of healing a check that has been healed
  ``max_heals`` times on the same host within the window;
* the healing mode (site, capped per rule): ``off`` heals nothing,
  ``dry-run`` records the would-be action and changes nothing, ``standard``
  runs low-risk runbooks only, ``full`` runs any;
* only installed runbooks that fix the incident's check run, with
  parameters valid against the runbook's schema (L2 planners choose among
  them, never write scripts);
* one runbook at a time per host.

Success means verification passed: the checks the runbook fixes are re-run
through the same executor and the incident's check must pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .. import budget, risk
from ..config import HealingSettings
from ..flow import Batch, Recorded, observe, record
from ..records import (CheckSpec, EscalationChannel, Observation, PlanProposal, RuleSpec, RunbookSpec, Status, Target,
                       utcnow)
from ..store import Incident, PatternSample, Store, StoreError, iso
from .learning import Learning
from .maintenance import active_window
from .rules import RuleError, RuleSet, allows, effective_mode, load_rules, rule_files, validate_params

log = logging.getLogger(__name__)

SITE_RULES = "rules"


class Ladder:
    def __init__(
        self,
        ctx: Any,
        pm: Any,
        registry: Any,
        store: Store,
        settings: HealingSettings,
        targets: Sequence[Target],
        channels: Sequence[EscalationChannel] = (),
        *,
        evidence: Any = None,
        scrub: Callable[[Any], Any] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.ctx = ctx
        self.pm = pm
        self.registry = registry
        self.store = store
        self.targets = {t.name: t for t in targets}
        # The next stage (osiris.evidence.service.EvidenceService), or None.
        self.evidence = evidence
        # PHI and secrets leave the appliance through planners and channels:
        # what they are told passes the same scrubber as the evidence.
        self.scrub: Callable[[Any], Any] = scrub or (lambda value: value)
        self.settings = settings
        self.channels = list(channels)
        self.clock = clock
        self.rules = RuleSet()
        self.rule_errors: list[str] = []
        self.site_rules_dir = Path(ctx.state_dir) / SITE_RULES
        self.learning = Learning(store, self.site_rules_dir, settings.promotion.min_successes,
                                 settings.promotion.min_success_rate)
        self._active: dict[int, asyncio.Task] = {}
        self._held: set[int] = set()
        self._ended: set[int] = set()
        self.last_error: str | None = None
        self._host_locks: dict[str, asyncio.Lock] = {}
        self._loaded_from: dict[str, str | None] | None = None  # rule files' digests at the last load
        self.resolved: dict[str, int] = {}  # outcomes since start, for /metrics
        self._background: set[asyncio.Task] = set()
        self._recovery: asyncio.Task | None = None  # closing what a killed run left dispatched

    # -- the stage ------------------------------------------------------------------

    async def accept(self, batch: Batch) -> None:
        """Act on one target's recorded observations, then hand them on."""
        for r in batch.recorded:
            await self._decide(r)
        if self.evidence is not None:
            await self.evidence.accept(batch)

    async def _decide(self, r: Recorded) -> None:
        incident = r.incident
        if incident is None or incident.id in self._active:
            return  # nothing open, or its healing path is running and will end it
        if r.observation.status is Status.FAIL:
            # New drift, or drift opened where no ladder was running (`osiris
            # check`, a crash between open and heal): nobody owns it, so take
            # it now (unless a maintenance window holds it).
            if r.new or incident.id not in self._held:
                self._start(incident, r.observation)
        elif r.observation.status is Status.PASS:
            await self.resolve(incident.id, "recovered", "none", f"check passed: {r.observation.reason}")

    def rule_digests(self) -> dict[str, str | None]:
        """SHA-256 of each rule file as last loaded (None: unreadable)."""
        return dict(self._loaded_from or {})

    def active_incidents(self) -> list[int]:
        """Incidents whose healing path is running now."""
        return sorted(self._active)

    def _start(self, incident: Incident, observation: Observation | None = None) -> None:
        if incident.id in self._active:
            return
        self._held.discard(incident.id)
        task = asyncio.create_task(self._handle(incident, observation), name=f"heal:{incident.id}")
        self._active[incident.id] = task
        task.add_done_callback(lambda _t, i=incident.id: self._active.pop(i, None))

    async def drain(self) -> None:
        """Wait until no incident is being handled (tests, shutdown)."""
        while self._active or self._background:
            await asyncio.gather(*list(self._active.values()), *list(self._background), return_exceptions=True)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Load rules, close heal attempts a previous run left unfinished,
        and adopt incidents left open."""
        self.reload(force=True)
        unfinished = self.store.unfinished_attempts()
        if unfinished:
            task = asyncio.get_running_loop().create_task(self._close_interrupted(unfinished),
                                                          name="heal:interrupted")
            self._recovery = task
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        for incident in self.store.incidents("open"):
            self._start(incident)

    async def _close_interrupted(self, unfinished: list[dict[str, Any]]) -> None:
        """Attempts dispatched by a run that died before they finished (a
        kill mid-heal): closed as interrupted, counted as failures by the
        learning loop and as heals by the flap guard (the runbook may have
        changed the host). Each one's bundle is recorded before it is closed
        in the store, so a kill in between leaves it open for the next start
        to close (its bundle then recorded twice, never missing); incidents
        wait for this (``_handle``), so the flap guard counts them."""
        detail = "interrupted: the agent stopped while the runbook was dispatched; its effect is unknown"
        for a in unfinished:
            target = self.targets.get(a["target"])
            await self._evidence("healing_attempt", {
                "attempt": a["id"], "incident": a["incident_id"], "target": a["target"], "check": a["check_id"],
                "tier": a["tier"], "rule": a["rule_id"], "runbook": a["runbook"], "params": a["params"],
                "dry_run": bool(a["dry_run"]), "ok": False, "interrupted": True, "detail": detail,
                "dispatched_at": a["dispatched_at"]}, a["target"])
            sample = None
            if not a["dry_run"]:
                sample = PatternSample(a["check_id"], target.role if target else "", a["runbook"], a["tier"], False,
                                       0.0, a["params"])
            self.store.finish_attempt(a["id"], False, detail, sample, interrupted=True)
            log.warning("heal attempt %d (incident %d, %s on %s) closed as interrupted",
                        a["id"], a["incident_id"], a["runbook"], a["target"])

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.reload_interval)
            except asyncio.TimeoutError:
                pass
            try:
                self.tick()
            except Exception as exc:  # the loop that reloads rules must not die
                self.last_error = f"ladder tick failed: {type(exc).__name__}: {exc}"
                log.exception("ladder tick failed; keeping the last good state")

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Let heals in flight finish (bounded), so what was done on a host
        is recorded before the store and the evidence log close; what is
        still running after ``timeout`` is cancelled and its incident left
        open, to be re-observed and adopted at the next start."""
        if self._active:
            await asyncio.wait(list(self._active.values()), timeout=timeout)
        for task in list(self._active.values()):
            task.cancel()
        if self._active:
            await asyncio.gather(*list(self._active.values()), return_exceptions=True)

    def tick(self) -> None:
        self.reload()
        released = self.store.unpark_uncovered(risk.ACCEPTED, iso(self.clock()))
        for target, check in released:
            log.warning("%s on %s: its exception ended; the drift is drift again", check, target)
        if self._held and active_window(self.settings.maintenance_windows, self.clock()) is None:
            for iid in sorted(self._held):
                try:
                    incident = self.store.incident(iid)
                except Exception:  # noqa: BLE001
                    self._held.discard(iid)
                    continue
                if incident.state == "open":
                    self._start(incident)
                else:
                    self._held.discard(iid)

    # -- rules ----------------------------------------------------------------------

    def rule_sources(self) -> list[Path | RuleSpec]:
        shipped = [p for _plugin, p in self.pm.contributions("osiris_rules", ctx=self.ctx)]
        return rule_files(shipped, [self.site_rules_dir, *self.settings.rules_dirs])

    def _stat_sources(self) -> tuple[list[Path | RuleSpec], dict[str, str | None]]:
        """The rule files and a digest of each one's content (None: unreadable).
        Not their modification times: two edits within one tick of the
        file system's clock (a few milliseconds on many kernels) leave the
        same mtime, and the second edit would never be loaded."""
        files = self.rule_sources()
        current: dict[str, str | None] = {}
        for f in files:
            if isinstance(f, RuleSpec):  # a rule given as data: its content is its digest
                current[f"{f.file}:{f.line}"] = hashlib.sha256(
                    json.dumps(f.rule, sort_keys=True, default=str).encode()).hexdigest()
                continue
            try:
                current[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
            except OSError:
                current[str(f)] = None
        return files, current

    def reload(self, force: bool = False) -> bool:
        """Reload when a rule file appeared, vanished or changed. Returns
        whether a new rule set is in force; on errors the last good set
        stays and ``rule_errors`` says why."""
        try:
            files, current = self._stat_sources()
        except Exception as exc:  # noqa: BLE001 - a plugin or a directory we cannot read
            self.rule_errors = [f"rule sources: {type(exc).__name__}: {exc}"]
            log.error("rules: %s (keeping the last good rule set)", self.rule_errors[0])
            return False
        if not force and current == self._loaded_from:
            return False  # nothing changed since the last load, good or bad
        self._loaded_from = current
        try:
            rules = load_rules(files, self.registry.runbooks, self.registry.checks)
        except RuleError as exc:
            self.rule_errors = exc.messages
            for msg in exc.messages:
                log.error("rules: %s (keeping the last good rule set of %d rules)", msg, len(self.rules.rules))
            return False
        self.rules, self.rule_errors = rules, []
        log.info("rules: %d rules loaded from %d files", len(rules.rules), len(files))
        return True

    # -- the ladder ---------------------------------------------------------------------

    async def _handle(self, incident: Incident, observation: Observation | None) -> None:
        if self._recovery is not None:
            await asyncio.wait([self._recovery])  # interrupted attempts closed (and counted) first
        try:
            await self._walk(incident, observation)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every path ends in resolve
            log.exception("healing incident %d failed", incident.id)
            why = f"ladder error: {type(exc).__name__}: {exc}"
            try:  # a human should hear of drift the ladder could not handle
                target = self.targets[incident.target]
                spec = self.registry.checks[incident.check_id].spec
                facts = self.store.last_observation_of(incident.id)
                await self._escalate(incident, target, spec, facts, [], why)
            except Exception:
                log.exception("could not escalate incident %d either", incident.id)
                await self._resolve(incident, "error", "none", why)
        finally:
            ended = incident.id in self._ended or incident.id in self._held
            self._ended.discard(incident.id)
            if not ended and not asyncio.current_task().cancelling():
                await self._resolve(incident, "error", "none", "healing path ended without an outcome")

    async def _walk(self, incident: Incident, observation: Observation | None) -> None:
        target = self.targets.get(incident.target)
        contributed = self.registry.checks.get(incident.check_id)
        if target is None or contributed is None:
            await self._resolve(incident, "error", "none", "target or check is no longer configured")
            return
        spec: CheckSpec = contributed.spec
        if observation is None:
            # Adopted from a previous run: the host may have changed (a heal
            # may even have run before the agent stopped). Look again first.
            fresh = await self._observe(target, [spec], "recheck")
            observation = next(o for o in fresh if o.check == spec.id)
            if observation.status is Status.PASS:
                await self._resolve(incident, "recovered", "none", f"passed when re-observed: {observation.reason}")
                return
        facts = {"facts": observation.facts, "reason": observation.reason}
        now = self.clock()
        accepted = risk.covering(self.store.exceptions(active_at=iso(now)), target.name, spec.id, iso(now))
        if accepted is not None:
            # An accepted risk is neither healed nor escalated: it is shown
            # and reported as such until its exception ends.
            await self._resolve(incident, risk.ACCEPTED, "none", risk.describe(accepted),
                                extra={"exception": risk.evidence(accepted, "agent", "ladder")})
            return
        window = active_window(self.settings.maintenance_windows, now)
        if window is not None:
            self._held.add(incident.id)
            log.info("incident %d held: maintenance window %s-%s %s", incident.id, window.start, window.end,
                     window.timezone)
            return
        history: list[dict[str, Any]] = []
        heals = self._recent_heals(incident, now)
        if heals >= self.settings.flap_guard.max_heals:
            await self._escalate(incident, target, spec, facts, history,
                                 f"flap guard: healed {heals} times in {self.settings.flap_guard.window:g} s; "
                                 "the setting keeps reverting")
            return
        mode = self.settings.mode
        if mode == "off":
            await self._escalate(incident, target, spec, facts, history, "healing is off for this site")
            return

        # L1: the first matching rule.
        rule = self.rules.match(spec.id, target.role, facts["facts"])
        if rule is not None:
            runbook = self.registry.runbooks[rule.model.action.runbook].spec
            rule_mode = effective_mode(mode, rule.model.mode)
            if not allows(rule_mode, runbook.risk.value):
                history.append({"tier": "L1", "rule": rule.id, "runbook": runbook.id, "ok": False,
                                "detail": f"{runbook.risk.value}-risk runbook not allowed in {rule_mode} mode"})
            else:
                params = rule.model.action.params_for(spec.params)
                if rule_mode == "dry-run":
                    await self._dry_run(incident, target, runbook, params, "L1", rule.id)
                    return
                if await self._attempt(incident, target, spec, runbook, params, "L1", rule.id, history):
                    await self._resolve(incident, "healed", "L1", f"rule {rule.id}: runbook {runbook.id} verified")
                    return

        # L2: ask the planners to choose among allowed installed runbooks;
        # a matching rule's mode cap holds for its check at L2 too.
        l2_mode = effective_mode(mode, rule.model.mode) if rule is not None else mode
        candidates = self._candidates(spec, target, l2_mode)
        if candidates:
            proposal = await self._plan(incident, target, spec, facts, history, candidates)
            if proposal is not None:
                runbook = candidates[proposal.runbook]
                if l2_mode == "dry-run":
                    await self._dry_run(incident, target, runbook, dict(proposal.params), "L2", None)
                    return
                if await self._attempt(incident, target, spec, runbook, dict(proposal.params), "L2", None, history):
                    await self._resolve(incident, "healed", "L2", f"planner chose {runbook.id}; verified")
                    return

        # L3: tell a human.
        await self._escalate(incident, target, spec, facts, history, "no rule or plan healed the drift")

    def _recent_heals(self, incident: Incident, now: datetime) -> int:
        since = now - timedelta(seconds=self.settings.flap_guard.window)
        return self.store.count_heals(incident.target, incident.check_id, since)

    def _candidates(self, spec: CheckSpec, target: Target, mode: str) -> dict[str, RunbookSpec]:
        out = {}
        for rid, c in sorted(self.registry.runbooks.items()):
            rb: RunbookSpec = c.spec
            if spec.id in rb.fixes and rb.target_kind == target.kind and allows(mode, rb.risk.value):
                out[rid] = rb
        return out

    def incident_view(self, incident: Incident, target: Target, spec: CheckSpec, facts: Mapping[str, Any],
                      history: list[dict[str, Any]], candidates: Mapping[str, RunbookSpec]) -> dict[str, Any]:
        """What planners and escalation channels are told about an incident:
        scrubbed, since both may send it outside the practice."""
        return self.scrub({
            "id": incident.id,
            "site": self.ctx.site.id,
            "target": incident.target,
            "role": target.role,
            "check_id": spec.id,
            "check_title": spec.title,
            "severity": spec.severity.value,
            "hipaa": list(spec.hipaa),
            "reason": facts["reason"],
            "facts": facts["facts"],
            "opened_at": incident.opened_at,
            "tier_history": list(history),
            "candidates": [
                {"id": rb.id, "title": rb.title, "risk": rb.risk.value, "params_schema": dict(rb.params_schema)}
                for rb in candidates.values()
            ],
        })

    async def _plan(self, incident, target, spec, facts, history, candidates) -> PlanProposal | None:
        view = self.incident_view(incident, target, spec, facts, history, candidates)
        # osiris_plan is firstresult; planners may be async, so the ladder
        # calls them itself in pluggy's call order and awaits each answer.
        timeout = self.settings.planner_timeout
        for impl in self.pm.impls("osiris_plan"):
            args = {"incident": view, "ctx": self.ctx}
            try:
                answer = impl.function(**{a: args[a] for a in impl.argnames})
                if inspect.isawaitable(answer):
                    answer = await asyncio.wait_for(answer, timeout=timeout)
            except asyncio.TimeoutError:
                history.append({"tier": "L2", "planner": impl.plugin_name, "ok": False,
                                "detail": f"planner gave no answer within {timeout:g} s"})
                continue
            except Exception as exc:  # noqa: BLE001
                history.append({"tier": "L2", "planner": impl.plugin_name, "ok": False,
                                "detail": f"planner failed: {type(exc).__name__}: {exc}"})
                continue
            if answer is None:
                continue
            problem = None
            if not isinstance(answer, PlanProposal):
                problem = f"returned {type(answer).__name__}, expected PlanProposal"
            elif answer.runbook not in candidates:
                problem = f"proposed {answer.runbook!r}, not an allowed installed runbook for this check"
            else:
                errors = validate_params(candidates[answer.runbook].params_schema, answer.params)
                if errors:
                    problem = f"parameters rejected: {'; '.join(errors)}"
            if problem:
                history.append({"tier": "L2", "planner": impl.plugin_name, "ok": False, "detail": problem})
                log.warning("incident %d: planner %s %s", incident.id, impl.plugin_name, problem)
                continue
            return answer
        return None

    def _lock(self, host: str) -> asyncio.Lock:
        return self._host_locks.setdefault(host, asyncio.Lock())

    def _begin_attempt(self, incident: Incident, tier: str, rule_id: str | None, runbook: RunbookSpec,
                       params: Mapping[str, Any], dry_run: bool) -> int:
        """Record the attempt before anything is sent to the host, so a stop
        or a crash mid-runbook still leaves a trace of what was dispatched."""
        return self.store.begin_attempt(incident.id, tier, rule_id, runbook.id, dict(params), dry_run)

    def _finish_attempt(self, attempt_id: int, incident: Incident, tier: str, runbook: RunbookSpec,
                        params: Mapping[str, Any], ok: bool | None, detail: str, role: str | None) -> None:
        """Close the attempt and, for a real one, count it in the pattern
        statistics, in one transaction."""
        sample = None
        if ok is not None:
            opened = datetime.fromisoformat(incident.opened_at)
            sample = PatternSample(incident.check_id, role or "", runbook.id, tier, ok,
                                   (utcnow() - opened).total_seconds(), dict(params))
        self.store.finish_attempt(attempt_id, ok, detail, sample)

    async def _evidence(self, kind: str, payload: dict[str, Any], host: str | None = None) -> bool:
        """Every attempt, escalation and resolution is evidence. Returns
        whether it was recorded (or there is no evidence log)."""
        if self.evidence is None:
            return True
        try:
            await self.evidence.record(kind, payload, host=host)
            return True
        except Exception:  # the evidence log reports its own failures
            log.exception("could not record %s evidence", kind)
            return False

    async def _dry_run(self, incident, target, runbook, params, tier, rule_id) -> None:
        detail = f"dry-run: would run {runbook.id} ({runbook.risk.value} risk) with {json.dumps(params, sort_keys=True)}"
        aid = self._begin_attempt(incident, tier, rule_id, runbook, params, dry_run=True)
        await self._evidence("healing_attempt", {"attempt": aid, "incident": incident.id, "target": target.name,
                                                 "tier": tier, "rule": rule_id, "runbook": runbook.id,
                                                 "params": params, "dry_run": True, "ok": None, "detail": detail},
                             target.name)
        self._finish_attempt(aid, incident, tier, runbook, params, None, detail, target.role)
        await self._resolve(incident, "dry-run", tier, detail)

    async def _attempt(self, incident, target, spec, runbook, params, tier, rule_id, history) -> bool:
        executor = self.registry.executor(target.kind)
        ok, detail, verification = False, "", None
        async with self._lock(target.name):
            aid = self._begin_attempt(incident, tier, rule_id, runbook, params, dry_run=False)
            # Intent before action: the attempt is signed evidence before
            # anything reaches the host, so a kill mid-heal still leaves a
            # signed record of what was sent (closed as interrupted at start).
            intent = await self._evidence("healing_intent", {
                "attempt": aid, "incident": incident.id, "target": target.name, "check": spec.id, "tier": tier,
                "rule": rule_id, "runbook": runbook.id, "risk": runbook.risk.value, "params": dict(params)},
                target.name)
            deadline = budget.for_runbook(runbook.timeout)
            allowed = budget.remaining(deadline)
            try:
                if not intent:
                    raise RuntimeError("not dispatched: its intent could not be recorded as evidence")
                result = await budget.within(deadline, executor.run_runbook(target, runbook, params, deadline=deadline))
            except asyncio.TimeoutError:
                result, detail = None, f"runbook gave no answer within {allowed:.0f} s (its {runbook.timeout:g} s and transport)"
            except Exception as exc:  # noqa: BLE001 - a failed attempt moves up the ladder
                result, detail = None, f"runbook raised {type(exc).__name__}: {exc}"
            if result is not None and not result.ok:
                detail = f"runbook failed: {result.detail}"
            elif result is not None:
                try:
                    verification = await self._verify(target, spec, runbook)
                    ok = verification.status is Status.PASS
                    detail = f"verified: {verification.reason}" if ok else f"verification failed: {verification.reason}"
                except Exception as exc:  # noqa: BLE001
                    detail = f"runbook ran; verification raised {type(exc).__name__}: {exc}"
        # Evidence first, then the store: a kill in between leaves the
        # attempt unfinished, and the next start closes it as interrupted
        # (with a bundle); the other order could leave a finished attempt
        # that never gets its bundle.
        await self._evidence("healing_attempt", {
            "attempt": aid, "incident": incident.id, "target": target.name, "check": spec.id, "tier": tier,
            "rule": rule_id,
            "runbook": runbook.id, "params": dict(params), "dry_run": False, "ok": ok, "detail": detail,
            "verification": None if verification is None else {
                "status": verification.status.value, "reason": verification.reason, "facts": dict(verification.facts)},
        }, target.name)
        self._finish_attempt(aid, incident, tier, runbook, params, ok, detail, target.role)
        self.learning.refresh(spec.id, target.role, runbook.id, tier)
        history.append({"tier": tier, "rule": rule_id, "runbook": runbook.id, "ok": ok, "detail": detail})
        return ok

    async def _verify(self, target: Target, spec: CheckSpec, runbook: RunbookSpec):
        """Re-run the checks the runbook fixes (that apply to this host);
        the incident's own check decides."""
        checks = [c for c in self.registry.checks_for(target) if c.id in runbook.fixes]
        if spec.id not in {c.id for c in checks}:
            checks.append(spec)
        observations = await self._observe(target, checks, "verify")
        return next(o for o in observations if o.check == spec.id)

    async def _observe(self, target: Target, checks: list[CheckSpec], origin: str) -> list[Observation]:
        """Observe through the target's executor within ``verify_timeout``
        and record the results: they are observations like any other (a
        check the runbook also fixed may recover, another may open an
        incident) and evidence, handed on, never back to the engine."""
        observations = await observe(self.registry, target, checks, budget.after(self.settings.verify_timeout))
        recorded = record(self.store, observations)
        for r in recorded:
            await self._decide(r)
        if self.evidence is not None:
            await self.evidence.accept(Batch(origin, target, tuple(checks), recorded))
        return observations

    async def _escalate(self, incident, target, spec, facts, history, why: str) -> None:
        view = self.incident_view(incident, target, spec, facts, history, {})
        view["escalation_reason"] = self.scrub(why)
        reached, failures, told = [], [], []
        for channel in self.channels:
            try:
                await asyncio.wait_for(channel.escalate(view), self.settings.escalation_timeout)
                reached.append(channel.name)
                told.append({"channel": channel.name, "ok": True, "detail": "delivered"})
            except asyncio.TimeoutError:
                failures.append(f"{channel.name}: no answer within {self.settings.escalation_timeout:g} s")
                told.append({"channel": channel.name, "ok": False, "detail": failures[-1]})
            except Exception as exc:  # noqa: BLE001
                failures.append(f"{channel.name}: {type(exc).__name__}: {exc}")
                told.append({"channel": channel.name, "ok": False, "detail": failures[-1]})
        await self._evidence("escalation", {
            "incident": incident.id, "target": target.name, "check": spec.id, "reason": why,
            "tier_history": list(history), "channels": told,
            "outcome": "escalated" if reached else "failed"}, target.name)
        if not self.channels:
            await self._resolve(incident, "failed", "L3", f"{why}; no escalation channel is configured")
            return
        if reached:
            extra = f" ({'; '.join(failures)})" if failures else ""
            await self._resolve(incident, "escalated", "L3", f"{why}; told {', '.join(reached)}{extra}")
        else:
            await self._resolve(incident, "failed", "L3", f"{why}; every channel failed: {'; '.join(failures)}")

    async def resolve(self, incident_id: int, outcome: str, tier: str = "none", detail: str = "",
                      by: str = "agent", extra: Mapping[str, Any] | None = None) -> Incident:
        """End an incident with its outcome (the only place incidents end in
        the agent; ``osiris incidents resolve`` ends them by hand), and
        record that as evidence."""
        self._held.discard(incident_id)
        incident = self.store.resolve_incident(incident_id, outcome, tier, detail)
        self.resolved[outcome] = self.resolved.get(outcome, 0) + 1
        log.info("incident %d resolved: %s (%s) %s", incident.id, outcome, tier, detail)
        await self._evidence("incident_resolved", resolution(incident, by, extra), incident.target)
        return incident

    async def _resolve(self, incident: Incident, outcome: str, tier: str, detail: str,
                       extra: Mapping[str, Any] | None = None) -> None:
        self._ended.add(incident.id)
        try:
            await self.resolve(incident.id, outcome, tier, detail, extra=extra)
        except StoreError as exc:  # resolved meanwhile by hand (CLI) or by recovery
            log.info("incident %d: %s", incident.id, exc)


def resolution(incident: Incident, by: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An ``incident_resolved`` bundle's payload (the agent's, the CLI's and
    the status page's); ``extra``: e.g. the exception that covered it, or
    why a person resolved it."""
    return {"incident": incident.id, "target": incident.target, "check": incident.check_id,
            "outcome": incident.outcome, "tier": incident.tier, "detail": incident.detail, "by": by,
            "opened_at": incident.opened_at, "resolved_at": incident.resolved_at,
            "occurrences": incident.occurrences, **dict(extra or {})}
