"""The lab's endpoint faults against a real appliance: a fleet of real
endpoint agents (``python -m osiris_lab.fleet``, its own process, real
gRPC and mutual TLS) whose sends are duplicated or reordered, whose clock
is off, or that is paused (SIGSTOP) past its silence allowance. Whatever
the fault, every event an endpoint queued ends up acknowledged and in the
appliance's store exactly once; a clock ahead by more than
``max_clock_skew`` gets a status that says so."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from osiris_endpoint.queue import Queue

from .helpers import until

pytestmark = pytest.mark.slow

COUNT = 3


class Fleet:
    """``python -m osiris_lab.fleet`` for one appliance, in its own process."""

    def __init__(self, app, directory: Path, *faults: str, samples: int = 12, interval: float = 0.1):
        self.app, self.dir = app, directory
        self.argv = [sys.executable, "-m", "osiris_lab.fleet", "--dir", str(directory), "--count", str(COUNT),
                     "--token", app.token(uses=COUNT), "--samples", str(samples), "--check-interval", str(interval),
                     "--backoff", "0.05", "--backoff-cap", "0.5", "--timeout", "120", *faults]
        self.log = directory.with_suffix(".log")
        self.p: asyncio.subprocess.Process | None = None

    async def start(self) -> Fleet:
        env = {k: v for k, v in os.environ.items() if k != "OSIRIS_CONFIG"}
        self.p = await asyncio.create_subprocess_exec(*self.argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                      stderr=open(self.log, "wb"))
        return self

    async def result(self) -> dict:
        out, _ = await asyncio.wait_for(self.p.communicate(), 180)
        assert self.p.returncode == 0, self.log.read_text()[-3000:]
        summary = json.loads(out.decode().strip().splitlines()[-1])
        assert summary["complete"] and summary["dropped"] == 0 and summary["endpoints"] == COUNT
        return summary

    async def stop(self) -> None:
        if self.p is not None and self.p.returncode is None:
            self.p.send_signal(signal.SIGCONT)
            self.p.kill()
            await self.p.wait()

    def exactly_once(self, summary: dict) -> int:
        """Every queued event is in the store once; how many there are."""
        total = 0
        for name, queue_id in sorted(summary["queues"].items()):
            q = Queue(self.dir / name / "queue.sqlite3")
            try:
                last = q.last_seq()
                assert q.acked == last and q.depth() == 0 and q.queue_id == queue_id
            finally:
                q.close()
            rows = self.app.observations("report_id LIKE ?", (f"endpoint/{name}/{queue_id}/%",))
            assert sorted(int(r["report_id"].rsplit("/", 1)[1]) for r in rows) == list(range(1, last + 1))
            assert last > 0
            total += last
        assert total == summary["queued"]
        return total


@pytest.fixture
async def fleet(tmp_path):
    made = []

    async def make(app, *faults: str, **kw) -> Fleet:
        f = await Fleet(app, tmp_path / f"fleet{len(made)}", *faults, **kw).start()
        made.append(f)
        return f

    yield make
    for f in made:
        await f.stop()


async def test_duplicated_sends_are_stored_once(appliance, fleet):
    app = await appliance()
    f = await fleet(app, "--duplicate", "2")
    summary = await f.result()
    assert summary["duplicated"] > 0
    assert app.service.counts["duplicates"] > 0  # the appliance saw them, and
    f.exactly_once(summary)  # stored each event once
    assert not any(s.startswith("INVALID_ARGUMENT") for s in summary["statuses"])


async def test_reordered_sends_are_stored_once_and_acknowledged_in_order(appliance, fleet):
    app = await appliance()
    f = await fleet(app, "--reorder", "2")
    summary = await f.result()
    assert summary["reordered"] > 0
    f.exactly_once(summary)
    assert not any(s.startswith("INVALID_ARGUMENT") for s in summary["statuses"])


async def test_a_clock_off_from_the_start_is_corrected_by_welcome(appliance, fleet):
    app = await appliance()
    f = await fleet(app, "--clock-skew", "3600")
    summary = await f.result()
    f.exactly_once(summary)
    assert not any(s.startswith("INVALID_ARGUMENT") for s in summary["statuses"])
    # Stamped an hour ahead by the endpoint, stored at the appliance's time.
    latest = max(r["observed_at"] for r in app.observations("report_id LIKE 'endpoint/ep%'"))
    assert latest < time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 600)), latest


async def test_a_clock_step_within_max_clock_skew_is_accepted(appliance, fleet):
    app = await appliance()  # max_clock_skew: 300 s
    f = await fleet(app, "--clock-step", "120")
    summary = await f.result()
    f.exactly_once(summary)
    assert not any(s.startswith("INVALID_ARGUMENT") for s in summary["statuses"]), summary["statuses"]
    assert app.service.counts["refused"] == 0


async def test_a_clock_step_beyond_max_clock_skew_is_refused_by_name_then_delivered(appliance, fleet, caplog):
    caplog.set_level(logging.WARNING, logger="osiris.endpoints")
    app = await appliance()
    f = await fleet(app, "--clock-step", "600")
    summary = await f.result()
    named = re.compile(r"INVALID_ARGUMENT: event seq \d+: observed_at_ms is (59\d|60\d) s in the future \(at most 300 "
                       r"s; correct by Welcome's server_time_ms\)")
    # The appliance refused each endpoint's first stepped batch, saying why.
    refused = {}
    for r in caplog.records:
        m = re.fullmatch(r"endpoints: refused endpoint '(ep\d+)': (.*)", r.getMessage())
        if m and m.group(2).startswith("INVALID_ARGUMENT"):
            assert named.fullmatch(m.group(2)), m.group(2)
            refused[m.group(1)] = m.group(2)
    assert set(refused) == {f"ep{i:04d}" for i in range(COUNT)}
    # An endpoint reads that status, unless it was writing as the call ended
    # (grpc then reports its own INTERNAL for the write).
    for s in summary["statuses"]:
        assert named.fullmatch(s) or not s.startswith("INVALID_ARGUMENT"), s
    # Reconnected, the endpoint corrects by the new Welcome: nothing lost, nothing twice.
    f.exactly_once(summary)


async def test_a_paused_endpoint_is_not_reporting_then_delivers_everything(appliance, fleet):
    app = await appliance()  # heartbeat 1 s, silence_allowance 3 s
    f = await fleet(app, samples=40, interval=0.2)
    await until(lambda: len([n for n in app.service.streams if n.startswith("ep")]) == COUNT,
                what="every endpoint's stream")
    os.kill(f.p.pid, signal.SIGSTOP)
    try:
        def not_reporting() -> set[str]:
            return {r["target"] for r in app.observations("check_id = 'endpoints.reporting' AND status = 'fail'")}

        names = {f"ep{i:04d}" for i in range(COUNT)}
        await until(lambda: names <= not_reporting(), timeout=120, what="the paused endpoints to be not reporting")
    finally:
        os.kill(f.p.pid, signal.SIGCONT)
    summary = await f.result()
    f.exactly_once(summary)
    # Back, each is reporting again.
    latest = {r["target"]: r["status"] for r in app.observations("check_id = 'endpoints.reporting'")}
    assert {latest[n] for n in names} == {"pass"}
