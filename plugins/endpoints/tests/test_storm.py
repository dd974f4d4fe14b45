"""A reconnect storm: 500 enrolled endpoint agents (the lab's fleet: the
real endpoint package over real gRPC and mutual TLS, in their own
process) streaming to the appliance (``osiris run``), which is killed
(-9) while they deliver and started again: all 500 reconnect at once
(full-jitter backoff capped at 5 s, the appliance's default handshake
limit answering the excess with retry hints), and in the end every event
each endpoint queued is acknowledged and in the appliance's store exactly
once. The storm is caused within seconds; its outcome is waited for with
deadlines that only stop a hang (the figures are printed)."""

from __future__ import annotations

import asyncio
import json
import resource
import sqlite3
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from osiris_endpoint.queue import Queue

from .test_chaos import BIN, Proc, config, free_port, listening, osiris

pytestmark = pytest.mark.slow

COUNT = 500


def records(state: Path) -> list[dict]:
    """The appliance's endpoint records (its plugin state), read-only."""
    try:
        db = sqlite3.connect(f"file:{state / 'osiris.sqlite3'}?mode=ro", uri=True, timeout=30)
    except sqlite3.OperationalError:
        return []
    try:
        rows = db.execute("SELECT value FROM plugin_state WHERE namespace = 'endpoints' AND key LIKE 'endpoint/%'")
        return [json.loads(r[0]) for r in rows]
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


def stored(state: Path) -> dict[tuple[str, str], list[int]]:
    db = sqlite3.connect(f"file:{state / 'osiris.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT report_id FROM observations WHERE report_id LIKE 'endpoint/%'").fetchall()
    finally:
        db.close()
    seqs = defaultdict(list)
    for (report_id,) in rows:
        _, name, queue, seq = report_id.split("/", 3)
        seqs[name, queue].append(int(seq))  # a gap's or reset's id would not parse: none is expected
    return {k: sorted(v) for k, v in seqs.items()}


async def until(predicate, timeout: float, what: str, alive: Proc | None = None, step: float = 0.5):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not (value := predicate()):
        assert alive is None or alive.p.returncode is None, f"the process ended while waiting for {what}"
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(step)
    return value


async def test_a_reconnect_storm_of_500_endpoints_loses_and_duplicates_nothing(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192:  # 500 endpoints: a socket and a queue database (3 files) each, in the fleet's process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))
    state, fleet_dir = tmp_path / "appliance", tmp_path / "fleet"
    port, enrol_port = free_port(), free_port()
    cfg = tmp_path / "config.json"
    # The appliance's default handshake limit (50/s, burst 200): the storm meets the real defaults.
    cfg.write_text(json.dumps(config(state, port, enrol_port, heartbeat=10, silence_allowance=300,
                                     revocation_poll=5)))

    def appliance() -> Proc:
        return Proc(str(BIN / "osiris"), "-c", str(cfg), "run", log=tmp_path / "appliance.log")

    app = await appliance().start()
    fleet = None
    try:
        await listening(enrol_port, timeout=180)
        token = (await osiris(cfg, "endpoints", "token", "--address", f"127.0.0.1:{enrol_port}",
                              "--uses", str(COUNT))).strip()
        # Each endpoint queues a result of each of its 5 checks every 8 s, 4 times (10,000 events in
        # all): queueing or delivering when the appliance goes down, replaying after it.
        fleet = await Proc(sys.executable, "-m", "osiris_lab.fleet", "--dir", str(fleet_dir), "--count", str(COUNT),
                           "--token", token, "--samples", "4", "--check-interval", "8", "--backoff", "0.5",
                           "--backoff-cap", "5", "--timeout", "900", log=tmp_path / "fleet.log").start()
        began = time.monotonic()
        await until(lambda: sum(bool(r.get("queue_id")) for r in records(state)) == COUNT, 600,
                    f"all {COUNT} endpoints to enrol and connect", fleet)
        connected = time.monotonic() - began
        app.kill9()
        await app.wait(30)
        killed = time.time()
        await asyncio.sleep(3)  # the endpoints retry, back off, and keep queueing
        app = await appliance().start()
        await listening(port, timeout=180)
        up = time.monotonic()

        def back() -> int:
            return sum(float(r.get("last_seen", 0)) > killed for r in records(state))

        # The storm: every endpoint has a stream to the restarted appliance again.
        await until(lambda: back() == COUNT, 600, f"all {COUNT} endpoints to reconnect", fleet)
        reconnected = time.monotonic() - up
        out, _ = await asyncio.wait_for(fleet.p.communicate(), 960)
        assert fleet.p.returncode == 0, (tmp_path / "fleet.log").read_text()[-3000:]
        summary = json.loads(out.decode().strip().splitlines()[-1])
        delivered = time.monotonic() - up
    finally:
        if fleet is not None:
            await fleet.stop()
        await app.stop()
    assert summary["complete"] and summary["dropped"] == 0 and summary["endpoints"] == COUNT
    assert summary["acked"] == summary["queued"]
    store = stored(state)
    assert len(store) == COUNT
    total = 0
    for name, queue in summary["queues"].items():
        q = Queue(fleet_dir / name / "queue.sqlite3")
        try:
            last = q.last_seq()
            assert q.acked == last and q.depth() == 0 and q.queue_id == queue
            # Every event this endpoint queued is in the store, each exactly once.
            assert store[name, queue] == list(range(1, last + 1)), name
            total += last
        finally:
            q.close()
    assert total == summary["queued"] == sum(len(v) for v in store.values())
    print(f"storm: {COUNT} endpoints connected {connected:.1f} s after the fleet started; appliance killed; "
          f"all {COUNT} reconnected {reconnected:.1f} s after it listened again; "
          f"{total} events, all acknowledged and stored once {delivered:.1f} s after it; "
          f"{summary['connects']} connections in all")
