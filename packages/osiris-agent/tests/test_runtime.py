"""The agent process under a real notify socket, and its HTTP API."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from osiris.runtime import watchdog_interval

from .conftest import OSIRIS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


@pytest.fixture
def agent(tmp_path, write_config):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    port = free_port()
    cfg = write_config({"agent": {"tick": 0.2, "http": {"port": port}}})
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "300000"}
    proc = subprocess.Popen([str(OSIRIS), "--config", str(cfg), "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    messages: list[str] = []

    def receive_until(pred, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                messages.extend(sock.recv(4096).decode().splitlines())
            except TimeoutError:
                if proc.poll() is not None:
                    break
            if pred(messages):
                return True
        return pred(messages)

    yield proc, port, messages, receive_until
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)
    sock.close()


def test_ready_then_periodic_watchdog_then_stopping(agent):
    proc, port, messages, receive_until = agent
    assert receive_until(lambda m: "READY=1" in m), (messages, proc.stderr.read() if proc.poll() is not None else "")
    ready_at = messages.index("READY=1")
    start = time.monotonic()
    assert receive_until(lambda m: m[ready_at:].count("WATCHDOG=1") >= 5)
    elapsed = time.monotonic() - start
    # Half of 300 ms: five pings take about 0.6 s; far less would mean a busy loop.
    assert elapsed > 0.4
    assert any(m.startswith("STATUS=") for m in messages)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert receive_until(lambda m: "STOPPING=1" in m, timeout=2)


def test_metrics_parse_and_health_reports_loop_alive(agent):
    proc, port, messages, receive_until = agent
    assert receive_until(lambda m: "READY=1" in m)
    # Wait for the first observations of the appliance itself.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, ctype, body = get(f"http://127.0.0.1:{port}/status")
        if json.loads(body)["targets"].get("appliance"):
            break
        time.sleep(0.1)
    status, ctype, body = get(f"http://127.0.0.1:{port}/health")
    health = json.loads(body)
    assert status == 200 and health["alive"] is True and health["status"] == "ok"
    status, ctype, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["osiris_up"].samples[0].value == 1
    obs = {s.labels["status"]: s.value for s in families["osiris_observations"].samples if s.name.endswith("_total")}
    assert sum(obs.values()) >= 3
    checks = {(s.labels["check"], s.labels["status"]) for s in families["osiris_check_status"].samples}
    assert {c for c, _ in checks} >= {"appliance.storage.state_free_space", "appliance.files.private",
                                      "appliance.clock.synchronized"}
    assert families["osiris_evidence_entries"].samples[0].value >= 1, "the first sweep is evidence"
    st = json.loads(get(f"http://127.0.0.1:{port}/status")[2])
    assert st["site"]["id"] == "unnamed-site" and st["alive"] is True


def test_watchdog_interval_follows_systemd_variables():
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None


async def test_health_turns_503_when_the_check_loop_stalls(write_config):
    from aiohttp.test_utils import TestClient, TestServer

    from osiris.api import make_app
    from osiris.app import load
    from osiris.runtime import Agent

    agent = Agent(load(write_config({})))
    client = TestClient(TestServer(make_app(agent)))
    await client.start_server()
    try:
        r = await client.get("/health")
        assert r.status == 200 and (await r.json())["alive"] is True
        agent.engine.heartbeat -= 3600  # as if the loop had been wedged for an hour
        r = await client.get("/health")
        body = await r.json()
        assert r.status == 503 and body["alive"] is False and body["status"] == "stalled"
        assert body["heartbeat_age_s"] >= 3600
        metrics = await (await client.get("/metrics")).text()
        assert "osiris_up 0.0" in metrics
    finally:
        await client.close()
        agent.ctx.close()
        agent.store.close()
