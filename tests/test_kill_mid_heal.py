"""Intent before action, under SIGKILL: the real agent (`osiris run`, a
process of its own) heals drift on lab hosts and is killed 60 times, half
the time while a runbook is running on a host. Afterwards every runbook
that reached a host has a signed intent bundle, every intent has its
attempt bundle (finished, or closed as interrupted at the next start), no
attempt is left open, and the evidence log verifies."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from osiris_lab import Lab
from osiris_lab.server import Quotas

OSIRIS = Path(sys.executable).with_name("osiris")
FIREWALL = "windows.firewall.profiles_enabled"
FIX = "windows.firewall.enable_profiles"
KILLS = 60
HOSTS = [("dc01", "dc"), ("ws01", "workstation")]
# Generous: nothing here waits for a timeout, and a loaded machine (the lab
# answers from a thread of this process) must not look like a dead host.
WINDOWS = {"connect_timeout": 30, "operation_timeout": 20, "retries": 1, "backoff": 0.05, "script_overhead": 20}
RULES = f"""
rules:
  - id: firewall-on
    match: {{check: {FIREWALL}}}
    action: {{runbook: {FIX}, params: {{profiles: [Domain, Private, Public]}}}}
"""


def wait_for(pred, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def within(pred, timeout):
    """Whether ``pred`` came true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def practice(tmp_path):
    # Each killed agent leaves the shells it had open on the hosts (it never
    # sent their Delete); WinRM reaps idle shells after IdleTimeout. With
    # Windows' 180 s, 60 kills in a few minutes would reach MaxShellsPerUser
    # (30) and the hosts would refuse the next agent: reap them sooner.
    lab = Lab(HOSTS, workdir=tmp_path / "lab", quotas=Quotas(idle_timeout_ms=5000))
    with lab.running():
        state = tmp_path / "state"
        (state / "rules").mkdir(parents=True)
        (state / "rules" / "site.yaml").write_text(RULES)
        config = {
            "site": {"id": "clinic", "name": "Clinic", "appliance": "box"},
            "state_dir": str(state),
            "agent": {"check_self": False, "tick": 0.2, "http": {"enabled": False}},
            "secrets": {"files": {lab.credential_name: str(lab.credential_file)}},
            "targets": lab.targets("https"),
            "checks": {FIREWALL: {"interval": 1}},
            "healing": {"mode": "full", "flap_guard": {"max_heals": 1000, "window": 60}},
            "plugins": {"windows": WINDOWS},
        }
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config))
        # A runbook that takes a while on the host, so a kill can land in it.
        for name, _role in HOSTS:
            lab.slow_unit(name, FIX, 1500)
        yield lab, path


def agent(config: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OSIRIS_PLUGINS": "windows"}
    return subprocess.Popen([str(OSIRIS), "-c", str(config), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_every_runbook_that_reached_a_host_has_its_signed_attempt_after_60_kills(practice):
    lab, config = practice
    rng = random.Random(1304)
    runs = lambda: sum(len(lab.host(n).runbooks_run) for n, _ in HOSTS)  # noqa: E731
    mid_heal = 0
    stalled = []  # rounds in which no runbook reached a host although one was due
    settled = lambda: all(lab.host(n).runbooks_ended == len(lab.host(n).runbooks_run) for n, _ in HOSTS)  # noqa: E731
    for round_ in range(KILLS):
        # A killed agent's runbook runs on in the lab; break things after it ended.
        wait_for(settled, "the last round's runbooks to end on the hosts")
        for name, _role in HOSTS:
            if rng.random() < 0.7:
                lab.break_setting(name, "firewall.domain.enabled")
        before = runs()
        proc = agent(config, "run")
        try:
            if round_ % 2 == 0 and any(not lab.host(n).state["firewall.domain.enabled"] for n, _ in HOSTS):
                # Kill while a runbook is running on a host (it takes 1.5 s there).
                if within(lambda before=before, proc=proc: runs() > before or proc.poll() is not None, 60.0):
                    time.sleep(rng.uniform(0.0, 0.5))
                    mid_heal += 1
                else:
                    stalled.append(round_)
            else:
                time.sleep(rng.uniform(0.2, 2.0))  # anywhere: start-up, sweep, heal, verification
            assert proc.poll() is None, f"the agent exited by itself: {proc.stderr.read()}"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(60)
    # One clean run closes what the kills left and records it.
    final = agent(config, "run", "--once")
    _out, err = final.communicate(timeout=300)
    assert final.returncode in (0, 1), err

    state = config.parent / "state"
    from osiris.evidence.log import EvidenceLog
    from osiris.store import Store

    log = EvidenceLog(state / "evidence" / "log.sqlite3", create=False)
    try:
        bundles = [json.loads(e.body) for e in log.iter_entries()]
    finally:
        log.close()
    intents = [b["payload"] for b in bundles if b["kind"] == "healing_intent"]
    attempts = {b["payload"]["attempt"]: b["payload"] for b in bundles if b["kind"] == "healing_attempt"}
    reached = Counter((n, uid) for n, _ in HOSTS for uid in lab.host(n).runbooks_run)
    signed = Counter((p["target"], p["runbook"]) for p in intents)
    assert len(stalled) <= KILLS // 10, f"no runbook reached a host in rounds {stalled}, although one was due"
    assert mid_heal >= KILLS // 5 and sum(reached.values()) >= mid_heal
    for key, n in reached.items():
        assert signed[key] >= n, f"{key}: {n} runbooks reached the host, {signed[key]} signed intents"
    missing = [p["attempt"] for p in intents if p["attempt"] not in attempts]
    assert missing == [], f"intents without their attempt bundle: {missing}"
    interrupted = [a for a in attempts.values() if a.get("interrupted")]
    assert interrupted, "no kill landed mid-heal: the test did not test what it is for"
    store = Store(state)
    try:
        open_attempts = [a for a in store.attempts() if a["finished_at"] is None]
    finally:
        store.close()
    assert open_attempts == []
    verify = subprocess.run([str(OSIRIS), "-c", str(config), "evidence", "verify"], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "OSIRIS_PLUGINS": "windows"})
    assert verify.returncode == 0 and verify.stdout.startswith("ok:"), verify.stdout + verify.stderr
