"""Endpoint ingest: the real appliance beside a bare gRPC server, in one run.

Measured, in this order, with the endpoints simulated in a separate process
(bench/ingest/load.py: real identities, one mutual-TLS stream each, batches
of ``--batch`` events, ``--window`` batches in flight per stream):

* enrolment of ``--endpoints`` endpoints through the real ``Enroll``
  (a token with that many uses);
* the limit: a bare ``grpc.aio`` server with the same mutual-TLS
  credentials that acknowledges each batch as soon as it has read it
  (bench/ingest/bare.py): events/s and ack latency;
* the appliance (``osiris run``, the endpoints plugin, engine, ladder,
  evidence log): sustained events/s acknowledged (so stored: an ack follows
  the store's commit) and ack latency at saturation (queueing), then the
  p99 ack latency paced at half that rate; its RSS sampled every second;
* idle: every endpoint connected and sending only heartbeats every
  ``--heartbeat`` seconds (60) for ``--idle-seconds``: the appliance's CPU
  time over that window, as a share of one CPU.

Targets: >= 20,000 events/s through the real pipeline into the store;
p99 ack latency <= 1 s; RSS <= 300 MiB and flat; idle <= 5% of one CPU.

    .venv/bin/python bench/ingest/run.py [--endpoints 1000] [--seconds 20] [--batch 50] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TARGET_EVENTS = 20_000
TARGET_P99 = 1.0
TARGET_RSS_MIB = 300
TARGET_IDLE = 0.05


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench/ingest: nothing listens on port {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def settle(pid: int, busy: float = 0.2, limit: float = 60.0) -> float:
    """Wait until the process uses less than ``busy`` of a CPU over a
    second (the saturated run's backlog stored), at most ``limit`` seconds;
    returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        c0 = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - c0 < busy:
            break
    return time.monotonic() - start


class Sampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.rss = pid, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.rss.append(rss_mib(self.pid))
            except OSError:
                return


def load(args, address: str, run: str, *extra: str) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "load.py"), "--dir", str(args.workdir / "endpoints"),
                          "--address", address, "--count", str(args.endpoints), "--batch", str(args.batch),
                          "--window", str(args.window), "--seconds", str(args.seconds), "--run", run, *extra],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"bench/ingest: load.py failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--window", type=int, default=2)
    p.add_argument("--idle-seconds", type=float, default=60)
    p.add_argument("--heartbeat", type=float, default=60)
    p.add_argument("--idle-ramp", type=float, default=30, help="seconds to connect every endpoint before idling")
    p.add_argument("--evidence", action=argparse.BooleanOptionalAction, default=True,
                   help="the appliance's evidence log on (default) or off")
    p.add_argument("--py-spy", metavar="FILE", type=Path,
                   help="profile the appliance during the saturated run with py-spy (collapsed stacks to FILE; "
                        "py-spy is not a dependency: install it beside the venv, e.g. uv tool install py-spy)")
    args = p.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="osiris-bench-ingest-")
    args.workdir = Path(tmp.name)
    state = args.workdir / "appliance"
    port, enrol_port = free_port(), free_port()
    cfg = args.workdir / "config.json"
    cfg.write_text(json.dumps({
        "state_dir": str(state), "site": {"id": "bench"},
        "agent": {"check_self": False, "http": {"enabled": False}},
        "evidence": {"enabled": args.evidence},
        "plugins": {"endpoints": {"enabled": True, "listen": "127.0.0.1", "port": port, "enrol_port": enrol_port,
                                  "handshake_rate": 5000, "handshake_burst": 5000, "event_rate": 1e6,
                                  "event_burst": 1_000_000, "heartbeat": args.heartbeat,
                                  "silence_allowance": max(600, 3 * args.heartbeat), "pipeline": 16}},
    }))
    env = {**os.environ, "OSIRIS_PLUGINS": "windows,endpoints"}
    env.pop("OSIRIS_CONFIG", None)
    appliance = subprocess.Popen([str(BIN / "osiris"), "-c", str(cfg), "run"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=open(args.workdir / "appliance.log", "w"))
    bare = None
    try:
        wait_listening(enrol_port)
        token = subprocess.run([str(BIN / "osiris"), "-c", str(cfg), "endpoints", "token", "--address",
                                f"127.0.0.1:{enrol_port}", "--uses", str(args.endpoints)], env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
        print(f"enrolling {args.endpoints:,} endpoints...", file=sys.stderr, flush=True)
        enrolled = json.loads(subprocess.run(
            [sys.executable, str(HERE / "load.py"), "--dir", str(args.workdir / "endpoints"), "--address", "-",
             "--count", str(args.endpoints), "--enrol", token], capture_output=True, text=True,
            check=True).stdout.strip().splitlines()[-1])

        print("the bare gRPC server...", file=sys.stderr, flush=True)
        bare = subprocess.Popen([sys.executable, str(HERE / "bare.py"), str(state / "keys")], env=env,
                                stdout=subprocess.PIPE, text=True)
        bare_port = int(bare.stdout.readline())
        bare_cpu0 = cpu_seconds(bare.pid)
        bare_sampler = Sampler(bare.pid)
        bare_sampler.start()
        limit = load(args, f"127.0.0.1:{bare_port}", "bare")
        limit_cpu = cpu_seconds(bare.pid) - bare_cpu0
        bare_sampler.stop.set()
        bare_rss = max(bare_sampler.rss or [0.0])
        bare.terminate()
        bare.wait()
        bare = None

        print("the appliance...", file=sys.stderr, flush=True)
        sampler = Sampler(appliance.pid)
        sampler.start()
        cpu0 = cpu_seconds(appliance.pid)
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(appliance.pid), "--format", "raw", "--threads",
                                    "--output", str(args.py_spy), "--duration", str(int(args.seconds + 5))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        real = load(args, f"127.0.0.1:{port}", "real")
        if spy is not None:
            spy.wait()
        # Latency is queueing at saturation; paced at half that rate it is the service's own.
        half = max(args.batch, real["events_per_s"] / 2)
        settled = settle(appliance.pid)
        real_cpu = cpu_seconds(appliance.pid) - cpu0  # the handshakes, the run and its backlog
        print(f"the appliance stored the saturated run's backlog in {settled:.0f} s", file=sys.stderr, flush=True)
        print(f"the appliance paced at {half:,.0f} events/s...", file=sys.stderr, flush=True)
        paced = load(args, f"127.0.0.1:{port}", "paced", "--rate", str(half))
        sampler.stop.set()

        print(f"idle: {args.endpoints:,} endpoints heartbeating every {args.heartbeat:g} s for "
              f"{args.idle_seconds:g} s...", file=sys.stderr, flush=True)
        idle_args = argparse.Namespace(**{**vars(args), "seconds": args.idle_seconds})
        holder: dict = {}
        thread = threading.Thread(target=lambda: holder.update(
            load(idle_args, f"127.0.0.1:{port}", "idle", "--idle", "--heartbeat", str(args.heartbeat),
                 "--ramp", str(args.idle_ramp))))
        thread.start()
        time.sleep(args.idle_ramp)  # connections made (handshakes are not idle cost)
        idle_cpu0, idle_t0 = cpu_seconds(appliance.pid), time.monotonic()
        thread.join()
        idle_share = (cpu_seconds(appliance.pid) - idle_cpu0) / (time.monotonic() - idle_t0)
        idle = holder
        rss_end = rss_mib(appliance.pid)
    finally:
        if bare is not None:
            bare.kill()
        appliance.send_signal(signal.SIGTERM)
        try:
            appliance.wait(60)
        except subprocess.TimeoutExpired:
            appliance.kill()
    db = sqlite3.connect(state / "osiris.sqlite3")
    stored = db.execute("SELECT count(*) FROM observations WHERE report_id LIKE 'endpoint/%/bench-%-real/%'").fetchone()[0]
    db.close()
    rss = sampler.rss or [rss_end]
    ratio = real["events_per_s"] / limit["events_per_s"] if limit["events_per_s"] else 0.0
    # CPU per event over the whole saturated run (its backlog included): what
    # a share of a loaded machine changes least.
    cpu_per_event = 1e6 * real_cpu / stored if stored else 0.0
    # Flat: the second half of the run holds no more than the first half did
    # (connections and caches are made early; growth after that is a leak).
    half = len(rss) // 2
    flat = len(rss) < 4 or max(rss[half:]) <= 1.1 * max(rss[:half]) + 10
    rows = [
        ("endpoints enrolled (real Enroll)", f"{enrolled['enrolled']:,}", f"in {enrolled['seconds']:.1f} s"),
        ("bare grpc.aio server: events/s acked", f"{limit['events_per_s']:,.0f}",
         f"p50 {limit['p50']} s, p99 {limit['p99']} s; {limit_cpu:.1f} CPU-s; RSS max {bare_rss:.0f} MiB"),
        ("appliance: events/s acked = stored", f"{real['events_per_s']:,.0f}",
         f"{ratio:.2f} x the bare server; p50 {real['p50']} s, p99 {real['p99']} s; {real_cpu:.1f} CPU-s, "
         f"{cpu_per_event:.0f} us per event stored"),
        ("appliance paced at half that: events/s", f"{paced['events_per_s']:,.0f}",
         f"p50 {paced['p50']} s, p99 {paced['p99']} s"),
        ("appliance: events stored (saturated run)", f"{stored:,}", f"{real['acked']:,} acked"),
        ("appliance RSS (MiB): start / max / end", f"{rss[0]:.0f} / {max(rss):.0f} / {rss[-1]:.0f}",
         "flat" if flat else "GROWING (second half above the first)"),
        (f"idle, {idle.get('connected', 0):,} connected, heartbeat {args.heartbeat:g} s",
         f"{100 * idle_share:.1f}% CPU", "of one core"),
    ]
    w, v = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"\nbench/ingest: {args.endpoints:,} endpoints, batches of {args.batch}, {args.window} in flight each, "
          f"{args.seconds:g} s measured, evidence {'on' if args.evidence else 'off'}")
    for name, value, note in rows:
        print(f"  {name.ljust(w)}  {value.rjust(v)}  {note}")
    met = {
        "events_per_s": real["events_per_s"] >= TARGET_EVENTS,
        "p99_ack_s": paced["p99"] is not None and paced["p99"] <= TARGET_P99,
        "rss_mib": max(rss) <= TARGET_RSS_MIB and flat,
        "idle_cpu": idle_share <= TARGET_IDLE,
    }
    print("targets:")
    print(f"  events/s >= {TARGET_EVENTS:,}: {real['events_per_s']:,.0f} -> {'met' if met['events_per_s'] else 'MISSED'}")
    print(f"  p99 ack <= {TARGET_P99:g} s (paced at half the saturated rate): {paced['p99']} s -> "
          f"{'met' if met['p99_ack_s'] else 'MISSED'}")
    print(f"  RSS <= {TARGET_RSS_MIB} MiB and flat: max {max(rss):.0f} MiB -> {'met' if met['rss_mib'] else 'MISSED'}")
    print(f"  idle <= {TARGET_IDLE:.0%} of one CPU: {idle_share:.1%} -> {'met' if met['idle_cpu'] else 'MISSED'}")
    print(json.dumps({
        "endpoints": args.endpoints, "batch": args.batch, "window": args.window, "seconds": args.seconds,
        "evidence": args.evidence,
        "bare_events_per_s": limit["events_per_s"], "bare_p99_s": limit["p99"], "bare_rss_mib_max": round(bare_rss, 1),
        "events_per_s": real["events_per_s"], "ratio_to_bare": round(ratio, 3),
        "cpu_us_per_event": round(cpu_per_event, 1), "p50_ack_s_saturated": real["p50"],
        "p99_ack_s_saturated": real["p99"], "paced_events_per_s": paced["events_per_s"],
        "p50_ack_s_paced": paced["p50"], "p99_ack_s": paced["p99"], "stored": stored, "acked": real["acked"],
        "rss_mib_start": round(rss[0], 1), "rss_mib_max": round(max(rss), 1), "rss_mib_end": round(rss[-1], 1),
        "idle_cpu_share": round(idle_share, 4), "idle_connected": idle.get("connected", 0),
        "targets": {"events_per_s": TARGET_EVENTS, "p99_ack_s": TARGET_P99, "rss_mib": TARGET_RSS_MIB,
                    "idle_cpu_share": TARGET_IDLE},
        "met": met,
    }))
    tmp.cleanup()


if __name__ == "__main__":
    main()
