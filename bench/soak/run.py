"""A soak: the real agent (``osiris run``) watching a 50-host lab under chaos.

The lab (``osiris-lab serve --control``) runs in its own process; the agent
runs as ``osiris -c CONFIG run`` in another, with every check due every
``--interval`` seconds, healing on, the evidence log on, and a short state
retention (``store.retention_days``) so that pruning happens within the run.
A chaos loop breaks settings, restores hosts and injects faults (refused
connections, resets, HTTP 500s, hangs) through the lab's HTTP API.

Every ``--sample`` seconds it records the agent's RSS and open file
descriptors (``/proc/<pid>``), threads, the state database's size and its
WAL's, and the observations kept. At the end it prints a table and the
targets:

* RSS flat: the median of the last 10 % of the run is within 10 % of the
  median just after the warm-up (and the slope after the warm-up, MB/min);
* WAL bounded: never above the store's ``journal_size_limit`` (8 MiB);
* state database bounded by its retention: once the retention window has
  filled, the file grows by at most 10 %, and no observation nothing
  refers to is older than the retention plus one prune interval;
* file descriptors bounded: the median of the last 10 % at most 25 % above
  the median just after the warm-up (connections in flight come and go);

and, as the last line, one JSON object with every figure, its target and
whether it was met.

    .venv/bin/python bench/soak/run.py [--minutes 30] [--hosts 50] [--interval 60]
    .venv/bin/python bench/soak/run.py --minutes 5          # a short run (targets scaled to it)
    .venv/bin/python bench/soak/run.py --objects 60         # live objects per type over time (bench/soak/traced.py)
    .venv/bin/python bench/soak/run.py --tracemalloc 120    # where Python memory goes (slow)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from osiris.app import load
from osiris.paths import STATE_DB as DB_NAME
from osiris.store import JOURNAL_SIZE_LIMIT

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
HTTP_LINE = re.compile(r"HTTP API on http://[^:/]+:(\d+)/")
RSS_TOLERANCE = 0.10
DB_TOLERANCE = 0.10
FD_TOLERANCE = 0.25
PLUGINS = "windows,windows-baseline,appliance-selfcheck"
FAULTS = [("refused", {"duration": 20}), ("reset", {"count": 1}), ("http500", {"count": 2}),
          ("hang", {"duration": 15}), ("operation_timeout", {"count": 1})]


def start_lab(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen, dict]:
    cmd = [str(BIN / "osiris-lab"), "serve", "--hosts", str(args.hosts), "--ps-latency", str(args.ps_latency),
           "--json", "--control", "--workdir", str(workdir / "lab")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("bench/soak: the lab did not start")
    return proc, json.loads(line)


def agent_config(info: dict, args: argparse.Namespace, workdir: Path) -> dict:
    targets = []
    for h in info["hosts"]:
        url = urlparse(h["https"])
        targets.append({"name": h["name"], "kind": "windows", "role": h["role"], "address": url.hostname,
                        "credential": "lab-winrm",
                        "options": {"transport": "https", "port": url.port, "ca_file": info["ca_file"]}})
    config = {
        "site": {"id": "soak", "name": "bench/soak"},
        "state_dir": str(workdir / "state"),
        "agent": {"workers": 32, "max_concurrent_targets": 32, "tick": 1, "http": {"listen": "127.0.0.1", "port": 0}},
        "store": {"retention_days": args.retention / 1440, "prune_interval": args.prune_interval},
        "healing": {"mode": "full"},
        "secrets": {"files": {"lab-winrm": info["credential_file"]}},
        "targets": targets,
        "plugins": {"windows": {"max_concurrency": 32, "retries": 1}},
    }
    # Every check that applies to a host is due every --interval seconds.
    loaded = load(config_data=config, environ={"OSIRIS_PLUGINS": PLUGINS})
    try:
        ids = {c.id for t in loaded.targets for c in loaded.registry.checks_for(t)}
    finally:
        loaded.ctx.close()
    config["checks"] = {cid: {"interval": args.interval} for cid in sorted(ids)}
    return config


class Agent:
    """``osiris run`` as a subprocess; its stderr read all along (a full pipe
    would block its logging), the HTTP port taken from its log."""

    def __init__(self, cmd: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port: int | None = None
        self.lines: list[str] = []
        self.errors = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            if " ERROR " in line or "Traceback" in line:
                self.errors += 1
            self.lines = (self.lines + [line])[-200:]
            m = HTTP_LINE.search(line)
            if m and self.port is None:
                self.port = int(m.group(1))

    def get(self, path: str) -> dict | None:
        if self.port is None:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)


def proc_figures(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    return {"rss_mb": rss_kb / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}


def size_mb(path: Path) -> float:
    try:
        return path.stat().st_size / 2**20
    except FileNotFoundError:
        return 0.0


def tree_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.exists() else 0.0


def db_counts(db_path: Path, retention_s: float) -> dict[str, float]:
    """Observations kept, and the age of the oldest one nothing refers to
    (read-only, one short read transaction)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        n = db.execute("SELECT count(*) FROM observations").fetchone()[0]
        oldest = db.execute(
            """SELECT min(observed_at) FROM observations WHERE id NOT IN (SELECT observation_id FROM check_state)
                   AND id NOT IN (SELECT first_observation_id FROM incidents)
                   AND id NOT IN (SELECT last_observation_id FROM incidents)""").fetchone()[0]
        incidents = db.execute("SELECT count(*) FROM incidents").fetchone()[0]
    finally:
        db.close()
    from datetime import datetime, timezone

    age = (datetime.now(timezone.utc) - datetime.fromisoformat(oldest)).total_seconds() if oldest else 0.0
    return {"observations": n, "oldest_unreferenced_s": age, "incidents": incidents}


def chaos(info: dict, stop: threading.Event, every: float, seed: int, counts: dict[str, int]) -> None:
    """Break settings, restore hosts, inject faults, at random, until stopped."""
    rng = random.Random(seed)
    base = info["control"]

    def call(method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    settings = {h["name"]: sorted(h["state"]) for h in call("GET", "/hosts")["hosts"]}
    names = sorted(settings)
    while not stop.wait(every):
        host = rng.choice(names)
        roll = rng.random()
        try:
            if roll < 0.7:
                call("POST", f"/hosts/{host}/break", {"setting": rng.choice(settings[host])})
                counts["breaks"] += 1
            elif roll < 0.8:
                call("POST", f"/hosts/{host}/restore", {})
                counts["restores"] += 1
            else:
                kind, extra = rng.choice(FAULTS)
                call("POST", f"/hosts/{host}/faults", {"kind": kind, **extra})
                counts["faults"] += 1
        except OSError:
            counts["chaos_errors"] += 1


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    xs = [t / 60 for t, _ in points]
    ys = [v for _, v in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def median_between(samples: list[dict], key: str, start: float, end: float) -> float:
    vals = [s[key] for s in samples if start <= s["t"] <= end]
    return statistics.median(vals) if vals else float("nan")


def report(args: argparse.Namespace, samples: list[dict], counts: dict[str, int], agent: Agent,
           exit_code: int) -> dict:
    run_s = args.minutes * 60
    warm = args.warmup * 60
    after = [s for s in samples if s["t"] >= warm]
    window = min(60.0, max(args.sample * 2, run_s * 0.1))
    rss_start = median_between(samples, "rss_mb", warm, warm + window)
    rss_end = median_between(samples, "rss_mb", run_s - window, run_s + args.sample)
    rss_growth = (rss_end - rss_start) / rss_start if rss_start else float("nan")
    slope = slope_mb_per_min([(s["t"], s["rss_mb"]) for s in after])
    wal_max = max((s["wal_mb"] for s in after), default=0.0)
    wal_max_all = max(s["wal_mb"] for s in samples)
    filled = warm + args.retention * 60 + 2 * args.prune_interval
    db_at_fill = median_between(samples, "db_mb", filled, filled + window)
    db_end = max(s["db_mb"] for s in samples if s["t"] >= run_s - window)
    db_growth = (db_end - db_at_fill) / db_at_fill if db_at_fill == db_at_fill and db_at_fill else float("nan")
    oldest = max((s["oldest_unreferenced_s"] for s in samples if s["t"] >= filled), default=0.0)
    oldest_limit = args.retention * 60 + args.prune_interval + args.sample
    fd_start = median_between(samples, "fds", warm, warm + window)
    fd_end = median_between(samples, "fds", run_s - window, run_s + args.sample)
    fd_max = max((s["fds"] for s in after), default=0)
    figures = {
        "rss_growth_after_warmup": {"value": round(rss_growth, 4), "target": f"<= {RSS_TOLERANCE}",
                                    "met": rss_growth <= RSS_TOLERANCE,
                                    "from_mb": round(rss_start, 1), "to_mb": round(rss_end, 1)},
        "rss_slope_mb_per_min": {"value": round(slope, 4), "target": "reported (flat: RSS growth above)",
                                 "met": None},
        "wal_max_mb_after_warmup": {"value": round(wal_max, 2), "target": f"<= {JOURNAL_SIZE_LIMIT / 2**20:g}",
                                    "met": wal_max <= JOURNAL_SIZE_LIMIT / 2**20,
                                    "whole_run_max_mb": round(wal_max_all, 2)},
        "db_growth_after_retention_filled": {
            "value": round(db_growth, 4) if db_growth == db_growth else None, "target": f"<= {DB_TOLERANCE}",
            "met": (db_growth <= DB_TOLERANCE) if db_growth == db_growth else None,
            "from_mb": round(db_at_fill, 2) if db_at_fill == db_at_fill else None, "to_mb": round(db_end, 2)},
        "oldest_unreferenced_observation_s": {"value": round(oldest), "target": f"<= {oldest_limit:.0f}",
                                              "met": oldest <= oldest_limit},
        "fds_end_vs_after_warmup": {"value": fd_end, "target": f"<= {fd_start * (1 + FD_TOLERANCE):.0f}",
                                    "met": fd_end <= fd_start * (1 + FD_TOLERANCE), "after_warmup": fd_start,
                                    "max_after_warmup": fd_max},
    }
    last = samples[-1]
    return {
        "bench": "soak", "hosts": args.hosts, "minutes": args.minutes, "warmup_minutes": args.warmup,
        "check_interval_s": args.interval, "retention_minutes": args.retention,
        "prune_interval_s": args.prune_interval, "samples": len(samples), "cpus": os.cpu_count(),
        "chaos": counts, "agent_exit": exit_code, "agent_errors_logged": agent.errors,
        "observations_kept_end": last["observations"], "incidents_end": last["incidents"],
        "pruned_total": last["pruned"], "evidence_mb_end": round(last["evidence_mb"], 2),
        "figures": figures,
        "all_met": all(f["met"] for f in figures.values() if f["met"] is not None),
    }


def print_table(samples: list[dict], every: float) -> None:
    print(f"{'min':>6} {'RSS MB':>8} {'fds':>5} {'thr':>4} {'DB MB':>7} {'WAL MB':>7} {'obs kept':>9} "
          f"{'oldest s':>9} {'pruned':>8} {'incid.':>7} {'evid. MB':>8}")
    shown_at = -every
    for s in samples:
        if s["t"] - shown_at < every and s is not samples[-1]:
            continue
        shown_at = s["t"]
        print(f"{s['t'] / 60:6.1f} {s['rss_mb']:8.1f} {s['fds']:5d} {s['threads']:4d} {s['db_mb']:7.2f} "
              f"{s['wal_mb']:7.2f} {s['observations']:9d} {s['oldest_unreferenced_s']:9.0f} {s['pruned']:8d} "
              f"{s['incidents']:7d} {s['evidence_mb']:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run (default 30)")
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between runs of every check")
    parser.add_argument("--ps-latency", type=float, default=0.3, help="seconds per powershell.exe start in the lab")
    parser.add_argument("--warmup", type=float, default=None, help="minutes not judged (default: a sixth, 1-5)")
    parser.add_argument("--retention", type=float, default=None,
                        help="store.retention_days in minutes (default: a third of the run)")
    parser.add_argument("--prune-interval", type=float, default=60.0, help="store.prune_interval in seconds")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--chaos-every", type=float, default=5.0, help="seconds between chaos actions")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--tracemalloc", type=float, default=None, metavar="SECONDS",
                        help="run the agent under tracemalloc and write the top growth every SECONDS "
                             "to <workdir>/memory.txt (bench/soak/traced.py); much slower, for finding leaks")
    parser.add_argument("--objects", type=float, default=None, metavar="SECONDS",
                        help="write live objects per type, allocator blocks and RSS every SECONDS to "
                             "<workdir>/memory.txt (bench/soak/traced.py); cheap")
    parser.add_argument("--agent-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the agent (repeatable), e.g. MALLOC_ARENA_MAX=2")
    parser.add_argument("--trim", type=float, default=None, metavar="SECONDS",
                        help="call glibc's malloc_trim(0) in the agent every SECONDS and write RSS before and after "
                             "to <workdir>/memory.txt: free memory malloc holds vs live memory (a diagnosis)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (printed)")
    args = parser.parse_args()
    args.warmup = args.warmup if args.warmup is not None else min(5.0, max(1.0, args.minutes / 6))
    args.retention = args.retention if args.retention is not None else args.minutes / 3

    tmp = tempfile.mkdtemp(prefix="osiris-bench-soak-")
    workdir = Path(tmp)
    lab, info = start_lab(args, workdir)
    agent = None
    stop = threading.Event()
    counts = {"breaks": 0, "restores": 0, "faults": 0, "chaos_errors": 0}
    samples: list[dict] = []
    try:
        cfg = workdir / "config.json"
        cfg.write_text(json.dumps(agent_config(info, args, workdir), indent=2))
        env = {**os.environ, "OSIRIS_PLUGINS": PLUGINS, **dict(e.split("=", 1) for e in args.agent_env)}
        cmd = [str(BIN / "osiris"), "-c", str(cfg), "run"]
        watcher = (("tracemalloc", args.tracemalloc) if args.tracemalloc else ("trim", args.trim) if args.trim
                   else ("objects", args.objects))
        if watcher[1]:
            cmd = [sys.executable, str(HERE / "traced.py"), watcher[0], str(workdir / "memory.txt"), str(watcher[1]),
                   "-c", str(cfg), "run"]
        agent = Agent(cmd, env)
        chaos_thread = threading.Thread(target=chaos, args=(info, stop, args.chaos_every, args.seed, counts),
                                        daemon=True)
        chaos_thread.start()
        print(f"bench/soak: {args.hosts} lab hosts, every check every {args.interval:g} s, chaos every "
              f"{args.chaos_every:g} s, {args.minutes:g} min (warm-up {args.warmup:g}), retention "
              f"{args.retention:g} min, prune every {args.prune_interval:g} s; work dir {workdir}", flush=True)
        state = workdir / "state"
        started = time.monotonic()
        while (t := time.monotonic() - started) <= args.minutes * 60:
            if agent.proc.poll() is not None:
                print("bench/soak: the agent stopped:\n" + "".join(agent.lines[-30:]), file=sys.stderr)
                break
            if (state / DB_NAME).exists():
                st = agent.get("/status") or {}
                sample = {"t": t, **proc_figures(agent.proc.pid), "db_mb": size_mb(state / DB_NAME),
                          "wal_mb": size_mb(state / f"{DB_NAME}-wal"), "evidence_mb": tree_mb(state / "evidence"),
                          **db_counts(state / DB_NAME, args.retention * 60),
                          "pruned": (st.get("store") or {}).get("pruned", 0)}
                samples.append(sample)
                if len(samples) % max(1, int(60 / args.sample)) == 1:
                    print(f"  {t / 60:5.1f} min: RSS {sample['rss_mb']:.1f} MB, fds {sample['fds']}, "
                          f"DB {sample['db_mb']:.2f} MB, WAL {sample['wal_mb']:.2f} MB, "
                          f"{sample['observations']} observations", flush=True)
            time.sleep(max(0.0, args.sample - (time.monotonic() - started - t)))
        stop.set()
        code = agent.stop()
        agent_done = agent
        agent = None
    finally:
        stop.set()
        if agent is not None:
            agent.stop()
        lab.terminate()
        lab.wait(30)
    if not samples:
        raise SystemExit("bench/soak: no samples")
    print()
    print_table(samples, max(60.0, args.minutes * 60 / 30))
    result = report(args, samples, counts, agent_done, code)
    print()
    for name, f in result["figures"].items():
        met = {True: "met", False: "MISSED", None: "-"}[f["met"]]
        extra = "".join(f", {k} {v}" for k, v in f.items() if k not in ("value", "target", "met"))
        print(f"  {name:<36} {str(f['value']):>10}  target {f['target']:<14} {met}{extra}")
    print(f"  chaos: {counts}; agent exit {code}, {agent_done.errors} ERROR lines logged; "
          f"{result['pruned_total']} observations pruned")
    if watcher[1]:
        print(f"  memory report: {workdir / 'memory.txt'}")
    if args.keep or watcher[1]:
        print(f"  work dir kept: {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
