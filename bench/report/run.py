"""bench/report: the compliance report over a simulated year of 50 hosts.

A year of what the agent writes to its state store for 50 Windows hosts
with 60 checks each (every change of status, hourly coverage with host
outages, incidents healed at L1/L2, by a person or accepted, exceptions)
is laid down, then the report is built and rendered to HTML and PDF.
Figures: time to build, to render HTML, to render PDF, and peak memory for
a month and for the year over the same estate (flat memory: the year's
peak within 1.5x the month's). Target: the year's HTML and PDF in <= 30 s.
The simulation writes its rows with SQL itself (it stands in for a year
of the agent); the report reads them through the store.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

TARGET_S = 30.0
FLAT = 1.5
HOSTS, CHECKS = 50, 60
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
YEAR = timedelta(days=365)


def catalogue():
    from osiris.hipaa import TITLES

    cites = sorted(TITLES)
    return {f"sim.check{i:02d}": SimpleNamespace(title=f"Simulated check {i}", hipaa=(cites[i % len(cites)],),
                                                  interval=3600) for i in range(CHECKS)}


def simulate(state: Path, seed: int = 7) -> dict[str, int]:
    from osiris.store import Store, iso

    rnd = random.Random(seed)
    store = Store(state)
    hosts = [f"host{i:02d}" for i in range(HOSTS)]
    checks = list(catalogue())
    history, incidents, coverage = [], [], []
    t0 = START.timestamp()
    end = (START + YEAR).timestamp()

    def at(ts: float) -> str:
        return iso(datetime.fromtimestamp(ts, timezone.utc))

    outages = {h: [] for h in hosts}
    for h in hosts:  # a few days a year a host is off or unreachable
        for _ in range(rnd.randint(0, 3)):
            s = rnd.uniform(t0, end - 5 * 86400)
            outages[h].append((s, s + rnd.uniform(3600, 3 * 86400)))
    for h in hosts:
        for c in checks:
            history.append((h, c, "pass", "ok", at(t0)))
            ts = t0
            while True:
                ts += rnd.expovariate(3 / (365 * 86400))  # about three drift episodes per check and year
                if ts >= end:
                    break
                how = rnd.random()
                if how < 0.7:
                    took, outcome, tier = rnd.uniform(60, 900), "healed", "L1"
                elif how < 0.8:
                    took, outcome, tier = rnd.uniform(300, 3600), "healed", "L2"
                elif how < 0.95:
                    took, outcome, tier = rnd.uniform(3600, 5 * 86400), "escalated", "L3"
                else:
                    took, outcome, tier = rnd.uniform(86400, 20 * 86400), "dismissed", "L3"
                history.append((h, c, "fail", "drift", at(ts)))
                incidents.append((h, c, at(ts), at(ts + min(took, 600)), outcome, tier))
                ts += took
                if ts < end:
                    history.append((h, c, "pass", "ok", at(ts)))
    for h in hosts:
        hour = START
        while hour < START + YEAR:
            ts = hour.timestamp()
            down = any(a <= ts < b for a, b in outages[h])
            if not down:
                coverage.append((h, iso(hour)[:13], CHECKS, 0))
            hour += timedelta(hours=1)
    with store.transaction() as db:
        db.executemany("INSERT INTO check_history (target, check_id, status, reason, since) VALUES (?, ?, ?, ?, ?)",
                       history)
        db.executemany("INSERT INTO coverage (target, hour, observations, errors) VALUES (?, ?, ?, ?)", coverage)
        db.execute("INSERT INTO observations (target, check_id, status, reason, facts, observed_at) "
                   "VALUES ('host00', 'sim.check00', 'pass', 'ok', '{}', ?)", (at(t0),))
        oid = db.execute("SELECT max(id) FROM observations").fetchone()[0]
        db.executemany(
            "INSERT INTO incidents (target, check_id, state, opened_at, updated_at, resolved_at, outcome, tier, "
            "detail, first_observation_id, last_observation_id) VALUES (?, ?, 'resolved', ?, ?, ?, ?, ?, '', ?, ?)",
            [(h, c, o, r, r, out, tier, oid, oid) for h, c, o, r, out, tier in incidents])
        for i in range(6):
            h, c = hosts[i], checks[i]
            db.execute("INSERT INTO exceptions (check_id, target, reason, approved_by, created_by, created_at, "
                       "expires_at) VALUES (?, ?, 'vendor application needs it', 'Dr. Rivera', 'msp', ?, ?)",
                       (c, h, at(t0 + i * 30 * 86400), at(t0 + (i * 30 + 90) * 86400)))
    store.close()
    return {"history": len(history), "incidents": len(incidents), "coverage": len(coverage)}


def run_report(state: str, days: int, out: str, queue) -> None:
    """In a child process, so its peak memory is its own."""
    from osiris.report import build, render_html, to_pdf
    from osiris.store import Store

    store = Store(state)
    hosts = {f"host{i:02d}": list(catalogue()) for i in range(HOSTS)}
    since, until = START, START + timedelta(days=days)
    t = time.perf_counter()
    report = build(store, catalogue(), hosts, {"id": "bench", "name": "Bench Practice"}, since, until, until,
                   {h: 3600 for h in hosts})
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    html = render_html(report)
    Path(out + ".html").write_text(html)
    t_html = time.perf_counter() - t
    t = time.perf_counter()
    to_pdf(html, Path(out + ".pdf"))
    t_pdf = time.perf_counter() - t
    store.close()
    queue.put({"build_s": t_build, "html_s": t_html, "pdf_s": t_pdf, "episodes": len(report.episodes),
               "pdf_bytes": Path(out + ".pdf").stat().st_size,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def measure(state: str, days: int, out: str) -> dict:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=run_report, args=(state, days, out, q))
    p.start()
    result = q.get(timeout=600)
    p.join()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="Write the reports and the state here instead of a temporary directory.")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="osiris-bench-report-"))
    if root.exists() and args.keep:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    state = root / "state"
    t = time.perf_counter()
    rows = simulate(state)
    t_sim = time.perf_counter() - t
    month = measure(str(state), 31, str(root / "month"))
    year = measure(str(state), 365, str(root / "year"))
    total = year["build_s"] + year["html_s"] + year["pdf_s"]
    flat = year["peak_rss_mb"] / month["peak_rss_mb"]
    print(f"bench/report: {HOSTS} hosts x {CHECKS} checks, one simulated year "
          f"({rows['history']} changes of status, {rows['incidents']} incidents, {rows['coverage']} host-hours; "
          f"laid down in {t_sim:.1f} s)")
    print(f"  {'':14} {'build':>8} {'html':>8} {'pdf':>8} {'total':>8} {'episodes':>9} {'pdf KB':>8} {'peak MB':>8}")
    for name, r in (("month", month), ("year", year)):
        print(f"  {name:14} {r['build_s']:8.2f} {r['html_s']:8.2f} {r['pdf_s']:8.2f} "
              f"{r['build_s'] + r['html_s'] + r['pdf_s']:8.2f} {r['episodes']:9d} {r['pdf_bytes'] / 1024:8.0f} "
              f"{r['peak_rss_mb']:8.0f}")
    print(f"  year total {total:.1f} s (target <= {TARGET_S:.0f} s: {'met' if total <= TARGET_S else 'NOT met'}); "
          f"peak memory year/month {flat:.2f} (target <= {FLAT}: {'met' if flat <= FLAT else 'NOT met'})")
    print(f"  reports: {root}/year.html, {root}/year.pdf")
    print(json.dumps({
        "hosts": HOSTS, "checks": CHECKS, **rows,
        "year_build_s": round(year["build_s"], 3), "year_html_s": round(year["html_s"], 3),
        "year_pdf_s": round(year["pdf_s"], 3),
        "year_total_s": {"value": round(total, 3), "target": TARGET_S, "met": total <= TARGET_S},
        "month_total_s": round(month["build_s"] + month["html_s"] + month["pdf_s"], 3),
        "peak_rss_mb": {"month": round(month["peak_rss_mb"], 1), "year": round(year["peak_rss_mb"], 1)},
        "memory_ratio_year_month": {"value": round(flat, 3), "target": FLAT, "met": flat <= FLAT},
    }))
    return 0 if total <= TARGET_S and flat <= FLAT else 1


if __name__ == "__main__":
    sys.exit(main())
