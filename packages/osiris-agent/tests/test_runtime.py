"""The agent process under a real notify socket, and its HTTP API."""

import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from osiris.runtime import watchdog_interval

from .conftest import OSIRIS


# The kernel's receive timestamp of a datagram (SO_TIMESTAMPNS, asm-generic
# value): when the agent sent it, however late this process gets to read it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
HTTP_LINE = re.compile(r"HTTP API on http://[^:/]+:(\d+)/")


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def wait_until(pred, timeout=60.0, interval=0.1):
    """Poll ``pred`` until it is true; the timeout only stops a hang."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture
def agent(tmp_path, write_config):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.settimeout(0.2)
    # Port 0: the agent binds a free port itself and logs it. A port picked
    # here and bound later by the agent could be taken by anyone meanwhile.
    cfg = write_config({"agent": {"tick": 0.2, "http": {"port": 0}}})
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "300000"}
    proc = subprocess.Popen([str(OSIRIS), "--config", str(cfg), "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Read its output all along: an unread pipe that fills up would block
    # the agent's logging, and with it the loop the watchdog watches.
    stderr: list[str] = []
    port_seen = threading.Event()
    port: list[int] = []

    def read_stderr():
        for line in proc.stderr:
            stderr.append(line)
            m = HTTP_LINE.search(line)
            if m and not port:
                port.append(int(m.group(1)))
                port_seen.set()

    readers = [threading.Thread(target=read_stderr, daemon=True),
               threading.Thread(target=proc.stdout.read, daemon=True)]
    for t in readers:
        t.start()
    messages: list[str] = []
    stamps: list[float] = []  # when each line was sent (kernel time of the datagram)

    def receive_until(pred, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, anc, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except TimeoutError:
                if proc.poll() is not None:
                    break
            else:
                sent = time.time()
                for level, kind, raw in anc:
                    if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", raw[:16])
                        sent = sec + nsec / 1e9
                lines = data.decode().splitlines()
                messages.extend(lines)
                stamps.extend([sent] * len(lines))
            if pred(messages):
                return True
        return pred(messages)

    def http_port():
        assert port_seen.wait(60), "".join(stderr)
        return port[0]

    yield proc, http_port, messages, stamps, receive_until, stderr
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)
    for t in readers:
        t.join(10)
    sock.close()


def test_ready_then_periodic_watchdog_then_stopping(agent):
    proc, _port, messages, stamps, receive_until, stderr = agent
    assert receive_until(lambda m: "READY=1" in m), (messages, "".join(stderr))
    ready_at = messages.index("READY=1")
    assert receive_until(lambda m: m[ready_at:].count("WATCHDOG=1") >= 5), (messages, "".join(stderr))
    fifth = [i for i in range(ready_at, len(messages)) if messages[i] == "WATCHDOG=1"][4]
    # Half of 300 ms: five pings take about 0.6 s; far less would mean a busy loop.
    # Measured between the kernel's send times, not when this process got to
    # read them: a test delayed on a loaded machine reads queued pings at once.
    assert stamps[fifth] - stamps[ready_at] > 0.4, list(zip(messages, stamps))
    assert any(m.startswith("STATUS=") for m in messages)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, "".join(stderr)
    assert receive_until(lambda m: "STOPPING=1" in m, timeout=30)


def test_metrics_parse_and_health_reports_loop_alive(agent):
    proc, http_port, messages, _stamps, receive_until, stderr = agent
    assert receive_until(lambda m: "READY=1" in m), (messages, "".join(stderr))
    port = http_port()

    def metrics():
        status, ctype, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        return {f.name: f for f in text_string_to_metric_families(body)}

    # Wait for the first observations of the appliance itself, and for the
    # sweep bundle: it is appended (in the evidence thread) after the
    # observations are stored, so /status may show them a moment earlier.
    def first_sweep_done():
        if not json.loads(get(f"http://127.0.0.1:{port}/status")[2])["targets"].get("appliance"):
            return None
        families = metrics()
        return families if families["osiris_evidence_entries"].samples[0].value >= 1 else None

    families = wait_until(first_sweep_done)
    assert families, "no evidence of the first sweep: " + "".join(stderr)
    status, ctype, body = get(f"http://127.0.0.1:{port}/health")
    health = json.loads(body)
    assert status == 200 and health["alive"] is True and health["status"] == "ok"
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
