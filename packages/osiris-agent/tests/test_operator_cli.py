"""An operator's first day: `osiris status` from the store, `osiris check
--failed` with a per-host summary and one line per unreachable host,
`osiris sweep --now` through the running agent's API, and one --format on
every listing command."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from osiris.app import load
from osiris.cli import host_summary, unreachable
from osiris.records import Observation, Status
from osiris.runtime import Agent

OSIRIS = Path(sys.executable).with_name("osiris")


def env_for(config):
    """The CLI in a subprocess, with this test's plugin module importable."""
    return {**os.environ, "OSIRIS_PLUGINS": "none", "PYTHONPATH": str(Path(config).parent / "plugmods")}
PLUGIN = '''
from osiris import CheckSpec, Status, Verdict, hookimpl

def ok(params):
    return {"v": 1}

def bad(params):
    return {"v": 0}

def evaluate(facts, params):
    return Verdict(Status.PASS if facts["v"] else Status.FAIL, "v=%s" % facts["v"])

@hookimpl
def osiris_checks(ctx):
    return [CheckSpec(id="op.good", title="good", target_kind="local", hipaa=("164.312(b)",), probe=ok,
                      evaluate=evaluate, interval=3600),
            CheckSpec(id="op.bad", title="bad", target_kind="local", hipaa=("164.312(b)",), probe=bad,
                      evaluate=evaluate, interval=3600)]
'''


def obs(host, check, status, reason="r"):
    return Observation(host, check, Status(status), reason, {}, datetime.now(timezone.utc))


def test_an_unreachable_host_is_one_line_and_failing_hosts_come_first():
    observations = [obs("dc01", "a", "error", "connection refused"), obs("dc01", "b", "error", "connection refused"),
                    obs("ws01", "a", "pass"), obs("ws01", "b", "fail"), obs("srv01", "a", "pass"),
                    obs("srv01", "b", "error", "parser failed")]
    assert unreachable(observations) == {"dc01": "connection refused"}
    assert [r[0] for r in host_summary(observations)] == ["ws01", "dc01", "srv01"]


@pytest.fixture
def config(plugin_module, write_config):
    plugin_module("operator_plugin", PLUGIN)
    importlib.import_module("operator_plugin")
    return write_config({"plugin_modules": ["operator_plugin"], "agent": {"check_self": True, "http": {"port": 0}}})


def run(config, *args):
    return subprocess.run([str(OSIRIS), "-c", str(config), *args], capture_output=True, text=True, timeout=120,
                          env=env_for(config))


def test_check_failed_prints_the_summary_and_only_what_failed(config):
    res = run(config, "check", "--failed")
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["HOST", "PASS", "FAIL", "ERROR"]
    assert lines[2].split()[:3] == ["appliance", "1", "1"]
    assert "op.bad" in res.stdout and "op.good" not in res.stdout
    assert json.loads(run(config, "check", "--failed", "--format", "json").stdout)[0]["check"] == "op.bad"


def test_status_reads_the_store_failing_first(config):
    assert run(config, "check").returncode == 1
    res = run(config, "status")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[2].split()[:3] == ["appliance", "appliance", "1"]
    assert "op.bad" in res.stdout and "HOW IT STANDS" in res.stdout
    data = json.loads(run(config, "status", "--format", "json").stdout)
    assert [f["check"] for f in data["failing"]] == ["op.bad"]


async def test_sweep_now_asks_the_running_agent(config):
    agent = Agent(load(config, environ={"OSIRIS_PLUGINS": "none"}))
    task = asyncio.create_task(agent.run())
    for _ in range(600):
        if agent.http_port:
            break
        await asyncio.sleep(0.05)
    try:
        before = agent.engine.sweeps
        proc = await asyncio.create_subprocess_exec(
            str(OSIRIS), "-c", str(config), "sweep", "--now", "--port", str(agent.http_port),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env_for(config))
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        assert agent.engine.sweeps == before + 1
        assert "appliance" in out.decode() and "swept 1 hosts" in out.decode()
        proc = await asyncio.create_subprocess_exec(
            str(OSIRIS), "-c", str(config), "sweep", "--now", "--target", "nosuch", "--port", str(agent.http_port),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env_for(config))
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 2 and "no such target: nosuch" in err.decode()
    finally:
        agent.stop.set()
        await asyncio.wait_for(task, 60)


LISTINGS = [["plugins"], ["checks"], ["incidents"], ["rules", "list"], ["rules", "patterns"], ["rules", "candidates"],
            ["exceptions", "list"], ["users", "list"], ["status"]]


@pytest.mark.parametrize("command", LISTINGS, ids=lambda c: " ".join(c))
def test_every_listing_command_speaks_json(config, command):
    res = run(config, *command, "--format", "json")
    assert res.returncode == 0, res.stderr
    json.loads(res.stdout)
