"""Chaos: the appliance (``osiris run``) and a fleet of endpoint agents
(``python -m osiris_lab.fleet``) in their own processes, a TCP proxy in
between; kill -9 either side mid-stream and restart it, cut every
connection. In the end every event an endpoint queued is acknowledged, and
the appliance's store has each of them exactly once (zero loss, zero
duplicates). The reconnect storm of 500 endpoints is test_storm.py."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import pytest

from osiris_endpoint.queue import Queue

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(state: Path, port: int, enrol_port: int, **endpoints) -> dict:
    return {
        "state_dir": str(state),
        "site": {"id": "clinic"},
        "agent": {"check_self": False, "http": {"enabled": False}, "tick": 0.5},
        "plugins": {"endpoints": {"enabled": True, "listen": "127.0.0.1", "port": port, "enrol_port": enrol_port,
                                  "heartbeat": 1, "silence_allowance": 30, "revocation_poll": 1, **endpoints}},
    }


def env() -> dict:
    e = {**os.environ, "OSIRIS_PLUGINS": "windows,endpoints"}
    e.pop("OSIRIS_CONFIG", None)
    return e


class Proc:
    def __init__(self, *argv: str, log: Path):
        self.argv, self.log = argv, log
        self.p: asyncio.subprocess.Process | None = None

    async def start(self) -> Proc:
        self.p = await asyncio.create_subprocess_exec(*self.argv, env=env(), stdout=asyncio.subprocess.PIPE,
                                                      stderr=open(self.log, "ab"))
        return self

    def kill9(self) -> None:
        if self.p and self.p.returncode is None:
            self.p.send_signal(signal.SIGKILL)

    async def wait(self, timeout: float) -> int:
        return await asyncio.wait_for(self.p.wait(), timeout)

    async def stop(self) -> None:
        if self.p and self.p.returncode is None:
            self.p.terminate()
            try:
                await asyncio.wait_for(self.p.wait(), 30)
            except asyncio.TimeoutError:
                self.kill9()
                await self.p.wait()


async def listening(port: int, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if loop.time() > end:
                raise AssertionError(f"nothing listens on {port}") from None
            await asyncio.sleep(0.1)


class Proxy:
    """A TCP relay whose connections can all be cut at once."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.conns: set[asyncio.StreamWriter] = set()
        self.cuts = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, r1, w1):
        try:
            r2, w2 = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            w1.close()
            return
        self.conns |= {w1, w2}

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(r1, w2), pipe(r2, w1))
        self.conns -= {w1, w2}

    async def connected(self, count: int, client: Proc, timeout: float = 180) -> None:
        """Wait until ``count`` connections of ``client`` (still running) are relayed."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self.conns) < 2 * count:
            assert client.p.returncode is None, f"{client.argv[:3]} exited ({client.p.returncode})"
            assert loop.time() < end, f"{len(self.conns) // 2} of {count} connections after {timeout} s"
            await asyncio.sleep(0.05)

    def cut(self) -> None:
        self.cuts += 1
        for w in list(self.conns):
            w.transport.abort()

    async def close(self) -> None:
        self.cut()
        self.server.close()


async def osiris(cfg: Path, *args: str) -> str:
    p = await asyncio.create_subprocess_exec(str(BIN / "osiris"), "-c", str(cfg), *args, env=env(),
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 120)
    assert p.returncode == 0, err.decode()
    return out.decode()


def stored_seqs(state: Path, name: str, queue: str) -> list[int]:
    db = sqlite3.connect(f"file:{state / 'osiris.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT report_id FROM observations WHERE report_id LIKE ?",
                          (f"endpoint/{name}/{queue}/%",)).fetchall()
    finally:
        db.close()
    return sorted(int(r[0].rsplit("/", 1)[1]) for r in rows)


async def test_kill_9_either_side_and_cut_connections_lose_and_duplicate_nothing(tmp_path):
    rng = random.Random(11)
    state, fleet_dir = tmp_path / "appliance", tmp_path / "fleet"
    port, enrol_port = free_port(), free_port()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config(state, port, enrol_port)))
    appliance = await Proc(str(BIN / "osiris"), "-c", str(cfg), "run", log=tmp_path / "appliance.log").start()
    proxy = Proxy(port)
    fleet = None
    try:
        await listening(enrol_port)
        token = (await osiris(cfg, "endpoints", "token", "--address", f"127.0.0.1:{enrol_port}", "--uses", "3")).strip()
        proxy_port = await proxy.start()

        def argv(samples: int) -> list[str]:
            return [sys.executable, "-m", "osiris_lab.fleet", "--dir", str(fleet_dir), "--count", "3", "--token",
                    token, "--samples", str(samples), "--check-interval", "0.2", "--backoff", "0.05",
                    "--backoff-cap", "1", "--stream-port", str(proxy_port), "--timeout", "600"]

        # During the chaos the fleet never runs out of events to queue
        # (however long a restart takes on a loaded machine); after it, a
        # last run queues one more round and delivers everything.
        fleet = await Proc(*argv(10 ** 6), log=tmp_path / "fleet.log").start()
        # Chaos starts once every endpoint is enrolled (a token is used once).
        loop = asyncio.get_running_loop()
        end = loop.time() + 180
        while len(list(fleet_dir.glob("*/identity.json"))) < 3:
            assert loop.time() < end and fleet.p.returncode is None, (tmp_path / "fleet.log").read_text()[-3000:]
            await asyncio.sleep(0.05)
        kills = {"appliance": 0, "fleet": 0}
        for _ in range(12):
            # Mid-stream: every endpoint connected through the proxy again
            # (on a loaded machine a restart takes seconds, and chaos timed
            # by the clock alone would hit processes still starting).
            await proxy.connected(3, fleet)
            await asyncio.sleep(rng.uniform(0.4, 1.5))
            what = rng.choice(["appliance", "fleet", "cut"])
            if what == "cut":
                proxy.cut()
            elif what == "appliance":
                appliance.kill9()
                await appliance.wait(30)
                appliance = await Proc(str(BIN / "osiris"), "-c", str(cfg), "run",
                                       log=tmp_path / "appliance.log").start()
                kills["appliance"] += 1
            else:
                fleet.kill9()
                await fleet.wait(30)
                fleet = await Proc(*argv(10 ** 6), log=tmp_path / "fleet.log").start()
                kills["fleet"] += 1
        assert kills["appliance"] and kills["fleet"] and proxy.cuts, kills
        fleet.kill9()
        await fleet.wait(30)
        fleet = await Proc(*argv(1), log=tmp_path / "fleet.log").start()
        # Left alone, the fleet delivers everything and exits 0 (the
        # deadlines only stop a hang: an endpoint whose stream loop died
        # once kept this waiting until the fleet gave up).
        out, _ = await asyncio.wait_for(fleet.p.communicate(), 660)
        summary = json.loads(out.decode().strip().splitlines()[-1])
        assert fleet.p.returncode == 0, (tmp_path / "fleet.log").read_text()[-3000:]
        assert summary["complete"] and summary["dropped"] == 0
    finally:
        if fleet is not None:
            await fleet.stop()
        await proxy.close()
        await appliance.stop()
    total = 0
    for name in sorted(summary["queues"]):
        q = Queue(fleet_dir / name / "queue.sqlite3")
        last = q.last_seq()
        assert q.acked == last and q.depth() == 0 and q.queue_id == summary["queues"][name]
        assert last > 100  # several events per run, many runs
        # Every queued event is in the store, each exactly once.
        assert stored_seqs(state, name, q.queue_id) == list(range(1, last + 1))
        total += last
        q.close()
    assert total == summary["queued"]
