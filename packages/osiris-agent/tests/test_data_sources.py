"""Checks and rules a plugin declares as data (e.g. a check pack) rather
than in code: ``CheckSpec.source`` names the file, ``osiris checks`` shows
it and sweep evidence records it; ``osiris_rules`` may return
``RuleSpec`` records whose errors name the file and line they came from."""

from __future__ import annotations

import importlib
import json

import pytest
from click.testing import CliRunner

from osiris.app import load
from osiris.cli import cli
from osiris.engine import Engine
from osiris.healing.ladder import Ladder
from osiris.conditions import FactCondition
from osiris.store import Store

PLUGIN = '''
from osiris import CheckSource, CheckSpec, Risk, RuleSpec, RunbookSpec, Status, Verdict, hookimpl

STATE = {"setting": "bad", "rules": []}

def probe(params):
    return {"setting": STATE["setting"]}

def evaluate(facts, params):
    return Verdict(Status.PASS if facts["setting"] == "good" else Status.FAIL, f"setting={facts['setting']}")

def fix(params):
    STATE["setting"] = "good"
    return {}

@hookimpl
def osiris_checks(ctx):
    return [CheckSpec(id="test.from_pack", title="declared in a pack", target_kind="local", hipaa=("164.312(b)",),
                      probe=probe, evaluate=evaluate, interval=3600,
                      source=CheckSource("/etc/packs/site.yaml", 7, "ab" * 32)),
            CheckSpec(id="test.from_code", title="declared in code", target_kind="local", hipaa=("164.312(b)",),
                      probe=probe, evaluate=evaluate, interval=3600)]

@hookimpl
def osiris_runbooks(ctx):
    return RunbookSpec(id="test.fix", title="fix", target_kind="local", fixes=("test.from_pack",),
                       risk=Risk.LOW, action=fix, timeout=5)

@hookimpl
def osiris_rules(ctx):
    return list(STATE["rules"])
'''


@pytest.fixture
def agent(plugin_module, write_config):
    plugin_module("data_plugin", PLUGIN)
    mod = importlib.import_module("data_plugin")
    cfg = write_config({"plugin_modules": ["data_plugin"], "healing": {"mode": "full"},
                        "agent": {"check_self": True, "http": {"port": 0}}})
    loaded = load(cfg, environ={"OSIRIS_PLUGINS": "none"})
    yield mod, loaded, cfg
    loaded.ctx.close()


def rule(runbook="test.fix", **extra):
    return {"id": "pack-fix", "match": {"check": "test.from_pack"}, "action": {"runbook": runbook, "params": {}},
            **extra}


async def test_a_rule_given_as_data_heals_and_its_errors_name_its_file_and_line(agent):
    mod, loaded, _cfg = agent
    store = Store(loaded.ctx.state_dir)
    try:
        ladder = Ladder(loaded.ctx, loaded.pm, loaded.registry, store, loaded.config.healing, loaded.targets, [])
        engine = Engine(loaded.registry, store, loaded.targets, downstream=ladder)
        mod.STATE["rules"] = [mod.RuleSpec(rule(), "/etc/packs/site.yaml", 12)]
        ladder.start()
        assert [(r.id, r.file, r.line) for r in ladder.rules.rules] == [("pack-fix", "/etc/packs/site.yaml", 12)]
        await engine.sweep(force=True, only_checks={"test.from_pack"})
        await ladder.drain()
        [incident] = store.incidents(None)
        assert (incident.outcome, incident.tier) == ("healed", "L1") and "rule pack-fix" in incident.detail
        # a runbook no plugin provides: the error names the rule's file and line; the last good set stays
        mod.STATE["rules"] = [mod.RuleSpec(rule("test.nope"), "/etc/packs/site.yaml", 30)]
        assert ladder.reload() is False
        [err] = ladder.rule_errors
        assert err.startswith("/etc/packs/site.yaml:30: rule 'pack-fix'") and "'test.nope' is not provided" in err
        assert [r.id for r in ladder.rules.rules] == ["pack-fix"]
        mod.STATE["rules"] = [mod.RuleSpec(rule(actoin={}), "/etc/packs/site.yaml", 31)]
        ladder.reload()
        assert ladder.rule_errors == ["/etc/packs/site.yaml:31: actoin: unknown key"]
        mod.STATE["rules"] = []
        assert ladder.reload() is True and ladder.rules.rules == [] and ladder.rule_errors == []
    finally:
        store.close()


def test_osiris_checks_shows_the_source_of_each_check(agent):
    _mod, _loaded, cfg = agent
    env = {"OSIRIS_PLUGINS": "none", "OSIRIS_CONFIG": None}
    table = CliRunner(env=env).invoke(cli, ["-c", str(cfg), "checks"], catch_exceptions=False).output
    rows = {line.split()[0]: line.split()[1] for line in table.splitlines()[1:] if line.strip()}
    assert rows["test.from_pack"] == "/etc/packs/site.yaml:7"
    assert rows["test.from_code"] == "data_plugin"
    listed = json.loads(CliRunner(env=env).invoke(cli, ["-c", str(cfg), "checks", "--format", "json"]).output)
    by_id = {c["id"]: c for c in listed}
    assert by_id["test.from_pack"]["source"] == {"file": "/etc/packs/site.yaml", "line": 7, "sha256": "ab" * 32}
    assert by_id["test.from_code"]["source"] is None and by_id["test.from_code"]["plugin"] == "data_plugin"


def test_sweep_evidence_names_the_source_and_its_digest(agent):
    from osiris.evidence.service import EvidenceService

    _mod, loaded, _cfg = agent
    specs = {cid: c.spec for cid, c in loaded.registry.checks.items()}
    policy = EvidenceService.policy(type("S", (), {"registry": loaded.registry})(),
                                    [specs["test.from_pack"], specs["test.from_code"]])["checks"]
    assert policy["test.from_pack"]["source"] == {"file": "/etc/packs/site.yaml", "line": 7, "sha256": "ab" * 32}
    assert "source" not in policy["test.from_code"]  # declared in code: the plugin says it all


@pytest.mark.parametrize("cond,value,holds", [
    ({"ge": 5}, 5, True), ({"ge": 5}, 4, False), ({"le": 4}, 4, True), ({"le": 4}, 5, False),
    ({"ge": 1}, True, True), ({"ge": 1}, False, False), ({"ge": 0}, False, True),  # booleans count as 1/0
    ({"ge": 1}, "5", False),  # not a number: never "at least"
])
def test_ge_and_le_conditions(cond, value, holds):
    assert FactCondition.model_validate(cond).holds(True, value) is holds
