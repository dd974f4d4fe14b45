"""The executor against the lab: a practice per test module, and the agent
loaded from a real config (only this plugin, plus the core's built-ins)."""

from __future__ import annotations

import json

import pytest

from osiris.app import load
from osiris_lab import Lab

# Quick retries, but timeouts a loaded machine does not reach by accident: a
# healthy lab request answers in milliseconds, a Receive holds at most the
# OperationTimeout (5 s) and the HTTP read timeout is then 9 s
# (osiris_windows.client.read_timeout). A test that needs a host to time
# out makes it hang (for good), not merely slow.
FAST = {"connect_timeout": 10, "operation_timeout": 5, "retries": 2, "backoff": 0.05, "script_overhead": 5}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    hosts = [("dc01", "dc"), ("srv01", "server"), ("ws01", "workstation"), ("ws02", "workstation"),
             ("ws03", "workstation")]
    lab = Lab(hosts, workdir=tmp_path_factory.mktemp("lab"))
    with lab.running():
        yield lab


@pytest.fixture(autouse=True)
def _reset(request):
    yield
    if "lab" in request.fixturenames:
        request.getfixturevalue("lab").reset()


def config(lab, tmp_path, transport="https", settings=None, hosts=None, targets=None):
    targets = targets if targets is not None else [t for t in lab.targets(transport)
                                                   if hosts is None or t["name"] in hosts]
    return {
        "state_dir": str(tmp_path / "state"),
        "agent": {"check_self": False, "workers": 16, "http": {"enabled": False}},
        "secrets": {"files": {lab.credential_name: str(lab.credential_file)}},
        "targets": targets,
        "plugins": {"windows": {**FAST, **(settings or {})}},
    }


@pytest.fixture
def agent(lab, tmp_path):
    """agent(transport=..., settings=..., hosts=...) -> the loaded agent."""
    opened = []

    def make(**kw):
        loaded = load(config_data=config(lab, tmp_path, **kw), environ={"OSIRIS_PLUGINS": "windows"})
        opened.append(loaded)
        return loaded

    yield make
    for loaded in opened:
        loaded.ctx.close()


@pytest.fixture
def write_config(lab, tmp_path):
    def write(**kw):
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config(lab, tmp_path, **kw), indent=2))
        return path

    return write
