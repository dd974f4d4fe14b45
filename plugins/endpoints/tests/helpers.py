"""An appliance with the endpoints and windows plugins running for real
(runtime.Agent: engine, ladder, evidence), a lab practice whose hosts it
reaches over WinRM, and enrolled endpoint agents (the real package) that
run their catalogue against the same lab hosts' state."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from osiris.app import load
from osiris.runtime import Agent
from osiris_endpoint.agent import EndpointAgent, enrol
from osiris_endpoints.cli import issue_token
from osiris_lab import Lab
from osiris_lab.endpoint import EmulatedHost

FAST_WINRM = {"connect_timeout": 10, "operation_timeout": 5, "retries": 2, "backoff": 0.05, "script_overhead": 5}
FIREWALL = "windows.firewall.profiles_enabled"
RULE = """\
rules:
  - id: site-firewall
    match: {check: windows.firewall.profiles_enabled}
    action:
      runbook: windows.firewall.enable_profiles
      params: {profiles: [Domain, Private, Public]}
"""


async def until(predicate, timeout: float = 60.0, step: float = 0.05, what: str = "the condition"):
    """Wait for ``predicate()`` to be true; the deadline only stops a hang."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(step)


async def osiris(config: Path, *args: str) -> subprocess.CompletedProcess:
    """The real ``osiris`` command line, in its own process."""
    exe = Path(sys.executable).with_name("osiris")
    env = {**os.environ, "OSIRIS_PLUGINS": "windows,endpoints"}
    env.pop("OSIRIS_CONFIG", None)
    return await asyncio.to_thread(subprocess.run, [str(exe), "-c", str(config), *args], capture_output=True,
                                   text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab([("ws01", "workstation"), ("ws02", "workstation")], workdir=tmp_path_factory.mktemp("lab"))
    with lab.running():
        yield lab


@pytest.fixture(autouse=True)
def _reset(request):
    yield
    if "lab" in request.fixturenames:
        request.getfixturevalue("lab").reset()


def appliance_config(lab, state_dir: Path, endpoints=None, hosts=("ws01",)):
    return {
        "state_dir": str(state_dir),
        "site": {"id": "clinic", "name": "Clinic"},
        "agent": {"check_self": False, "http": {"enabled": False}, "tick": 0.2, "workers": 8},
        "secrets": {"files": {lab.credential_name: str(lab.credential_file)}},
        "targets": [t for t in lab.targets("https") if t["name"] in hosts],
        # Sweeps come once at start; what follows comes from the endpoints.
        "checks": {FIREWALL: {"interval": 86400}},
        "healing": {"mode": "standard"},
        "plugins": {
            "windows": FAST_WINRM,
            "endpoints": {"enabled": True, "listen": "127.0.0.1", "port": 0, "enrol_port": 0,
                          "revocation_poll": 0.3, "heartbeat": 1, "silence_allowance": 3, **(endpoints or {})},
        },
    }


class Appliance:
    """The agent running in this event loop; its source and store."""

    def __init__(self, loaded):
        self.loaded = loaded
        self.agent = Agent(loaded)
        self.task: asyncio.Task | None = None

    async def start(self):
        self.task = asyncio.create_task(self.agent.run())
        await until(lambda: self.agent.sources, what="the sources")
        self.source = next(s for s in self.agent.sources if s.name == "endpoints")
        await asyncio.wait_for(self.source.ready.wait(), 30)
        return self

    @property
    def service(self):
        return self.source.service

    def token(self, **kw) -> str:
        return issue_token(self.loaded.ctx, address=f"127.0.0.1:{self.source.enrol_port}", **kw)[0]

    def observations(self, where: str = "1", args=()) -> list[sqlite3.Row]:
        db = sqlite3.connect(self.loaded.ctx.paths.state_db)
        db.row_factory = sqlite3.Row
        try:
            return db.execute(f"SELECT * FROM observations WHERE {where} ORDER BY id", args).fetchall()
        finally:
            db.close()

    async def stop(self):
        if self.task is not None and not self.task.done():
            self.agent.stop.set()
            await asyncio.wait_for(self.task, 60)


@pytest.fixture
async def appliance(lab, tmp_path):
    made = []

    async def make(endpoints=None, hosts=("ws01",)):
        state = tmp_path / f"appliance{len(made)}"
        rules = state / "rules"
        rules.mkdir(parents=True, exist_ok=True)
        (rules / "site.yaml").write_text(RULE)
        loaded = load(config_data=appliance_config(lab, state, endpoints, hosts),
                      environ={"OSIRIS_PLUGINS": "windows,endpoints"})
        a = await Appliance(loaded).start()
        made.append(a)
        return a

    yield make
    for a in made:
        await a.stop()


class Endpoint:
    def __init__(self, agent: EndpointAgent):
        self.agent = agent
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self):
        self.task = asyncio.create_task(self.agent.run(self.stop))
        return self

    async def close(self):
        self.stop.set()
        if self.task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.task, 30)
        self.agent.close()


@pytest.fixture
async def endpoint(lab, tmp_path):
    made = []

    async def make(appliance, name="ws01", token=None, **kw):
        directory = tmp_path / f"endpoint-{name}"
        await enrol(directory, token or appliance.token(), name)
        kw.setdefault("check_interval", 0.2)
        kw.setdefault("backoff", 0.05)
        kw.setdefault("backoff_cap", 0.5)
        e = Endpoint(EndpointAgent(directory, EmulatedHost(lab.host(name)), **kw)).start()
        made.append(e)
        return e

    yield make
    for e in made:
        await e.close()
