"""One scrubbing boundary: PHI and secrets planted in a check's facts and
reason reach none of the doors out of the evidence path: what escalation
channels and L2 planners are told, /status, log lines, CLI output."""

import asyncio
import io
import json
import logging

from click.testing import CliRunner

from osiris.app import load
from osiris.cli import cli
from osiris.runtime import Agent
from osiris.scrubbing import scrub_logs

PLANTED = ["Maria Garcia", "123-45-6789", "Zz93kq-token", "Winter2026!", "1960-02-01"]

PLUGIN = '''
from osiris import CheckSpec, Risk, RunbookSpec, Status, Verdict, hookimpl
from osiris.records import PlanProposal

TOLD = {"channel": [], "planner": []}

def probe(params):
    return {"task": "scan.exe --out C:\\\\scans\\\\Patient: Maria Garcia.pdf",
            "api_token": "Zz93kq-token", "DefaultPassword": "Winter2026!",
            "note": "DOB: 1960-02-01", "enabled": True}

def evaluate(facts, params):
    return Verdict(Status.FAIL, "task runs for Patient: Maria Garcia, SSN 123-45-6789")

class Channel:
    name = "capture"
    async def escalate(self, incident):
        TOLD["channel"].append(incident)

@hookimpl
def osiris_checks(ctx):
    return CheckSpec(id="test.phi", title="phi", target_kind="local", hipaa=("164.312(b)",),
                     probe=probe, evaluate=evaluate, interval=3600)

@hookimpl
def osiris_runbooks(ctx):
    return RunbookSpec(id="test.phi_fix", title="fix", target_kind="local", fixes=("test.phi",), risk=Risk.LOW,
                       action=lambda params: {}, timeout=5)

@hookimpl
def osiris_plan(incident, ctx):
    TOLD["planner"].append(incident)
    return None

@hookimpl
def osiris_escalation_channels(ctx):
    return Channel()
'''


def leaks(text: str) -> list[str]:
    return [p for p in PLANTED if p in text]


def setup(plugin_module, write_config):
    import importlib

    plugin_module("phi_boundary_plugin", PLUGIN)
    mod = importlib.import_module("phi_boundary_plugin")
    cfg = write_config({"plugin_modules": ["phi_boundary_plugin"], "agent": {"check_self": True},
                        "healing": {"mode": "full"}})
    return mod, cfg


def test_planted_phi_and_secrets_leave_by_no_door(plugin_module, write_config):
    mod, cfg = setup(plugin_module, write_config)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        loaded = load(cfg, environ={"OSIRIS_PLUGINS": "none"})
        scrub_logs(loaded.ctx.scrub)
        agent = Agent(loaded)
        assert asyncio.run(agent.run(once=True)) == 0
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    later = Agent(load(cfg, environ={"OSIRIS_PLUGINS": "none"}))  # /status reads the store
    try:
        status = json.dumps(later.status())
    finally:
        asyncio.run(later.evidence.close())
        later.store.close()
        later.ctx.close()
    assert mod.TOLD["channel"], out.getvalue()
    [told] = mod.TOLD["channel"]
    [asked] = mod.TOLD["planner"]
    assert told["check_id"] == "test.phi" and told["facts"]["enabled"] is True  # the view is still useful
    assert leaks(json.dumps(told)) == [], "an escalation channel was told PHI or a secret"
    assert leaks(json.dumps(asked)) == [], "an L2 planner was asked with PHI or a secret"
    assert "test.phi" in status and leaks(status) == [], "/status shows PHI or a secret"
    logged = out.getvalue()
    assert "incident 1 opened: test.phi" in logged and leaks(logged) == [], logged
    # the evidence log, the reference, holds none of it either
    from osiris.evidence.log import EvidenceLog

    log = EvidenceLog(loaded.ctx.paths.evidence_log, create=False)
    try:
        bodies = "".join(e.body.decode() for e in log.iter_entries())
    finally:
        log.close()
    assert "[REDACTED:" in bodies and leaks(bodies) == []


def test_the_cli_shows_checks_scrubbed(plugin_module, write_config):
    _mod, cfg = setup(plugin_module, write_config)
    for fmt in ("table", "json"):
        res = CliRunner().invoke(cli, ["-c", str(cfg), "check", "--check", "test.phi", "--format", fmt],
                                 env={"OSIRIS_PLUGINS": "none"})
        assert res.exit_code == 1 and "test.phi" in res.output, res.output
        assert leaks(res.output) == [], res.output
