"""The healing ladder on the appliance's own (local) executor: L1, L2, L3,
safety rails, rule reloading and promotion. Chaos tests against the lab
live in tests/ (cross-package)."""

import asyncio
import importlib
import textwrap
from datetime import datetime, timezone

import pytest

from osiris.app import load
from osiris.engine import Engine
from osiris.healing.ladder import Ladder
from osiris.store import Store

PLUGIN = '''
from osiris import CheckSpec, Risk, RunbookSpec, Status, Verdict, hookimpl
from osiris.records import PlanProposal

STATE = {"setting": "bad", "fix_works": True, "plan": None, "escalations": [],
         "channel_fails": False, "raise": False, "runs": []}

def probe(params):
    return {"setting": STATE["setting"], "nested": {"level": 3}}

def evaluate(facts, params):
    return Verdict(Status.PASS if facts["setting"] == "good" else Status.FAIL, f"setting={facts['setting']}")

def fix(params):
    STATE["runs"].append(("test.fix", dict(params)))
    if STATE["raise"]:
        raise RuntimeError("access denied")
    if STATE["fix_works"]:
        STATE["setting"] = "good"
    return {}

def fix_param(params):
    STATE["runs"].append(("test.fix_param", dict(params)))
    STATE["setting"] = params["value"]
    return {}

class Channel:
    name = "test-channel"
    async def escalate(self, incident):
        if STATE["channel_fails"]:
            raise ConnectionError("channel down")
        STATE["escalations"].append(incident)

@hookimpl
def osiris_checks(ctx):
    return CheckSpec(id="test.setting", title="setting is good", target_kind="local",
                     hipaa=("164.312(b)",), probe=probe, evaluate=evaluate, interval=3600)

@hookimpl
def osiris_runbooks(ctx):
    return [
        RunbookSpec(id="test.fix", title="fix", target_kind="local", fixes=("test.setting",),
                    risk=Risk.LOW, action=fix, timeout=5),
        RunbookSpec(id="test.fix_risky", title="fix risky", target_kind="local", fixes=("test.setting",),
                    risk=Risk.HIGH, action=fix, timeout=5),
        RunbookSpec(id="test.fix_param", title="fix with a value", target_kind="local", fixes=("test.setting",),
                    risk=Risk.LOW, action=fix_param, timeout=5,
                    params_schema={"type": "object", "properties": {"value": {"enum": ["good", "bad"]}},
                                   "required": ["value"], "additionalProperties": False}),
    ]

@hookimpl
def osiris_plan(incident, ctx):
    plan = STATE["plan"]
    return plan(incident) if callable(plan) else plan

@hookimpl
def osiris_escalation_channels(ctx):
    return Channel()
'''

RULE = """
rules:
  - id: fix-setting
    match:
      check: test.setting
      facts:
        nested.level: {{gt: 2}}
    action:
      runbook: {runbook}
      params: {params}
"""


class Harness:
    def __init__(self, plugin, loaded, now=None):
        self.mod = plugin
        self.loaded = loaded
        self.store = Store(loaded.ctx.state_dir)
        self.now = now
        clock = (lambda: self.now) if now else None
        kwargs = {"clock": clock} if clock else {}
        self.ladder = Ladder(loaded.ctx, loaded.pm, loaded.registry, self.store, loaded.config.healing,
                             loaded.targets, [], **kwargs)
        self.engine = Engine(loaded.registry, self.store, loaded.targets, downstream=self.ladder)
        self.ladder.channels = [c for _p, c in loaded.pm.contributions("osiris_escalation_channels", ctx=loaded.ctx)]
        self.rules_dir = loaded.ctx.state_dir / "rules"

    def rule(self, runbook="test.fix", params="{}", name="site.yaml"):
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        (self.rules_dir / name).write_text(RULE.format(runbook=runbook, params=params))
        self.ladder.reload(force=True)

    async def sweep(self):
        await self.engine.sweep(force=True)
        await self.ladder.drain()

    def incidents(self, state=None):
        return self.store.incidents(state)

    def assert_none_open(self):
        assert self.store.incidents("open") == [], "an incident stayed open after its path ended"


@pytest.fixture
def make(plugin_module, write_config):
    created = []

    def make(healing=None, now=None):
        name = f"ladder_plugin_{len(created)}"
        plugin_module(name, PLUGIN)
        mod = importlib.import_module(name)
        cfg = write_config({"plugin_modules": [name], "healing": healing or {"mode": "full"}}, name=f"{name}.json")
        h = Harness(mod, load(cfg, environ={"OSIRIS_PLUGINS": "none"}), now)
        created.append(h)
        return h

    yield make
    for h in created:
        h.loaded.ctx.close()


async def test_l1_rule_heals_and_verifies(make):
    h = make()
    h.rule()
    h.ladder.start()
    await h.sweep()
    [inc] = h.incidents()
    assert (inc.outcome, inc.tier) == ("healed", "L1") and "verified" in inc.detail
    assert h.mod.STATE["setting"] == "good"
    attempt = dict(h.store.db.execute("SELECT * FROM heal_attempts").fetchone())
    assert attempt["ok"] == 1 and attempt["tier"] == "L1" and attempt["rule_id"] == "fix-setting"
    # verification was recorded as an observation
    assert h.store.latest()[0]["status"] == "pass"


async def test_l1_failure_goes_to_l2_then_l3_and_escalates_once(make):
    h = make()
    h.rule()
    h.ladder.start()
    h.mod.STATE["fix_works"] = False
    h.mod.STATE["plan"] = __import__("osiris.records", fromlist=["PlanProposal"]).PlanProposal(
        "test.fix_param", {"value": "bad"}, "try setting it explicitly")
    await h.sweep()
    [inc] = h.incidents()
    assert (inc.outcome, inc.tier) == ("escalated", "L3")
    [esc] = h.mod.STATE["escalations"]
    tiers = [(a["tier"], a["runbook"], a["ok"]) for a in esc["tier_history"]]
    assert tiers == [("L1", "test.fix", False), ("L2", "test.fix_param", False)]
    assert esc["check_id"] == "test.setting" and esc["target"] == "appliance"
    # The drift persists: no new incident, no second escalation, no heal.
    runs = len(h.mod.STATE["runs"])
    await h.sweep()
    await h.sweep()
    assert len(h.incidents()) == 1 and len(h.mod.STATE["escalations"]) == 1
    assert len(h.mod.STATE["runs"]) == runs
    # Once it passes, a new drift is a new incident.
    h.mod.STATE["setting"] = "good"
    await h.sweep()
    h.mod.STATE["setting"] = "bad"
    h.mod.STATE["fix_works"] = True
    await h.sweep()
    assert [i.outcome for i in h.incidents()] == ["healed", "escalated"]
    h.assert_none_open()


async def test_l2_plan_heals_when_no_rule_matches(make):
    from osiris.records import PlanProposal

    h = make()
    h.ladder.start()
    h.mod.STATE["plan"] = PlanProposal("test.fix_param", {"value": "good"})
    await h.sweep()
    [inc] = h.incidents()
    assert (inc.outcome, inc.tier) == ("healed", "L2")


@pytest.mark.parametrize("proposal,problem", [
    (("test.nonexistent", {}), "not an allowed installed runbook"),
    (("test.fix_param", {"value": "rm -rf /"}), "parameters rejected"),
    (("test.fix_param", {"value": "good", "script": "Invoke-Evil"}), "parameters rejected"),
])
async def test_planner_answers_outside_installed_runbooks_are_refused(make, proposal, problem):
    from osiris.records import PlanProposal

    h = make()
    h.ladder.start()
    h.mod.STATE["plan"] = PlanProposal(*proposal)
    await h.sweep()
    [inc] = h.incidents()
    assert (inc.outcome, inc.tier) == ("escalated", "L3")
    assert h.mod.STATE["runs"] == []
    [esc] = h.mod.STATE["escalations"]
    assert problem in esc["tier_history"][0]["detail"]


async def test_flap_guard_trips_escalates_once_and_stops_healing(make):
    h = make({"mode": "full", "flap_guard": {"max_heals": 2, "window": 3600}})
    h.rule()
    h.ladder.start()
    for _ in range(5):
        await h.sweep()
        h.mod.STATE["setting"] = "bad"  # reverts after every heal
    outcomes = [(i.outcome, i.tier) for i in reversed(h.incidents())]
    assert outcomes == [("healed", "L1"), ("healed", "L1"), ("escalated", "L3")]
    assert len(h.mod.STATE["escalations"]) == 1
    assert "flap guard" in h.mod.STATE["escalations"][0]["escalation_reason"]
    assert len(h.mod.STATE["runs"]) == 2
    h.assert_none_open()


async def test_dry_run_changes_nothing_and_records_the_would_be_action(make):
    h = make({"mode": "dry-run"})
    h.rule()
    h.ladder.start()
    await h.sweep()
    [inc] = h.incidents()
    assert (inc.outcome, inc.tier) == ("dry-run", "L1")
    assert "would run test.fix" in inc.detail
    assert h.mod.STATE["setting"] == "bad" and h.mod.STATE["runs"] == []
    attempt = dict(h.store.db.execute("SELECT * FROM heal_attempts").fetchone())
    assert attempt["dry_run"] == 1 and attempt["ok"] is None


async def test_standard_mode_refuses_high_risk_runbooks(make):
    h = make({"mode": "standard"})
    h.rule(runbook="test.fix_risky")
    h.ladder.start()
    offered = []
    h.mod.STATE["plan"] = lambda incident: offered.append(incident["candidates"])
    await h.sweep()
    [inc] = h.incidents()
    assert inc.tier == "L3" and h.mod.STATE["runs"] == []
    [esc] = h.mod.STATE["escalations"]
    assert "high-risk runbook not allowed in standard mode" in esc["tier_history"][0]["detail"]
    # L2 candidates offered to planners exclude it too.
    [candidates] = offered
    assert {c["id"] for c in candidates} == {"test.fix", "test.fix_param"}
    assert all(c["risk"] == "low" and "params_schema" in c for c in candidates)


async def test_mode_off_escalates_without_healing(make):
    h = make({"mode": "off"})
    h.rule()
    h.ladder.start()
    await h.sweep()
    [inc] = h.incidents()
    assert inc.outcome == "escalated" and "healing is off" in inc.detail and h.mod.STATE["runs"] == []


async def test_maintenance_window_holds_healing_until_it_closes(make):
    sunday_late = datetime(2026, 11, 29, 23, 30, tzinfo=timezone.utc)  # a Sunday
    h = make({"mode": "full", "maintenance_windows": [{"days": ["sun"], "start": "22:00", "end": "02:00"}]},
             now=sunday_late)
    h.rule()
    h.ladder.start()
    await h.sweep()
    [inc] = h.incidents()
    assert inc.state == "open" and h.mod.STATE["runs"] == []
    h.now = datetime(2026, 11, 30, 1, 59, tzinfo=timezone.utc)  # Monday, still in Sunday's window
    h.ladder.tick()
    await h.ladder.drain()
    assert h.store.incident(inc.id).state == "open"
    h.now = datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc)
    h.ladder.tick()
    await h.ladder.drain()
    assert (h.store.incident(inc.id).outcome, h.store.incident(inc.id).tier) == ("healed", "L1")


async def test_held_incident_that_recovers_is_resolved_recovered(make):
    h = make({"mode": "full", "maintenance_windows": [{"start": "00:00", "end": "23:59"}]},
             now=datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc))
    h.rule()
    h.ladder.start()
    await h.sweep()
    h.mod.STATE["setting"] = "good"
    await h.sweep()
    [inc] = h.incidents()
    assert inc.outcome == "recovered"
    h.assert_none_open()


async def test_runbook_exception_and_dead_channels_still_end_in_resolve(make):
    h = make()
    h.rule()
    h.ladder.start()
    h.mod.STATE["raise"] = True
    h.mod.STATE["channel_fails"] = True
    await h.sweep()
    [inc] = h.incidents()
    assert (inc.outcome, inc.tier) == ("failed", "L3")
    assert "channel down" in inc.detail
    attempt = dict(h.store.db.execute("SELECT * FROM heal_attempts").fetchone())
    assert "access denied" in attempt["detail"] and attempt["ok"] == 0


async def test_bad_rule_file_is_reported_with_line_and_last_good_set_kept(make):
    h = make()
    h.rule()
    assert [r.id for r in h.ladder.rules.rules] == ["fix-setting"]
    (h.rules_dir / "broken.yaml").write_text(textwrap.dedent("""
        rules:
          - id: good-one
            match: {check: test.setting}
            action: {runbook: test.fix}
          - id: typo
            match: {check: test.setting}
            action: {runbook: test.fix_typo}
    """))
    assert h.ladder.reload() is False
    [err] = h.ladder.rule_errors
    assert "broken.yaml:6: rule 'typo'" in err and "test.fix_typo" in err and "not provided" in err
    assert [r.id for r in h.ladder.rules.rules] == ["fix-setting"], "last good set stays in force"
    (h.rules_dir / "broken.yaml").write_text("rules:\n  - id: x\n    match: {check: test.setting\n")
    h.ladder.reload()
    assert "broken.yaml:" in h.ladder.rule_errors[0] and "not valid YAML" in h.ladder.rule_errors[0]
    (h.rules_dir / "broken.yaml").write_text("rules:\n  - id: x\n    match: {check: test.setting}\n    action: {runbook: test.fix, parms: {}}\n")
    h.ladder.reload()
    assert h.ladder.rule_errors == ["%s:4: rules.0.action.parms: unknown key" % (h.rules_dir / "broken.yaml")]
    (h.rules_dir / "broken.yaml").unlink()
    assert h.ladder.reload() is True and h.ladder.rule_errors == []


async def test_a_rule_file_edit_is_loaded_even_with_the_same_mtime_and_size(make):
    """Two edits within one tick of the file system's clock leave the same
    mtime (and here the same size): the content decides, not the stat."""
    import os

    h = make()
    h.rule(name="site.yaml")
    path = h.rules_dir / "site.yaml"
    assert [r.id for r in h.ladder.rules.rules] == ["fix-setting"]
    before = path.stat()
    path.write_text(path.read_text().replace("id: fix-setting", "id: fix-settinG"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_mtime_ns, path.stat().st_size) == (before.st_mtime_ns, before.st_size)
    assert h.ladder.reload() is True
    assert [r.id for r in h.ladder.rules.rules] == ["fix-settinG"]
    assert h.ladder.reload() is False  # unchanged since: not loaded again


async def test_promotion_after_five_l2_successes_then_l1(make, tmp_path):
    from click.testing import CliRunner

    from osiris.cli import cli
    from osiris.records import PlanProposal

    h = make({"mode": "full", "flap_guard": {"max_heals": 50}})
    h.ladder.start()
    h.mod.STATE["plan"] = PlanProposal("test.fix_param", {"value": "good"})
    for i in range(5):
        h.mod.STATE["setting"] = "bad"
        await h.sweep()
        assert h.ladder.learning.candidates() == [] or i == 4
    assert [(i.outcome, i.tier) for i in h.incidents()] == [("healed", "L2")] * 5
    [cand] = h.ladder.learning.candidates()
    assert (cand.check_id, cand.runbook, cand.successes, cand.attempts) == ("test.setting", "test.fix_param", 5, 5)
    assert cand.params == {"value": "good"}
    [pattern] = h.ladder.learning.patterns()
    assert pattern["tier"] == "L2" and pattern["successes"] == 5 and pattern["mean_time_to_heal_s"] >= 0
    # Approve through the CLI (another process's view of the same state).
    res = CliRunner().invoke(cli, ["--config", h.loaded.source, "rules", "approve", str(cand.id), "--by", "Dr. Alvarez"],
                             env={"OSIRIS_PLUGINS": "none"})
    assert res.exit_code == 0, res.output
    assert "approved by Dr. Alvarez" in res.output
    approved = h.ladder.learning.candidate(cand.id)
    assert approved.state == "approved" and approved.decided_by == "Dr. Alvarez" and approved.decided_at
    # The running ladder picks the rule file up without a restart.
    h.ladder.tick()
    assert [r.id for r in h.ladder.rules.rules] == [f"promoted-{cand.id}-test.setting"]
    h.mod.STATE["plan"] = None
    h.mod.STATE["setting"] = "bad"
    await h.sweep()
    latest = h.incidents()[0]
    assert (latest.outcome, latest.tier) == ("healed", "L1")
    # A decided candidate cannot be decided again.
    res = CliRunner().invoke(cli, ["--config", h.loaded.source, "rules", "reject", str(cand.id), "--by", "x"],
                             env={"OSIRIS_PLUGINS": "none"})
    assert res.exit_code == 1 and "already approved" in res.output


async def test_open_incidents_from_a_previous_run_are_adopted(make):
    h = make()
    h.rule()
    await h.engine.sweep(force=True)  # no ladder started yet: incident opened, nobody healing
    [inc] = h.store.incidents("open")
    h.ladder.start()
    await h.ladder.drain()
    assert h.store.incident(inc.id).outcome == "healed"


async def test_http_api_approves_and_rejects_candidates(plugin_module, write_config):
    from aiohttp.test_utils import TestClient, TestServer

    from osiris.api import make_app
    from osiris.runtime import Agent

    plugin_module("ladder_api_plugin", PLUGIN)
    agent = Agent(load(write_config({"plugin_modules": ["ladder_api_plugin"]}), environ={"OSIRIS_PLUGINS": "none"}))
    learning = agent.ladder.learning
    for role in ("appliance", "dc"):
        for _ in range(5):
            learning.record("test.setting", role, "test.fix_param", "L2", True, 1.5, {"value": "good"})
    learning.record("test.setting", "dc", "test.fix_param", "L2", False, 0, {"value": "good"})  # 5/6 < 90%
    client = TestClient(TestServer(make_app(agent)))
    await client.start_server()
    try:
        cands = await (await client.get("/rules/candidates")).json()
        # the dc pattern fell below 90% after its failure and was withdrawn
        assert [(c["role"], c["state"], c["successes"]) for c in cands] == [("appliance", "candidate", 5)]
        learning.record("test.setting", "dc", "test.fix_param", "L2", True, 1.0, {"value": "good"})
        learning.record("test.setting", "dc", "test.fix_param", "L2", True, 1.0, {"value": "good"})
        assert [c.role for c in learning.candidates()] == ["appliance"], "6/8 is still below 90%"
        for _ in range(12):
            learning.record("test.setting", "dc", "test.fix_param", "L2", True, 1.0, {"value": "good"})
        cands = await (await client.get("/rules/candidates")).json()
        assert [(c["role"], c["successes"], c["attempts"]) for c in cands] == [("appliance", 5, 5), ("dc", 19, 20)]
        r = await client.post(f"/rules/candidates/{cands[0]['id']}/approve", json={})
        assert r.status == 400 and "by" in (await r.json())["error"]
        r = await client.post(f"/rules/candidates/{cands[0]['id']}/approve", json={"by": "msp-oncall"})
        body = await r.json()
        assert r.status == 200 and body["state"] == "approved" and body["decided_by"] == "msp-oncall"
        assert [r.id for r in agent.ladder.rules.rules] == [f"promoted-{cands[0]['id']}-test.setting"]
        r = await client.post(f"/rules/candidates/{cands[0]['id']}/reject", json={"by": "x"})
        assert r.status == 409
        r = await client.post(f"/rules/candidates/{cands[1]['id']}/reject", json={"by": "msp-oncall"})
        assert (await r.json())["state"] == "rejected"
    finally:
        await client.close()
        agent.ctx.close()
        agent.store.close()


# -- from the second read of the ladder ---------------------------------------------


def _fresh_ladder(h):
    """A second ladder over the same store, like an agent started later."""
    ladder = Ladder(h.loaded.ctx, h.loaded.pm, h.loaded.registry, h.store, h.loaded.config.healing,
                    h.loaded.targets, h.ladder.channels)
    h.engine.downstream = ladder
    return ladder


async def test_incident_opened_without_a_ladder_is_adopted_at_start_after_a_fresh_look(make):
    h = make()
    h.rule()
    h.engine.downstream = None  # as `osiris check` does: no ladder downstream
    await h.engine.sweep(force=True)
    [inc] = h.store.incidents("open")
    ladder = _fresh_ladder(h)
    ladder.start()
    await ladder.drain()
    done = h.store.incident(inc.id)
    assert (done.outcome, done.tier) == ("healed", "L1")


async def test_adopted_incident_that_passes_on_a_fresh_look_is_recovered_without_healing(make):
    h = make()
    h.rule()
    h.engine.downstream = None
    await h.engine.sweep(force=True)
    [inc] = h.store.incidents("open")
    h.mod.STATE["setting"] = "good"  # fixed while the agent was down
    ladder = _fresh_ladder(h)
    ladder.start()
    await ladder.drain()
    assert h.store.incident(inc.id).outcome == "recovered" and h.mod.STATE["runs"] == []


async def test_recurring_incident_nobody_owns_is_taken_by_the_running_ladder(make):
    h = make()
    h.rule()
    h.engine.downstream = None
    await h.engine.sweep(force=True)  # opened by `osiris check`, say
    ladder = _fresh_ladder(h)
    ladder.reload(force=True)  # running, but started before that incident existed
    await h.engine.sweep(force=True)
    await ladder.drain()
    [inc] = h.store.incidents(None)
    assert (inc.outcome, inc.tier) == ("healed", "L1")


async def test_ladder_bug_escalates_and_an_error_outcome_does_not_silence_the_drift(make, monkeypatch):
    h = make()
    h.ladder.start()

    async def broken(*_a, **_k):
        raise RuntimeError("boom")

    monkeypatch.setattr(h.ladder, "_walk", broken)
    await h.sweep()
    [inc] = h.incidents()
    assert (inc.outcome, inc.tier) == ("escalated", "L3") and "ladder error: RuntimeError: boom" in inc.detail
    h.ladder.channels = []  # now nobody can be told either

    async def silent(*_a, **_k):
        return None  # a path that forgets to resolve

    monkeypatch.setattr(h.ladder, "_walk", silent)
    h.mod.STATE["setting"] = "good"
    await h.sweep()
    h.mod.STATE["setting"] = "bad"
    await h.sweep()
    latest = h.incidents()[0]
    assert (latest.outcome, latest.detail) == ("error", "healing path ended without an outcome")
    await h.sweep()  # an error is not a decision: the same drift is tried again
    assert len([i for i in h.incidents() if i.outcome == "error"]) == 2
    h.assert_none_open()


async def test_unreadable_rule_file_is_reported_and_the_loop_goes_on(make):
    h = make()
    h.rule()
    (h.rules_dir / "notes.yaml").write_bytes("# caf\xe9\nrules: []\n".encode("latin-1"))
    h.ladder.tick()  # must not raise
    assert "notes.yaml: not UTF-8 text" in h.ladder.rule_errors[0]
    assert [r.id for r in h.ladder.rules.rules] == ["fix-setting"]


async def test_hung_escalation_channel_is_bounded(make):
    import asyncio

    h = make({"mode": "off", "escalation_timeout": 0.2})

    class Hung:
        name = "hung"

        async def escalate(self, incident):
            await asyncio.sleep(3600)

    h.ladder.channels = [Hung()]
    h.ladder.start()
    await asyncio.wait_for(h.sweep(), 120)  # unbounded, the channel would hold it for an hour
    [inc] = h.incidents()
    assert (inc.outcome, inc.tier) == ("failed", "L3") and "hung: no answer within 0.2 s" in inc.detail


async def test_rule_mode_cap_holds_at_l2_too(make):
    from osiris.records import PlanProposal

    h = make({"mode": "full"})
    h.rules_dir.mkdir(parents=True, exist_ok=True)
    (h.rules_dir / "off.yaml").write_text(
        "rules:\n  - id: hands-off\n    match: {check: test.setting}\n    action: {runbook: test.fix}\n    mode: 'off'\n")
    h.ladder.reload(force=True)
    h.ladder.start()
    asked = []
    h.mod.STATE["plan"] = lambda incident: asked.append(incident) or PlanProposal("test.fix", {})
    await h.sweep()
    [inc] = h.incidents()
    assert inc.tier == "L3" and h.mod.STATE["runs"] == [] and asked == []


async def test_promotion_needs_one_set_of_params_and_keeps_the_role(make):
    h = make()
    learning = h.ladder.learning
    for value in ("good", "good", "bad", "good", "good", "good"):
        learning.record("test.setting", "", "test.fix_param", "L2", True, 1.0, {"value": value})
    assert learning.candidates() == [], "successes with different parameters prove nothing about one rule"
    for _ in range(5):
        learning.record("test.setting", "kiosk", "test.fix_param", "L2", True, 1.0, {"value": "good"})
    for _ in range(5):
        learning.record("test.setting", "", "test.fix", "L2", True, 1.0, {})
    by_role = {c.role: c for c in learning.candidates()}
    assert set(by_role) == {"kiosk", ""}
    approved = learning.approve(by_role[""].id, "msp-oncall")
    import yaml

    rule = yaml.safe_load(open(approved.rule_file))["rules"][0]
    assert rule["match"]["roles"] == [""], "a fix proven on role-less hosts must not match every role"


# -- the one-way flow ---------------------------------------------------------------


class EvidenceStage:
    """The stage after the ladder, as the ladder sees it."""

    def __init__(self):
        self.batches, self.bundles = [], []

    async def accept(self, batch):
        self.batches.append(batch)

    async def record(self, kind, payload, host=None):
        self.bundles.append((kind, payload))


class CountingEngineDownstream:
    def __init__(self, ladder):
        self.ladder, self.batches = ladder, 0

    async def accept(self, batch):
        self.batches += 1
        await self.ladder.accept(batch)


async def test_verification_goes_on_to_evidence_and_never_back_through_the_engine(make):
    h = make()
    h.rule()
    h.ladder.evidence = ev = EvidenceStage()
    h.engine.downstream = counted = CountingEngineDownstream(h.ladder)
    h.ladder.start()
    await h.sweep()
    [inc] = h.incidents()
    assert (inc.outcome, inc.tier) == ("healed", "L1")
    assert counted.batches == 1, "the ladder's own look at the host re-entered the engine"
    assert [(b.origin, [o.status.value for o in b.observations]) for b in ev.batches] == \
        [("sweep", ["fail"]), ("verify", ["pass"])]
    assert [kind for kind, _ in ev.bundles] == ["healing_intent", "healing_attempt", "incident_resolved"]
    intent, attempt, resolved = (payload for _, payload in ev.bundles)
    assert intent["attempt"] == attempt["attempt"] and attempt["verification"]["status"] == "pass"
    assert (resolved["outcome"], resolved["tier"], resolved["by"]) == ("healed", "L1", "agent")


async def test_the_fresh_look_at_an_adopted_incident_is_evidence(make):
    """An incident left open by an earlier run is looked at again before
    anything is done; that look is an observation like any other."""
    h = make()
    h.rule()
    h.engine.downstream = None
    await h.sweep()
    [inc] = h.store.incidents("open")
    ladder = _fresh_ladder(h)
    ladder.evidence = ev = EvidenceStage()
    ladder.start()
    await ladder.drain()
    assert h.store.incident(inc.id).outcome == "healed"
    assert [b.origin for b in ev.batches] == ["recheck", "verify"]
    assert ev.batches[0].recorded[0].incident.id == inc.id


async def test_a_pass_ends_an_incident_nobody_is_healing_as_recovered(make):
    """Held by a maintenance window, say: the ladder, not the engine, ends it."""
    monday_noon = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    h = make(healing={"mode": "full", "maintenance_windows": [{"days": ["mon"], "start": "09:00", "end": "17:00"}]},
             now=monday_noon)
    h.rule()
    h.ladder.start()
    await h.sweep()
    [inc] = h.store.incidents("open")
    assert h.ladder.active_incidents() == []
    h.mod.STATE["setting"] = "good"
    await h.sweep()
    done = h.store.incident(inc.id)
    assert (done.outcome, done.tier) == ("recovered", "none") and h.mod.STATE["runs"] == []
    assert h.ladder.resolved == {"recovered": 1}


# -- deciding on candidates ----------------------------------------------------------


def _candidate(h):
    for _ in range(5):
        h.ladder.learning.record("test.setting", "dc", "test.fix_param", "L2", True, 1.0, {"value": "good"})
    [c] = h.ladder.learning.candidates()
    return c


async def test_approve_and_reject_at_once_exactly_one_decision_wins(make, monkeypatch):
    """A second process (the CLI beside the agent's API) rejects while the
    approval is being written: it waits for the approval's transaction and
    is refused, instead of both succeeding."""
    import threading

    from osiris.healing import learning as learning_mod
    from osiris.healing.learning import Learning
    from osiris.store import StoreError

    h = make()
    c = _candidate(h)
    other = Store(h.loaded.ctx.state_dir)
    outcome = {}

    def reject_from_elsewhere():
        try:
            Learning(other, h.rules_dir).reject(c.id, "someone-else")
            outcome["reject"] = "succeeded"
        except StoreError as exc:
            outcome["reject"] = str(exc)

    rival = threading.Thread(target=reject_from_elsewhere)
    real_dump = learning_mod.dump_rule

    def dump_while_rival_decides(rule, header):
        rival.start()
        rival.join(1.0)  # the rival gets its chance while the approval is mid-way
        return real_dump(rule, header)

    monkeypatch.setattr(learning_mod, "dump_rule", dump_while_rival_decides)
    approved = h.ladder.learning.approve(c.id, "Dr. Alvarez")
    rival.join(60)
    other.close()
    assert (approved.state, approved.decided_by) == ("approved", "Dr. Alvarez")
    assert outcome["reject"] == f"rule candidate {c.id}: already approved"
    assert h.ladder.learning.candidate(c.id).state == "approved"


@pytest.mark.parametrize("by", ["Eve\nrules: []", "Eve\x1b[2J", "x" * 201])
async def test_a_deciders_name_that_would_break_the_rule_file_is_refused_and_rules_keep_loading(make, by):
    from osiris.store import StoreError

    h = make()
    c = _candidate(h)
    with pytest.raises(StoreError, match="--by must be one line of printable text"):
        h.ladder.learning.approve(c.id, by)
    assert h.ladder.learning.candidate(c.id).state == "candidate"
    assert list(h.rules_dir.glob("promoted-*")) == []
    h.rule()  # a later rule change still loads
    assert not h.ladder.rule_errors and [r.id for r in h.ladder.rules.rules] == ["fix-setting"]
    approved = h.ladder.learning.approve(c.id, "Dr. José Álvarez")
    assert approved.decided_by == "Dr. José Álvarez" and h.ladder.reload()
    assert not h.ladder.rule_errors


# -- intent before action, and what a kill mid-heal leaves ------------------------------


async def test_a_runbook_is_not_dispatched_unless_its_intent_is_durable_evidence(make):
    h = make()
    h.rule()

    class FullDisk(EvidenceStage):
        async def record(self, kind, payload, host=None):
            if kind == "healing_intent":
                raise OSError(28, "No space left on device")
            await super().record(kind, payload, host)

    h.ladder.evidence = ev = FullDisk()
    h.ladder.start()
    await h.sweep()
    assert h.mod.STATE["runs"] == [], "a runbook reached the host with no signed record of it"
    [attempt] = [(kind, p) for kind, p in ev.bundles if kind == "healing_attempt"]
    assert attempt[1]["ok"] is False and "intent could not be recorded" in attempt[1]["detail"]


async def test_an_attempt_a_killed_agent_left_unfinished_is_closed_as_interrupted_and_counted(make):
    h = make(healing={"mode": "full", "flap_guard": {"max_heals": 1, "window": 3600}})
    h.rule()
    h.engine.downstream = None
    await h.sweep()
    [inc] = h.store.incidents("open")
    # what a SIGKILL between dispatch and result leaves: a dispatched attempt
    aid = h.store.begin_attempt(inc.id, "L1", "fix-setting", "test.fix", {}, dry_run=False)
    ladder = _fresh_ladder(h)
    ladder.evidence = ev = EvidenceStage()
    ladder.start()
    await ladder.drain()
    first = h.store.attempts()[0]
    assert (first["id"], first["ok"], first["interrupted"]) == (aid, 0, 1) and first["finished_at"]
    interrupted = [p for kind, p in ev.bundles if kind == "healing_attempt" and p.get("interrupted")]
    assert [(p["attempt"], p["runbook"], p["ok"]) for p in interrupted] == [(aid, "test.fix", False)]
    [pattern] = [p for p in h.ladder.learning.patterns() if p["runbook"] == "test.fix"]
    assert (pattern["attempts"], pattern["successes"]) == (1, 0), "the learning loop counts it as a failure"
    # the flap guard counts it as a heal: with max_heals 1 the adopted
    # incident is escalated instead of healed a second time
    done = h.store.incident(inc.id)
    assert (done.outcome, done.tier) == ("escalated", "L3") and "flap guard" in done.detail
    assert h.mod.STATE["runs"] == []


async def test_an_interrupted_attempt_is_closed_in_the_store_only_after_its_bundle_is_recorded(make):
    # A kill between the two must leave the attempt open, for the next start
    # to close and record; the other order could lose its bundle for good.
    h = make()
    h.rule()
    h.engine.downstream = None
    await h.sweep()
    [inc] = h.store.incidents("open")
    aid = h.store.begin_attempt(inc.id, "L1", "fix-setting", "test.fix", {}, dry_run=False)
    release = asyncio.Event()

    class SlowLog(EvidenceStage):
        async def record(self, kind, payload, host=None):
            if kind == "healing_attempt" and payload.get("interrupted"):
                await release.wait()
            await super().record(kind, payload, host)

    ladder = _fresh_ladder(h)
    ladder.evidence = ev = SlowLog()
    ladder.start()
    for _ in range(20):
        await asyncio.sleep(0)
    assert [a["id"] for a in h.store.unfinished_attempts()] == [aid], "closed before its bundle was recorded"
    assert h.mod.STATE["runs"] == [], "the adopted incident healed before the interrupted attempt was counted"
    release.set()
    await ladder.drain()
    assert h.store.unfinished_attempts() == []
    assert [p["attempt"] for kind, p in ev.bundles if kind == "healing_attempt" and p.get("interrupted")] == [aid]


async def test_an_escalation_is_evidence_with_each_channel_and_its_result(make):
    h = make()
    h.mod.STATE["fix_works"] = False
    h.ladder.evidence = ev = EvidenceStage()
    h.ladder.start()
    await h.sweep()
    [esc] = [p for kind, p in ev.bundles if kind == "escalation"]
    assert esc["channels"] == [{"channel": "test-channel", "ok": True, "detail": "delivered"}]
    assert esc["outcome"] == "escalated" and esc["check"] == "test.setting"
    [res] = [p for kind, p in ev.bundles if kind == "incident_resolved"]
    assert (res["outcome"], res["tier"], res["by"]) == ("escalated", "L3", "agent")
