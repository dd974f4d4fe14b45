"""sd_notify that never blocks: a real AF_UNIX datagram socket whose reader
never drains, for the notifier alone and for the running agent."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from osiris.notify import Notifier

from .conftest import OSIRIS

HTTP_LINE = re.compile(r"HTTP API on http://[^:/]+:(\d+)/")


def wait_until(pred, timeout=60.0, interval=0.05):
    """Poll ``pred`` until it is true; the timeout only stops a hang."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture
def reader(tmp_path):
    """A bound datagram socket nobody reads (the test drains it on purpose)."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield path, sock
    sock.close()


def queue_full(path) -> bool:
    """True when a datagram to ``path`` finds no room (one that fits is
    left in the queue: it only helps fill it)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    probe.setblocking(False)
    try:
        probe.sendto(b"PROBE=1", str(path))
        return False
    except BlockingIOError:
        return True
    finally:
        probe.close()


def drain(sock) -> list[str]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(65536).decode())
        except BlockingIOError:
            return out


def fill(notifier: Notifier, line: str) -> int:
    """Notify until a notification finds the queue full; returns how many
    went through. Run in a thread: a notifier that blocks leaves it alive."""
    for sent in range(100_000):
        if not notifier.notify(line):
            return sent
    raise AssertionError("the queue never filled")


def test_a_full_queue_does_not_block_and_state_is_kept_newest_first_without_watchdog(reader):
    path, sock = reader
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(fill(notifier, "WATCHDOG=1")), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "notify() blocked on a full queue"
    assert result and result[0] > 0 and notifier.dropped == 1 and queue_full(path)
    # While full: nothing waits, states are kept (newest value per variable), WATCHDOG never is.
    assert notifier.notify("READY=1", "STATUS=starting") is False
    assert notifier.notify("STATUS=running", "WATCHDOG=1") is False
    assert notifier.pending == {"READY": "1", "STATUS": "running"}
    # Room again: the kept state goes out with the next notification, once.
    assert drain(sock)
    assert notifier.notify("STATUS=5 targets") is True
    assert drain(sock) == ["READY=1\nSTATUS=5 targets"]
    assert notifier.pending == {} and notifier.notify("WATCHDOG=1") is True
    assert drain(sock) == ["WATCHDOG=1"]
    notifier.close()


def test_abstract_sockets_no_socket_and_a_missing_reader(tmp_path):
    name = f"osiris-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.notify("READY=1") is True
        assert sock.recv(100) == b"READY=1"
        notifier.close()
    finally:
        sock.close()
    assert Notifier({}).notify("READY=1") is False
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")}).notify("READY=1") is False
    assert Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).notify("READY=1") is False


def observations_total(port: int) -> float:
    """Observations recorded so far, from /metrics (an agent whose loop is
    stuck does not answer, and this raises)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        body = r.read().decode()
    return sum(float(v) for v in re.findall(r"^osiris_observations_total\{[^}]*\} ([0-9.e+]+)$", body, re.M))


def test_the_agent_keeps_sweeping_while_the_notify_socket_is_full(reader, write_config):
    """A reader that never drains filled the queue and the agent stopped
    sweeping (a blocking send on the loop). Now: the queue is full, and
    observations keep coming and the API keeps answering."""
    path, _sock = reader
    checks = ("appliance.storage.state_free_space", "appliance.files.private", "appliance.clock.synchronized")
    cfg = write_config({"agent": {"tick": 0.2, "http": {"port": 0}},
                        "checks": {c: {"interval": 0.2} for c in checks}})
    # A watchdog ping every 10 ms fills the queue at once.
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "20000"}
    proc = subprocess.Popen([str(OSIRIS), "--config", str(cfg), "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    port: list[int] = []

    def read_stderr():
        for line in proc.stderr:
            stderr.append(line)
            m = HTTP_LINE.search(line)
            if m and not port:
                port.append(int(m.group(1)))

    t = threading.Thread(target=read_stderr, daemon=True)
    t.start()
    try:
        assert wait_until(lambda: port), "".join(stderr)
        assert wait_until(lambda: queue_full(path)), "the notify queue never filled"
        before = observations_total(port[0])
        # Progress, not time: two more rounds of the three checks, with the queue still full.
        assert wait_until(lambda: observations_total(port[0]) >= before + 6), "".join(stderr)
        assert queue_full(path)
        assert any("cannot notify systemd now (its queue is full)" in line for line in stderr), "".join(stderr)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        t.join(10)
