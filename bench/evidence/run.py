"""The evidence log's speed, beside OpenSSL's on the same machine, in one run.

Measured, in this order:

* ``openssl speed ed25519`` (signs/s and verifies/s, one core) and
  ``openssl speed -evp sha256`` at the size of a typical bundle (hashes/s),
  before everything else and again after (the ratios use the mean);
* appends: prepared, distinct sweep bundles appended to a fresh log in
  group commits of 512 (canonical JSON, Ed25519 signature, leaf and tree
  nodes, one transaction and one WAL fsync per group: signed and durable);
* records end to end: 64 concurrent ``EvidenceService.record`` calls at a
  time (PHI scrubbing, building, the writer task's group commit);
* a log of ``--entries`` bundles (default 1,000,000; checkpoint every
  1,000), built through the same append path, or reused with ``--dir``;
* verifying that log through its checkpoints (``verify_log(signatures=False)``:
  every leaf rehashed from its content, every checkpoint root recomputed,
  consistency proofs checked, signatures only after the last checkpoint),
  with leaf hashing spread over the machine's cores (at most 4), and in one
  process, alternately twice each, the better of each;
* per-bundle signature checks on a sample, one by one, as an auditor would.

Then the ratios against OpenSSL and the targets (at least 10,000 appends/s;
a 1,000,000-entry log verified in at most 5 s through checkpoints).

    .venv/bin/python bench/evidence/run.py [--entries 1000000] [--dir /var/tmp/osiris-bench] [--seconds 3]

Building the million-entry log takes a couple of minutes; ``--dir`` keeps it
for the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from osiris.config import SiteSettings
from osiris.evidence.bundle import Identity, Statement, build_statement, new_bundle_id
from osiris.evidence.keys import SigningKey, load_or_create
from osiris.evidence.log import LOG_NAME, EvidenceLog
from osiris.evidence.scrub import Scrubber
from osiris.evidence.service import EvidenceService
from osiris.evidence.settings import EvidenceSettings
from osiris.evidence.verify import check_statement, verify_log

TARGET_APPENDS = 10_000
TARGET_VERIFY_1M = 5.0
ORIGIN = "osiris.evidence/bench-site/appliance"
IDENTITY = Identity("bench-site", "Bench Practice", "appliance", "0.1.0", "1.1",
                    {"appliance-selfcheck": "0.1.0", "windows": "0.1.0", "evidence-local": "0.1.0"})


def sweep_payload(i: int) -> dict:
    """What a sweep of one Windows host looks like (two checks)."""
    return {
        "target": {"name": f"ws{i % 40:02d}", "kind": "windows", "role": "workstation", "address": f"10.0.1.{i % 200}"},
        "observations": [
            {"check": "windows.firewall.profiles_enabled", "status": "pass", "reason": "all three profiles on",
             "facts": {"domain": True, "private": True, "public": True}, "observed_at": "2024-05-01T10:22:30Z",
             "duration_ms": 12.5 + i % 7},
            {"check": "windows.updates.installed", "status": "fail" if i % 11 == 0 else "pass",
             "reason": f"{i % 3} security updates missing", "facts": {"missing": ["KB5034441"][: i % 2],
                                                                    "build": "10.0.19045.3803"},
             "observed_at": "2024-05-01T10:22:31Z", "duration_ms": 40.25},
        ],
    }


DEMO = Path(__file__).with_name("demo-bundles.json")


def demo_sweeps() -> list[dict]:
    """The demo's full sweeps (a DC, a server, a workstation, every check:
    about 52 KB each, the largest bundles the agent writes), without their
    chain members."""
    full = json.loads(DEMO.read_text())["full"]
    return [{k: v for k, v in full[role].items() if k not in ("log", "seq", "prev", "recorded_at")}
            for role in sorted(full)]


class Statements:
    """Distinct bundle statements, cheaply: one built (scrubbed, checked)
    template per variant, then a fresh id and sweep counter for each.
    ``demo``: the demo's full sweeps instead of two-check ones."""

    def __init__(self, demo: bool = False) -> None:
        scrubber = Scrubber()
        if demo:
            self.templates = [Statement(st) for st in demo_sweeps()]
            return
        self.templates = [build_statement(IDENTITY, scrubber, "sweep", sweep_payload(i), host=f"ws{i:02d}",
                                          policy={"checks": {}}) for i in range(64)]

    def make(self, i: int) -> Statement:
        t = self.templates[i % len(self.templates)]
        return t.replace(id=new_bundle_id(), payload={**t["payload"], "sweep": i})


def openssl_speed(seconds: int, nbytes: int) -> dict[str, float]:
    out = subprocess.run(["openssl", "speed", "-seconds", str(seconds), "ed25519"], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r"Ed25519\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", out)
    if not m:
        raise SystemExit(f"bench/evidence: cannot read `openssl speed ed25519`:\n{out}")
    sha = subprocess.run(["openssl", "speed", "-seconds", str(seconds), "-bytes", str(nbytes), "-evp", "sha256"],
                         capture_output=True, text=True, check=True).stdout
    k = re.search(r"^sha256\s+([\d.]+)k", sha, re.M)
    if not k:
        raise SystemExit(f"bench/evidence: cannot read `openssl speed -evp sha256`:\n{sha}")
    return {"sign": float(m.group(1)), "verify": float(m.group(2)),
            "sha256": float(k.group(1)) * 1000 / nbytes}


def bench_appends(workdir: Path, key: SigningKey, gen: Statements, n: int) -> float:
    log = EvidenceLog(workdir / "appends" / LOG_NAME, origin=ORIGIN, verify_key=key.verify_key)
    batches = [[gen.make(i) for i in range(j, min(n, j + 512))] for j in range(0, n, 512)]
    start = time.perf_counter()
    for batch in batches:
        log.append(batch, key)
    elapsed = time.perf_counter() - start
    assert log.size() == n
    log.close()
    return n / elapsed


async def bench_records(workdir: Path, n: int, demo: bool = False) -> tuple[float, int]:
    ctx = SimpleNamespace(state_dir=workdir / "service", site=SiteSettings(id="bench-site", appliance="appliance"),
                          agent_version="0.1.0", registry=None)
    svc = EvidenceService.open(ctx, EvidenceSettings())
    sem = asyncio.Semaphore(64)
    sweeps = demo_sweeps() if demo else []

    async def one(i: int) -> None:
        async with sem:
            if demo:
                st = sweeps[i % len(sweeps)]
                await svc.record("sweep", {**st["payload"], "sweep": i}, host=st["host"], policy=st["policy"])
            else:
                await svc.record("sweep", sweep_payload(i), host=f"ws{i % 40:02d}")

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    batches = svc.batches
    await svc.close()
    return n / elapsed, batches


def build_big_log(path: Path, key: SigningKey, gen: Statements, n: int, every: int) -> float:
    log = EvidenceLog(path, origin=ORIGIN, verify_key=key.verify_key)
    have = log.size()
    start = time.perf_counter()
    i = have
    while i < n:
        k = min(512, n - i, every - i % every)
        log.append([gen.make(j) for j in range(i, i + k)], key)
        i += k
        if i % every == 0:
            log.checkpoint(key)
        if i % 100_000 < k:
            print(f"  ... {i:,} entries", file=sys.stderr, flush=True)
    log.checkpoint(key)
    rate = (n - have) / (time.perf_counter() - start) if n > have else 0.0
    log.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", choices=["small", "demo"], default="small",
                    help="small: two-check sweeps (~1 KB); demo: the demo's full sweeps (~52 KB, every check)")
    ap.add_argument("--entries", type=int, help="size of the log to verify (default 1,000,000; demo 50,000)")
    ap.add_argument("--appends", type=int, help="bundles for the append measurement (default 30,000; demo 3,000)")
    ap.add_argument("--records", type=int, help="bundles end to end (default 10,000; demo 1,000)")
    ap.add_argument("--checkpoint-every", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=5000, help="signatures checked one by one")
    ap.add_argument("--seconds", type=int, default=3, help="duration of each openssl speed run")
    ap.add_argument("--dir", type=Path, help="keep the big log here and reuse it (default: a temporary dir)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="osiris-bench-evidence-")
    workdir = Path(tmp.name)
    keep = args.dir or workdir
    keep.mkdir(parents=True, exist_ok=True)
    key = load_or_create(keep / "keys")
    demo = args.bundles == "demo"
    args.entries = args.entries or (50_000 if demo else 1_000_000)
    args.appends = args.appends or (3_000 if demo else 30_000)
    args.records = args.records or (1_000 if demo else 10_000)
    gen = Statements(demo)

    print(f"openssl speed ({args.seconds} s each)...", file=sys.stderr, flush=True)
    probe = EvidenceLog(workdir / "probe" / LOG_NAME, origin=ORIGIN, verify_key=key.verify_key)
    probe.append([gen.make(0)], key)
    body_size = len(probe.entry(0).body)
    probe.close()
    ossl = openssl_speed(args.seconds, body_size)

    print(f"appending {args.appends:,} bundles...", file=sys.stderr, flush=True)
    appends = bench_appends(workdir, key, gen, args.appends)
    print(f"recording {args.records:,} bundles end to end...", file=sys.stderr, flush=True)
    records, batches = asyncio.run(bench_records(workdir, args.records, demo))

    big = keep / "big" / LOG_NAME
    print(f"building a {args.entries:,}-entry log in {big.parent} (reused if there)...", file=sys.stderr, flush=True)
    build_rate = build_big_log(big, key, gen, args.entries, args.checkpoint_every)

    log = EvidenceLog(big, create=False)
    jobs = min(os.cpu_count() or 1, 4)
    report = single = None
    # Alternately, twice each, the best of each: the first pass also pays
    # for reading the file into the page cache, which is not the verifier's
    # speed (and was always charged to the multi-process figure).
    times: dict[int, list[float]] = {jobs: [], 1: []}
    for n in (jobs, 1, jobs, 1):
        start = time.perf_counter()
        got = verify_log(log, signatures=False, jobs=n)
        times[n].append(time.perf_counter() - start)
        report, single = (got, single) if n == jobs else (report, got)
    verify_s, verify_1 = min(times[jobs]), min(times[1])
    assert single.ok
    if not report.ok:
        raise SystemExit(f"bench/evidence: the log does not verify: {report.summary()}")

    rnd = random.Random(1)
    sample = sorted(rnd.sample(range(report.entries), min(args.sample, report.entries)))
    entries = [(log.entry(i), log.entry(i - 1).leaf if i else bytes(32)) for i in sample]
    start = time.perf_counter()
    for e, prev in entries:
        check_statement(e.body, e.sig, key.verify_key, index=e.index, prev=prev, origin=ORIGIN,
                        bundle_id=e.bundle_id, kind=e.kind, recorded_at=e.recorded_at)
    sigs = len(entries) / (time.perf_counter() - start)
    log.close()
    # OpenSSL again: the machine is shared, so the reference is the mean of
    # a run before and one after everything above.
    print("openssl speed again...", file=sys.stderr, flush=True)
    after = openssl_speed(args.seconds, body_size)
    spread = {k: (min(ossl[k], after[k]), max(ossl[k], after[k])) for k in ossl}
    ossl = {k: (ossl[k] + after[k]) / 2 for k in ossl}

    per_entry = verify_s / report.entries
    scaled_1m = per_entry * 1_000_000
    rows = [
        ("openssl speed ed25519: sign", f"{ossl['sign']:,.0f}/s", "mean of %s and %s" % tuple(
            f"{x:,.0f}" for x in spread["sign"])),
        ("openssl speed ed25519: verify", f"{ossl['verify']:,.0f}/s", "mean of %s and %s" % tuple(
            f"{x:,.0f}" for x in spread["verify"])),
        (f"openssl speed sha256 ({body_size} B)", f"{ossl['sha256']:,.0f}/s", "mean of %s and %s" % tuple(
            f"{x:,.0f}" for x in spread["sha256"])),
        ("appends, signed + durable (groups of 512)", f"{appends:,.0f}/s",
         f"{appends / ossl['sign']:.2f} x openssl signs"),
        ("records end to end (scrub, build, append)", f"{records:,.0f}/s",
         f"{records / ossl['sign']:.2f} x openssl signs; {args.records / batches:.0f} bundles per commit"),
        (f"building the {report.entries:,}-entry log", f"{build_rate:,.0f}/s" if build_rate else "(reused)", ""),
        (f"verify {report.entries:,} entries through {report.checkpoints:,} checkpoints, {jobs} processes",
         f"{verify_s:.2f} s = {report.entries / verify_s:,.0f}/s",
         f"{report.entries / verify_s / ossl['sha256']:.2f} x openssl sha256 (one core)"),
        ("  the same, one process", f"{verify_1:.2f} s = {report.entries / verify_1:,.0f}/s",
         f"{report.entries / verify_1 / ossl['sha256']:.2f} x openssl sha256"),
        ("per-bundle signature checks (sample)", f"{sigs:,.0f}/s", f"{sigs / ossl['verify']:.2f} x openssl verifies"),
    ]
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    rate = report.entries * body_size / verify_s / 1e6
    rows.insert(3, (f"verify throughput ({body_size:,} B bundles)", f"{rate:,.0f} MB/s",
                    "signed bytes rehashed per second"))
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    print(f"\nbench/evidence ({args.bundles} bundles, {body_size:,} B each): {report.summary()}")
    for name, value, ratio in rows:
        print(f"  {name.ljust(w)}  {value.rjust(v)}  {ratio}")
    met_appends = appends >= TARGET_APPENDS if not demo else None
    met_verify = scaled_1m <= TARGET_VERIFY_1M if not demo else None
    if demo:
        print("targets: for small bundles (run without --bundles demo); these figures are reported beside them")
    else:
        print("targets:")
        print(f"  appends >= {TARGET_APPENDS:,}/s: {appends:,.0f}/s -> {'met' if met_appends else 'MISSED'}")
        print(f"  1,000,000 entries verified in <= {TARGET_VERIFY_1M:g} s through checkpoints: "
              f"{scaled_1m:.2f} s{'' if report.entries == 1_000_000 else ' (scaled from ' + format(report.entries, ',') + ')'}"
              f" -> {'met' if met_verify else 'MISSED'}")
    print(json.dumps({
        "bench": "evidence", "bundles": args.bundles, "bundle_bytes": body_size, "entries": report.entries,
        "openssl": {k: round(x) for k, x in ossl.items()},
        "appends_per_s": {"value": round(appends), "target": TARGET_APPENDS if not demo else None, "met": met_appends},
        "records_per_s": round(records),
        "verify_s": {"value": round(verify_s, 2), "jobs": jobs}, "verify_one_process_s": round(verify_1, 2),
        "verify_1m_s": {"value": round(scaled_1m, 2), "target": TARGET_VERIFY_1M if not demo else None,
                        "met": met_verify},
        "verify_mb_per_s": round(report.entries * body_size / verify_s / 1e6),
        "signature_checks_per_s": round(sigs),
    }))
    tmp.cleanup()


if __name__ == "__main__":
    main()
