"""A year of a practice's evidence, time compressed: bytes per host-year
on disk and the time to verify the year, in one run.

The practice: ``--hosts`` Windows hosts (default 50: a domain controller,
one server in ten, workstations), swept at the windows-baseline's default
intervals (hourly to daily; the engine's rule: a check is due when its
interval has passed since it was last observed, a host's due checks go out
together) with the bundles ``osiris-lab demo`` records
(``bench/evidence/demo-bundles.json``: the real checks' facts, reasons and
policies). Drift: ``--drift-per-day`` changes per host per day at random
times (default 3); a drifted check fails at its next sweep, is healed (a
``healing_attempt`` bundle) and verified (a one-check ``sweep``). Every
observation carries its own time and duration. Bundles are appended as the
agent does, in group commits, with a signed checkpoint every 5 simulated
minutes (``evidence.checkpoint_interval``), through the current storage
(bodies packed into compressed segments as the log grows).

Measured: the log's bytes on disk (file plus WAL) per host-year, the
verification of the whole year through its checkpoints (every leaf rehashed
from its content, every checkpoint root and signature; ``osiris evidence
verify --fast``) and with every bundle's signature (``osiris evidence
verify``); for comparison, the first ``--legacy-days`` days again in the
layout before segments (a row per body), scaled to a year.

Targets: <= 100 MB per host-year (six years of 50 hosts in <= 30 GB) and
the year verified in <= 60 s.

    .venv/bin/python bench/evidence-growth/run.py [--hosts 50] [--days 365] [--dir DIR] [--jobs N]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from osiris.evidence.bundle import new_bundle_id
from osiris.evidence.canonical import canonical
from osiris.evidence.keys import load_or_create
from osiris.evidence.log import LOG_NAME, EvidenceLog
from osiris.evidence.verify import verify_log

DEMO = Path(__file__).resolve().parents[1] / "evidence" / "demo-bundles.json"
TARGET_BYTES = 100_000_000  # per host-year
TARGET_VERIFY_S = 60.0
CHECKPOINT_EVERY = 300.0
TICK = 5.0
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
CHAIN = ("log", "prev", "recorded_at", "seq")


class Prepared(dict):
    """A statement whose canonical text (with the chain members' placeholders)
    is made by the C JSON encoder: the demo's content is in the subset where
    that is byte-for-byte RFC 8785 (checked against the library at start)."""

    def __init__(self, members: dict):
        super().__init__(members)
        self.template = json.dumps(
            {**members, **{c: f"\x00osiris-chain:{c}\x00" for c in CHAIN}}, sort_keys=True,
            separators=(",", ":"), ensure_ascii=False).encode()

    def fill(self, **chain: bytes) -> bytes:
        body = self.template
        for name, value in chain.items():
            body = body.replace(canonical(f"\x00osiris-chain:{name}\x00"), value, 1)
        return body


def stamp(t: float) -> str:
    return (START + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Host:
    def __init__(self, name: str, role: str, full: dict, rnd: random.Random):
        self.name, self.role = name, role
        self.base = {k: full[k] for k in ("v", "type", "site", "appliance", "agent", "scrubbed")}
        self.target = {**full["payload"]["target"], "name": name, "address": f"{name}.clinic.example"}
        self.obs = {o["check"]: o for o in full["payload"]["observations"]}
        self.policy = full["policy"]["checks"]
        self.checks = [(c, float(self.policy[c]["interval"])) for c in self.obs if c in self.policy]
        self.last: dict[str, float] = {}
        self.failing: dict[str, int] = {}
        self.rnd = rnd

    def next_due(self) -> float:
        return min(self.last.get(c, -1e18) + iv for c, iv in self.checks)

    def statement(self, kind: str, t: float, observations: list, policy: dict, origin: str = "sweep") -> Prepared:
        return Prepared({**self.base, "id": new_bundle_id(), "kind": kind, "host": self.name,
                         "policy": {"checks": policy},
                         "payload": {"target": self.target, "origin": origin, "observations": observations}})

    def observe(self, cid: str, t: float, *, failing: int | None = None) -> dict:
        o = dict(self.obs[cid])
        o["observed_at"] = stamp(t)
        o["duration_ms"] = round(self.rnd.uniform(5, 900), 3)
        if failing is not None:
            o["status"] = "fail"
            o["reason"] = f"setting changed on the host (drift {failing})"
            o["facts"] = {**o["facts"], "drift": failing}
        return o

    def sweep(self, t: float) -> list[Prepared]:
        """One sweep of the due checks: one batched round trip (the windows
        executor's), so their observation times differ by milliseconds."""
        due = [c for c, iv in self.checks if self.last.get(c, -1e18) + iv <= t]
        obs, done = [], t + self.rnd.uniform(0.5, 3.0)
        for c in due:
            at = done + self.rnd.uniform(0, 0.05)
            obs.append(self.observe(c, at, failing=self.failing.get(c)))
            self.last[c] = at
        out = [self.statement("sweep", t, obs, {c: self.policy[c] for c in due})]
        return out

    def heal(self, t: float, cid: str, n: int, heal_tpl: dict) -> list[Prepared]:
        """What the ladder records for a drift it heals at L1: the attempt, and
        the sweep that verified it."""
        del self.failing[cid]
        attempt = Prepared({**self.base, "id": new_bundle_id(), "kind": "healing_attempt", "host": self.name,
                            "policy": heal_tpl["policy"],
                            "payload": {**heal_tpl["payload"], "check": cid, "incident": n,
                                        "target": self.name}})
        verify = self.statement("sweep", t, [self.observe(cid, t + 1.0)], {cid: self.policy[cid]}, "verify")
        self.last[cid] = t + 1.0
        return [attempt, verify]


def practice(n: int, demo: dict, rnd: random.Random) -> list[Host]:
    hosts = [Host("dc01", "dc", demo["full"]["dc"], rnd)]
    servers = max(1, n // 10)
    hosts += [Host(f"srv{i:02d}", "server", demo["full"]["server"], rnd) for i in range(1, servers)]
    hosts += [Host(f"ws{i:02d}", "workstation", demo["full"]["workstation"], rnd) for i in range(1, n - servers + 1)]
    return hosts[:n]


def build(path: Path, key, hosts: list[Host], days: float, drift_per_day: float, heal_tpl: dict,
          rnd: random.Random, *, pack: bool = True, progress: bool = True) -> dict:
    log = EvidenceLog(path, origin="osiris.evidence/bench-practice/appliance", verify_key=key.verify_key,
                      pack=pack)
    end = days * 86400
    events: list[tuple[float, int, str, int]] = []
    seq = 0
    for i in range(len(hosts)):
        heapq.heappush(events, (rnd.uniform(0, 60), seq, "sweep", i))
        seq += 1
        heapq.heappush(events, (rnd.expovariate(drift_per_day / 86400), seq, "drift", i))
        seq += 1
    pending: list[Prepared] = []
    next_cp = CHECKPOINT_EVERY
    counts = {"sweep": 0, "healing_attempt": 0, "observations": 0, "raw_bytes": 0, "drifts": 0}
    incident = 0
    last_report = time.perf_counter()

    def flush(at: float) -> None:
        for j in range(0, len(pending), 512):
            log.append(pending[j:j + 512], key, now=START + timedelta(seconds=at))
        pending.clear()

    while events:
        t, _, kind, i = heapq.heappop(events)
        while t >= next_cp:
            if pending:
                flush(next_cp)
                log.checkpoint(key, START + timedelta(seconds=next_cp))
            next_cp += CHECKPOINT_EVERY
        if t >= end:
            break
        h = hosts[i]
        if kind == "drift":
            cid = rnd.choice(h.checks)[0]
            if cid not in h.failing:
                incident += 1
                h.failing[cid] = incident
                counts["drifts"] += 1
            heapq.heappush(events, (t + rnd.expovariate(drift_per_day / 86400), seq, "drift", i))
            seq += 1
            continue
        noticed = [c for c in h.failing if h.last.get(c, -1e18) + dict(h.checks)[c] <= t]
        out = h.sweep(t)
        for c in noticed:
            out += h.heal(t + 30.0, c, h.failing[c], heal_tpl)
        for st in out:
            counts[st["kind"]] += 1
            counts["observations"] += len(st["payload"].get("observations") or [])
            counts["raw_bytes"] += len(st.template)
        pending.extend(out)
        nxt = max(t + TICK, h.next_due())
        heapq.heappush(events, (nxt - nxt % TICK + TICK, seq, "sweep", i))
        seq += 1
        if progress and time.perf_counter() - last_report > 30:
            last_report = time.perf_counter()
            print(f"  ... day {t / 86400:.0f}: {log.size():,} bundles", file=sys.stderr, flush=True)
    if pending:
        flush(end)
    log.checkpoint(key, START + timedelta(seconds=end))
    storage = log.storage()
    counts["entries"] = log.size()
    log.close()
    return {**counts, **storage}


def timed_verify(path: Path, *, signatures: bool, jobs: int):
    log = EvidenceLog(path, create=False)
    t = time.perf_counter()
    report = verify_log(log, signatures=signatures, jobs=jobs)
    elapsed = time.perf_counter() - t
    log.close()
    if not report.ok:
        raise SystemExit(f"bench/evidence-growth: the year does not verify: {report.summary()}")
    return elapsed, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--days", type=float, default=365.0)
    ap.add_argument("--drift-per-day", type=float, default=3.0, help="changes per host per day")
    ap.add_argument("--legacy-days", type=float, default=14.0,
                    help="days built again in the layout before segments, for comparison")
    ap.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 4))
    ap.add_argument("--dir", type=Path, help="keep the logs here (default: a temporary directory)")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()

    demo = json.loads(DEMO.read_text())
    for st in demo["full"].values():  # the C encoder is RFC 8785 for this content
        members = {k: v for k, v in st.items() if k not in CHAIN}
        filled = Prepared(members).fill(log=b'"x"', prev=b'"y"', recorded_at=b'"z"', seq=b"0")
        assert filled == canonical({**members, "log": "x", "prev": "y", "recorded_at": "z", "seq": 0})
    tmp = tempfile.TemporaryDirectory(prefix="osiris-bench-growth-")
    work = args.dir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    key = load_or_create(work / "keys")
    year = args.days / 365.0

    print(f"building {args.days:g} days of {args.hosts} hosts...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    path = work / "packed" / LOG_NAME
    if path.exists():
        raise SystemExit(f"bench/evidence-growth: {path} exists; give an empty --dir")
    got = build(path, key, practice(args.hosts, demo, random.Random(args.seed)), args.days, args.drift_per_day,
                demo["healing_attempt"], random.Random(args.seed))
    build_s = time.perf_counter() - t0
    print(f"building {args.legacy_days:g} days in the layout before segments...", file=sys.stderr, flush=True)
    legacy = build(work / "legacy" / LOG_NAME, key, practice(args.hosts, demo, random.Random(args.seed)),
                   args.legacy_days, args.drift_per_day, demo["healing_attempt"], random.Random(args.seed),
                   pack=False, progress=False)
    print("verifying...", file=sys.stderr, flush=True)
    fast_s, fast = timed_verify(path, signatures=False, jobs=args.jobs)
    full_s, full = timed_verify(path, signatures=True, jobs=args.jobs)

    host_years = args.hosts * year
    per_host_year = got["file_bytes"] / host_years
    legacy_per_host_year = legacy["file_bytes"] / (args.hosts * args.legacy_days / 365.0)
    fast_year = fast_s / year
    full_year = full_s / year
    rows = [
        ("bundles (sweeps, healing attempts)", f"{got['entries']:,}",
         f"{got['sweep']:,} sweeps, {got['healing_attempt']:,} healing attempts, {got['drifts']:,} drifts"),
        ("observations", f"{got['observations']:,}", f"{got['observations'] / host_years / 365:,.0f} per host-day"),
        ("signed bytes (canonical JSON)", f"{got['raw_bytes'] / 1e9:,.2f} GB",
         f"{got['raw_bytes'] / max(got['entries'], 1):,.0f} B per bundle"),
        ("on disk, segments (file + WAL)", f"{got['file_bytes'] / 1e9:,.3f} GB",
         f"{got['segments']:,} segments, {got['segment_raw_bytes'] / max(got['segment_bytes'], 1):.1f} x "
         f"compressed; {got['inline_entries']:,} bundles in the tail"),
        ("  per host-year", f"{per_host_year / 1e6:,.1f} MB",
         f"{per_host_year * args.hosts * 6 / 1e9:,.1f} GB for six years of {args.hosts} hosts"),
        (f"  before segments (first {args.legacy_days:g} days, scaled)", f"{legacy_per_host_year / 1e6:,.1f} MB",
         f"{legacy_per_host_year / per_host_year:.1f} x the segments' per host-year"),
        (f"verify through checkpoints ({args.jobs} processes)", f"{fast_s:,.1f} s",
         f"{fast.checkpoints:,} checkpoints, {fast.entries:,} entries; {fast_year:,.1f} s per year"),
        ("verify every signature", f"{full_s:,.1f} s", f"{full.signatures:,} signatures; {full_year:,.1f} s per year"),
        ("building the year (generate, sign, append, pack)", f"{build_s:,.0f} s", ""),
    ]
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    print(f"\nbench/evidence-growth: {args.hosts} hosts, {args.days:g} days, {args.drift_per_day:g} drifts per "
          "host-day, checkpoint every 300 s")
    for name, value, note in rows:
        print(f"  {name.ljust(w)}  {value.rjust(v)}  {note}")
    met_bytes = per_host_year <= TARGET_BYTES
    met_verify = fast_year <= TARGET_VERIFY_S
    print("targets:")
    print(f"  <= {TARGET_BYTES / 1e6:g} MB per host-year: {per_host_year / 1e6:,.1f} MB -> "
          f"{'met' if met_bytes else 'MISSED'}")
    print(f"  the year verified in <= {TARGET_VERIFY_S:g} s (through checkpoints): {fast_year:,.1f} s -> "
          f"{'met' if met_verify else 'MISSED'} (every signature: {full_year:,.1f} s)")
    print(json.dumps({
        "bench": "evidence-growth", "hosts": args.hosts, "days": args.days, "drift_per_host_day": args.drift_per_day,
        "bundles": got["entries"], "observations": got["observations"], "signed_bytes": got["raw_bytes"],
        "file_bytes": got["file_bytes"],
        "bytes_per_host_year": {"value": round(per_host_year), "target": TARGET_BYTES, "met": met_bytes},
        "legacy_bytes_per_host_year": round(legacy_per_host_year),
        "verify_year_s": {"value": round(fast_year, 2), "target": TARGET_VERIFY_S, "met": met_verify,
                          "jobs": args.jobs},
        "verify_year_all_signatures_s": round(full_year, 2),
        "build_s": round(build_s, 1),
    }))
    tmp.cleanup()


if __name__ == "__main__":
    main()
