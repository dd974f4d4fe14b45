"""Exceptions (accepted risks): drift they cover is neither healed nor
escalated while they hold, and is drift again once they end."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from osiris import risk
from osiris.app import load
from osiris.engine import Engine
from osiris.evidence.log import EvidenceLog
from osiris.healing.ladder import Ladder
from osiris.paths import DataPaths
from osiris.store import Store, iso

OSIRIS = Path(sys.executable).with_name("osiris")
PLUGIN = '''
from osiris import CheckSpec, Risk, RunbookSpec, Status, Verdict, hookimpl

STATE = {"setting": "bad", "escalations": [], "runs": 0}

def probe(params):
    return {"setting": STATE["setting"]}

def evaluate(facts, params):
    return Verdict(Status.PASS if facts["setting"] == "good" else Status.FAIL, f"setting={facts['setting']}")

def fix(params):
    STATE["runs"] += 1
    return {}  # changes nothing: verification fails, the ladder escalates

class Channel:
    name = "test-channel"
    async def escalate(self, incident):
        STATE["escalations"].append(incident["id"])

@hookimpl
def osiris_checks(ctx):
    return CheckSpec(id="test.setting", title="setting is good", target_kind="local",
                     hipaa=("164.312(b)",), probe=probe, evaluate=evaluate, interval=3600)

@hookimpl
def osiris_runbooks(ctx):
    return RunbookSpec(id="test.fix", title="fix", target_kind="local", fixes=("test.setting",),
                       risk=Risk.LOW, action=fix, timeout=5)

@hookimpl
def osiris_escalation_channels(ctx):
    return Channel()
'''
RULE = "rules:\n  - id: fix\n    match: {check: test.setting}\n    action: {runbook: test.fix}\n"


class World:
    def __init__(self, mod, loaded):
        self.mod, self.loaded = mod, loaded
        self.now = datetime.now(timezone.utc)
        self.store = Store(loaded.ctx.state_dir)
        self.ladder = Ladder(loaded.ctx, loaded.pm, loaded.registry, self.store, loaded.config.healing,
                             loaded.targets, clock=lambda: self.now)
        self.ladder.channels = [c for _p, c in loaded.pm.contributions("osiris_escalation_channels", ctx=loaded.ctx)]
        self.engine = Engine(loaded.registry, self.store, loaded.targets, downstream=self.ladder)
        rules = loaded.ctx.state_dir / "rules"
        rules.mkdir(parents=True, exist_ok=True)
        (rules / "site.yaml").write_text(RULE)
        self.ladder.start()

    async def sweep(self):
        await self.engine.sweep(force=True)
        await self.ladder.drain()


@pytest.fixture
def world(plugin_module, write_config):
    plugin_module("exceptions_plugin", PLUGIN)
    mod = importlib.import_module("exceptions_plugin")
    cfg = write_config({"plugin_modules": ["exceptions_plugin"], "healing": {"mode": "full"}})
    w = World(mod, load(cfg, environ={"OSIRIS_PLUGINS": "none"}))
    yield w
    w.loaded.ctx.close()
    w.store.close()


async def test_covered_drift_is_accepted_not_healed_nor_escalated_and_returns_when_the_exception_expires(world):
    w = world
    w.store.add_exception("test.setting", "appliance", "legacy scanner needs it", "Dr. Rivera", "msp",
                          iso(w.now + timedelta(days=1)))
    w.now = datetime.now(timezone.utc)
    await w.sweep()
    [inc] = w.store.incidents(None)
    assert (inc.outcome, inc.tier) == ("accepted", "none")
    assert "Dr. Rivera" in inc.detail and "legacy scanner needs it" in inc.detail
    assert w.mod.STATE["runs"] == 0 and w.mod.STATE["escalations"] == []
    await w.sweep()
    assert len(w.store.incidents(None)) == 1, "accepted drift is set aside, not reopened every sweep"
    w.ladder.tick()
    await w.sweep()
    assert len(w.store.incidents(None)) == 1, "while the exception holds, nothing changes"

    w.now += timedelta(days=2)  # the exception has expired
    w.ladder.tick()
    await w.sweep()
    latest = w.store.incidents(None)[0]
    assert latest.id != inc.id and (latest.outcome, latest.tier) == ("escalated", "L3")
    assert w.mod.STATE["runs"] == 1 and w.mod.STATE["escalations"] == [latest.id]


async def test_a_removed_exception_ends_at_once(world):
    w = world
    exc = w.store.add_exception("test.setting", None, "r", "a", "msp", iso(w.now + timedelta(days=30)))
    w.now = datetime.now(timezone.utc)
    await w.sweep()
    assert w.store.incidents(None)[0].outcome == "accepted"
    w.store.remove_exception(exc["id"], "msp", "vendor fixed it")
    w.now = datetime.now(timezone.utc) + timedelta(seconds=1)
    w.ladder.tick()
    await w.sweep()
    assert w.store.incidents(None)[0].outcome == "escalated"


async def test_an_exception_for_another_host_or_check_covers_nothing(world):
    w = world
    w.store.add_exception("test.setting", "dc01", "r", "a", "msp", iso(w.now + timedelta(days=3)))
    w.store.add_exception("other.check", None, "r", "a", "msp", iso(w.now + timedelta(days=3)))
    await w.sweep()
    assert w.store.incidents(None)[0].outcome == "escalated"


@pytest.mark.parametrize("text, message", [
    ("2001-01-01", "already past"),
    ("2999-01-01", "more than 366 days ahead"),
    ("next tuesday", "expected a date (YYYY-MM-DD)"),
    ("2030-01-01T10:00", "needs its zone"),
])
def test_a_bad_expiry_is_refused_saying_why(text, message):
    with pytest.raises(risk.ExceptionError, match=re.escape(message)):
        risk.parse_expiry(text, datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_a_date_holds_through_that_day():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert risk.parse_expiry("2026-03-31", now) == datetime(2026, 4, 1, tzinfo=timezone.utc)


def run_cli(config, *args, stdin=None):
    return subprocess.run([str(OSIRIS), "-c", str(config), *args], capture_output=True, text=True, input=stdin,
                          timeout=120)


def test_the_cli_adds_lists_and_removes_exceptions_as_signed_evidence(write_config):
    cfg = write_config({})
    until = (datetime.now(timezone.utc) + timedelta(days=10)).date().isoformat()
    res = run_cli(cfg, "exceptions", "add", "appliance.clock.synchronized", "--host", "nosuch", "--reason", "r",
                  "--approved-by", "Dr. Rivera", "--expires", until)
    assert res.returncode == 2 and "host 'nosuch': no such target" in res.stderr and "Traceback" not in res.stderr
    res = run_cli(cfg, "exceptions", "add", "appliance.clock.synchronized", "--reason", "lab has no NTP server",
                  "--approved-by", "Dr. Rivera", "--expires", until)
    assert res.returncode == 0, res.stderr
    listed = json.loads(run_cli(cfg, "exceptions", "list", "--format", "json").stdout)
    assert [(e["check_id"], e["approved_by"]) for e in listed] == [("appliance.clock.synchronized", "Dr. Rivera")]
    res = run_cli(cfg, "exceptions", "remove", str(listed[0]["id"]), "--reason", "NTP fixed", "--by", "msp")
    assert res.returncode == 0, res.stderr
    assert json.loads(run_cli(cfg, "exceptions", "list", "--format", "json").stdout) == []
    state = json.loads(cfg.read_text())["state_dir"]
    log = EvidenceLog(DataPaths.of(Path(state)).evidence_log, create=False)
    try:
        bundles = [json.loads(e.body) for e in log.iter_entries()]
    finally:
        log.close()
    accepted = [b["payload"] for b in bundles if b["kind"] == "risk_accepted"]
    removed = [b["payload"] for b in bundles if b["kind"] == "risk_acceptance_removed"]
    assert accepted[0]["approved_by"] == "Dr. Rivera" and accepted[0]["reason"] == "lab has no NTP server"
    assert accepted[0]["expires_at"].startswith((datetime.fromisoformat(until) + timedelta(days=1)).date().isoformat())
    assert removed[0]["removed_by"] == "msp" and removed[0]["removed_reason"] == "NTP fixed"
