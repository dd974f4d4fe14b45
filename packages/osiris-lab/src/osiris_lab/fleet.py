"""Simulated endpoint agents at scale: many real endpoint agents
(``osiris_endpoint.agent.EndpointAgent``, real gRPC, real TLS) in one
process, each running the appliance's catalogue against an emulated host
of its own, for tests, chaos and ``bench/ingest``.

Each agent reports a new sample number with every run of its checks, so
every run queues one event per check, until it has queued ``samples``
runs' worth; then it keeps streaming until the appliance has acknowledged
everything it queued::

    python -m osiris_lab.fleet --dir D --count 100 --token TOKEN --samples 20 --json

prints one JSON line: endpoints, events queued, acknowledged, dropped,
connections made, seconds, the faults made and the distinct statuses the
streams ended with. Restarted on the same ``--dir`` (after a kill), it
picks up each endpoint's identity and queue where they were. Faults
(``osiris_lab.endpoint_faults``): ``--clock-skew S``, ``--clock-step S``,
``--duplicate N``, ``--reorder N``; pause it with SIGSTOP and SIGCONT.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from osiris_endpoint.agent import enrol
from osiris_endpoint.host import Check, Result
from osiris_endpoint.identity import EnrolError

from .endpoint import EmulatedHost
from .endpoint_faults import Clock, FaultyAgent, Faults
from .state import HostState


class SampledHost:
    """An emulated host whose runs each carry a new ``sample`` fact (up to
    ``limit`` runs; after that the last results again, which queue nothing),
    stamped by the machine's ``clock``; it samples once ``ready`` is set."""

    def __init__(self, name: str, role: str = "workstation", limit: int = 10, clock: Clock | None = None,
                 ready: asyncio.Event | None = None):
        self.inner = EmulatedHost(SimpleNamespace(name=name, role=role, state=HostState(name, role)))
        self.limit, self.n = limit, 0
        self.clock = clock or Clock()
        self.ready = ready
        self.last: list[Result] = []

    async def run(self, checks: Sequence[Check]) -> list[Result]:
        if self.ready is not None and not self.ready.is_set():
            return []
        if self.n >= self.limit and self.last:
            return self.last
        self.n += 1
        results = await self.inner.run(checks)
        now = self.clock()
        self.last = [dataclasses.replace(r, observed_at=now, facts={**r.facts, "sample": self.n})
                     if r.facts is not None else dataclasses.replace(r, observed_at=now) for r in results]
        return self.last


def done(agent: FaultyAgent, host: SampledHost) -> bool:
    q = agent.queue
    return host.n >= host.limit and q.depth() == 0 and q.acked == q.last_seq()


async def run_fleet(args: argparse.Namespace) -> dict:
    root = Path(args.dir)
    names = [f"{args.prefix}{i:04d}" for i in range(args.count)]
    sem = asyncio.Semaphore(args.enrol_concurrency)

    async def enrolled(name: str) -> None:
        if (root / name / "identity.json").exists():
            return
        async with sem:
            for attempt in range(20):
                try:
                    await enrol(root / name, args.token, name, args.role)
                    return
                except EnrolError as exc:
                    if "RESOURCE_EXHAUSTED" not in str(exc) and "cannot reach" not in str(exc):
                        raise
                    await asyncio.sleep(random.uniform(0, min(5.0, 0.2 * 2 ** attempt)))
            raise EnrolError(f"{name}: could not enrol")

    await asyncio.gather(*(enrolled(n) for n in names))
    started = time.monotonic()
    stop = asyncio.Event()
    fleet = []
    faults = Faults(skew=args.clock_skew, step=args.clock_step, duplicate=args.duplicate, reorder=args.reorder)
    for name in names:
        clock, stepped = Clock(faults.skew), asyncio.Event()
        host = SampledHost(name, args.role, args.samples, clock, stepped)
        agent = FaultyAgent(root / name, host, check_interval=args.check_interval, backoff=args.backoff,
                            backoff_cap=args.backoff_cap, refresh=1e9,
                            address=f"127.0.0.1:{args.stream_port}" if args.stream_port else None,
                            faults=faults, clock=clock, stepped=stepped)
        fleet.append((agent, host))
    tasks = [asyncio.create_task(agent.run(stop)) for agent, _host in fleet]
    deadline = time.monotonic() + args.timeout
    while not all(done(a, h) for a, h in fleet) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    complete = all(done(a, h) for a, h in fleet)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    out = {
        "endpoints": len(fleet),
        "queued": sum(a.queue.last_seq() for a, _ in fleet),
        "acked": sum(a.queue.acked for a, _ in fleet),
        "dropped": sum(a.queue.dropped for a, _ in fleet),
        "connects": sum(a.connects for a, _ in fleet),
        "seconds": round(time.monotonic() - started, 3),
        "complete": complete,
        "duplicated": sum(a.duplicated for a, _ in fleet),
        "reordered": sum(a.reordered for a, _ in fleet),
        "statuses": sorted({f"{code}: {details}" for a, _ in fleet for code, details in a.statuses})[:50],
        "queues": {a.identity.name: a.queue.queue_id for a, _ in fleet},
    }
    for a, _ in fleet:
        a.close()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m osiris_lab.fleet", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--token", required=True, help="an enrolment token with --uses COUNT or more")
    p.add_argument("--prefix", default="ep")
    p.add_argument("--role", default="workstation")
    p.add_argument("--samples", type=int, default=10, help="check runs per endpoint that queue events")
    p.add_argument("--check-interval", type=float, default=0.5)
    p.add_argument("--backoff", type=float, default=0.2)
    p.add_argument("--backoff-cap", type=float, default=5.0)
    p.add_argument("--stream-port", type=int, default=0, help="connect here instead (a proxy in between)")
    p.add_argument("--enrol-concurrency", type=int, default=20)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--clock-skew", type=float, default=0.0, help="the endpoints' clocks are S seconds ahead (-S: behind)")
    p.add_argument("--clock-step", type=float, default=0.0,
                   help="each endpoint's clock jumps S seconds right after its first Welcome; it samples after that")
    p.add_argument("--duplicate", type=int, default=0, help="every Nth batch is sent twice, with the one before it")
    p.add_argument("--reorder", type=int, default=0, help="every Nth batch is held back behind the next one")
    args = p.parse_args(argv)
    out = asyncio.run(run_fleet(args))
    print(json.dumps(out), flush=True)
    sys.exit(0 if out["complete"] else 1)


if __name__ == "__main__":
    main()
