"""The post-boot health gate: `osiris health-gate` against a running agent
(real processes), and each way a check can fail, hang or be missing."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from osiris.app import load
from osiris.evidence.keys import load_or_create
from osiris.evidence.log import EvidenceLog
from osiris.health import Gate, boot_entry, clock_sane, evidence_log, image_version, state_database, writable

from .conftest import OSIRIS

HTTP_LINE = re.compile(r"HTTP API on http://[^:/]+:(\d+)/")
BOOT_ID = "0123456789abcdef0123456789abcdef"


def gate_cli(cfg, *args, env=None, timeout=120):
    return subprocess.run([str(OSIRIS), "--config", str(cfg), "health-gate", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture
def agent(write_config):
    """A real `osiris run` on a kernel-chosen port; yields (config, port)."""
    procs = []

    def start(extra=None):
        cfg = write_config({"agent": {"tick": 0.5, "http": {"port": 0}}, **(extra or {})})
        proc = subprocess.Popen([str(OSIRIS), "--config", str(cfg), "run"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        port: list[int] = []
        seen = threading.Event()

        def read():
            for line in proc.stderr:
                m = HTTP_LINE.search(line)
                if m and not port:
                    port.append(int(m.group(1)))
                    seen.set()

        threading.Thread(target=read, daemon=True).start()
        assert seen.wait(60), "the agent never said where its HTTP API listens"
        # Alive once the first sweep ran (the evidence log exists then).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port[0]}/health", timeout=10) as r:
                    if json.loads(r.read())["alive"]:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        log = Path(json.loads(cfg.read_text())["state_dir"]) / "evidence" / "log.sqlite3"
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return cfg, port[0]

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(30)


def verdicts(state_dir: Path) -> list[dict]:
    """The health_gate bundles in the evidence log, as signed."""
    log = EvidenceLog(state_dir / "evidence" / "log.sqlite3", create=False)
    try:
        return [json.loads(e.body)["payload"] for e in log.iter_entries() if e.kind == "health_gate"]
    finally:
        log.close()


def test_a_healthy_agent_passes_and_the_verdict_is_signed_evidence(agent, tmp_path):
    cfg, port = agent()
    first = gate_cli(cfg, "--agent-port", str(port), "--boot-id", BOOT_ID)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "health gate: PASSED" in first.stdout
    for name in ("agent.answers", "state.database", "evidence.log", "data.writable", "clock.sane"):
        assert re.search(rf"^{re.escape(name)}\s+core\s+pass", first.stdout, re.M), first.stdout
    # The second run verifies the checkpoint the first one signed.
    second = gate_cli(cfg, "--agent-port", str(port), "--boot-id", BOOT_ID, "--format", "json")
    assert second.returncode == 0, second.stdout + second.stderr
    out = json.loads(second.stdout)
    assert out["passed"] is True and out["evidence"]
    assert "verifies" in next(r["detail"] for r in out["results"] if r["name"] == "evidence.log")
    recorded = verdicts(tmp_path / "state")
    assert len(recorded) == 2
    v = recorded[-1]
    assert v["boot_id"] == BOOT_ID and v["passed"] is True and v["agent_version"]
    assert {r["name"] for r in v["results"]} >= {"agent.answers", "evidence.log", "clock.sane"}
    verify = subprocess.run([str(OSIRIS), "--config", str(cfg), "evidence", "verify"], capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_no_agent_answering_fails_the_gate_and_is_recorded(agent, tmp_path):
    cfg, port = agent()
    # Bound but not listening: the kernel refuses connections, and holds the port meanwhile.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        res = gate_cli(cfg, "--agent-port", str(s.getsockname()[1]), "--boot-id", BOOT_ID)
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"^agent\.answers\s+core\s+FAIL", res.stdout, re.M), res.stdout
    assert "health gate: FAILED (agent.answers;" in res.stdout
    assert verdicts(tmp_path / "state")[-1]["passed"] is False


HANGING = '''
import asyncio, time
from osiris import hookimpl
from osiris.records import HealthCheck, HealthResult

async def fine():
    return HealthResult(True, "fine")

async def hangs():
    await asyncio.sleep(3600)

async def blocks():
    time.sleep(3600)  # blocks the event loop itself

MODE = "{mode}"

@hookimpl
def osiris_health_checks(ctx):
    if MODE == "raises":
        raise RuntimeError("health hook broke")
    if MODE == "hook-hangs":
        time.sleep(3600)
    if MODE == "junk":
        return ["not a check"]
    checks = [HealthCheck("demo.fine", fine)]
    if MODE == "hangs":
        checks.append(HealthCheck("demo.hangs", hangs))
    if MODE == "blocks":
        checks.append(HealthCheck("demo.blocks", blocks))
    if MODE == "fails":
        async def no():
            return HealthResult(False, "demo says no")
        checks.append(HealthCheck("demo.no", no))
    return checks
'''


@pytest.mark.parametrize("mode, name, detail", [
    ("fails", "demo.no", "demo says no"),
    ("hangs", "demo.hangs", "did not finish within 1 s: cut"),
    ("raises", "demoplug: osiris_health_checks", "the hook raised RuntimeError: health hook broke"),
    ("junk", "demoplug: osiris_health_checks", "returned str, expected HealthCheck"),
    ("blocks", "demo.blocks", "the event loop was blocked"),
    ("hook-hangs", "demoplug: osiris_health_checks", "the hook did not return within 1 s: cut"),
])
def test_a_plugin_check_that_fails_hangs_or_breaks_fails_the_gate_by_name(agent, tmp_path, mode, name, detail):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "demoplug.py").write_text(HANGING.replace("{mode}", mode))
    cfg, port = agent()
    data = json.loads(cfg.read_text())
    data["plugin_modules"] = ["demoplug"]
    cfg.write_text(json.dumps(data))
    res = gate_cli(cfg, "--agent-port", str(port), "--timeout", "1", "--boot-id", BOOT_ID,
                   env={"PYTHONPATH": str(mods)})
    assert res.returncode == 1, res.stdout + res.stderr
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith(name + " ")), None)
    assert line is not None and " FAIL " in line and detail in line, res.stdout
    assert "Traceback" not in res.stdout + res.stderr
    assert "health gate: FAILED" in res.stdout
    # The built-in checks still ran (unless the loop was held), and the verdict was kept.
    if mode not in ("blocks", "hook-hangs"):
        assert re.search(r"^agent\.answers\s+core\s+pass", res.stdout, re.M), res.stdout
    if mode in ("fails", "hangs"):
        assert re.search(r"^demo\.fine\s+demoplug\s+pass", res.stdout, re.M), res.stdout
    v = verdicts(tmp_path / "state")[-1]
    assert v["passed"] is False and any(r["name"] == name and not r["ok"] for r in v["results"])


# -- the built-in checks one by one (in process) ---------------------------------------------


def run(check):
    import asyncio

    return asyncio.run(check.run())


def test_the_state_database_must_exist_and_be_sound(tmp_path):
    res = run(state_database(tmp_path))
    assert not res.ok and "missing" in res.detail
    assert not (tmp_path / "osiris.sqlite3").exists()  # the check did not create one
    from osiris.store import Store

    Store(tmp_path).close()
    assert run(state_database(tmp_path)).ok
    data = bytearray((tmp_path / "osiris.sqlite3").read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = b"\xa5" * (len(data) - page)  # every page after the first damaged
    (tmp_path / "osiris.sqlite3").write_bytes(bytes(data))
    res = run(state_database(tmp_path))
    assert not res.ok and re.search("malformed|not a database|integrity", res.detail), res.detail


def _log_with_checkpoint(tmp_path):
    from .evidence.helpers import ORIGIN, fill

    key = load_or_create(tmp_path / "keys")
    log = EvidenceLog(tmp_path / "evidence" / "log.sqlite3", origin=ORIGIN, verify_key=key.verify_key)
    fill(log, key, 5)
    cp = log.checkpoint(key)
    log.close()
    return key, cp


def test_the_evidence_log_checkpoint_must_verify_against_the_tree(tmp_path):
    log_path, keys = tmp_path / "evidence" / "log.sqlite3", tmp_path / "keys"
    res = run(evidence_log(log_path, keys))
    assert not res.ok and "no pinned evidence public key" in res.detail
    _key, cp = _log_with_checkpoint(tmp_path)
    res = run(evidence_log(log_path, keys))
    assert res.ok and f"checkpoint {cp.size}" in res.detail
    # A leaf rewritten on disk: the signed checkpoint no longer matches the tree.
    db = sqlite3.connect(log_path, isolation_level=None)
    for trigger in ("entries_no_update", "entries_retention"):
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    db.execute("DROP TRIGGER IF EXISTS nodes_no_change")
    db.execute("UPDATE entries SET leaf = ? WHERE idx = 4", (bytes(32),))
    db.close()
    res = run(evidence_log(log_path, keys))
    assert not res.ok and "does not match its signed checkpoint" in res.detail


def test_a_clock_reset_or_stepped_back_is_not_sane(tmp_path):
    log_path = tmp_path / "evidence" / "log.sqlite3"
    res = run(clock_sane(log_path, now=lambda: datetime(2000, 1, 1, tzinfo=timezone.utc)))
    assert not res.ok and "before 2025-01-01" in res.detail
    _key, cp = _log_with_checkpoint(tmp_path)
    before = cp.datetime - timedelta(hours=1)
    res = run(clock_sane(log_path, now=lambda: before))
    assert not res.ok and "stepped back" in res.detail
    assert run(clock_sane(log_path)).ok


def test_writable_names_a_directory_that_is_not(tmp_path):
    assert run(writable({"state directory": tmp_path})).ok
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    res = run(writable({"evidence directory": tmp_path / "gone"}))
    assert not res.ok


def test_a_verdict_without_the_builtin_checks_never_passes(tmp_path, write_config):
    cfg = write_config({"agent": {"http": {"enabled": False}}, "evidence": {"enabled": False}})
    loaded = load(cfg)
    gate = Gate(loaded, timeout=5)
    gate.collect()
    core = [r for r in gate.results([], cut_after=5) if r.plugin == "core"]
    assert {r.name for r in core} == {"agent.answers", "state.database", "evidence.log", "data.writable",
                                      "clock.sane"}
    # Results for only some of the checks (the rest never finished): not a pass.
    assert gate.verdict([]).passed is False
    assert gate.verdict([r for r in core if r.name != "clock.sane"]).passed is False


def test_boot_facts_are_read_from_the_system_files(tmp_path):
    osr = tmp_path / "os-release"
    osr.write_text('NAME=NixOS\nIMAGE_ID="osiris"\nIMAGE_VERSION="1.4.2"\n')
    assert image_version(osr) == "1.4.2"
    assert image_version(tmp_path / "missing") is None
    var = tmp_path / "LoaderEntrySelected"
    var.write_bytes(b"\x06\x00\x00\x00" + "osiris_1.4.2+2-1.efi\x00".encode("utf-16-le"))
    assert boot_entry(var) == "osiris_1.4.2+2-1.efi"
