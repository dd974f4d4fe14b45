"""``osiris-lab``: serve an emulated practice on loopback.

    osiris-lab serve --hosts 3                 # dc01, srv01, ws01
    osiris-lab serve --hosts 200 --ps-latency 0.3 --json --control
    osiris-lab serve --hosts 3 --write-config lab.json   # an osiris config for it
    osiris-lab emulations                      # what the lab can run
    osiris-lab demo                            # the agent once on a fresh practice (make demo)

``serve`` prints each host's endpoints, the CA file to validate HTTPS
against, and the credentials (also written to a 0600 file an osiris config
can name as a secret), then runs until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from . import emulation
from .server import Lab, Quotas


def agent_config(lab: Lab, transport: str) -> dict[str, Any]:
    """An osiris agent config that watches every lab host."""
    return {
        "site": {"id": "osiris-lab", "name": "Osiris lab practice"},
        "agent": {"check_self": False},
        "secrets": {"files": {lab.credential_name: str(lab.credential_file)}},
        "targets": lab.targets(transport),
    }


async def _serve(args: argparse.Namespace) -> int:
    quotas = Quotas(max_envelope_kb=args.max_envelope_kb)
    lab = Lab(args.hosts, ps_start_latency=args.ps_latency, request_latency=args.request_latency,
              workdir=args.workdir, password=args.password, quotas=quotas, bind=args.bind)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await lab.start(control=args.control)
    if args.write_config:
        Path(args.write_config).write_text(json.dumps(agent_config(lab, args.transport), indent=2) + "\n")
    summary = lab.summary()
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print(f"osiris-lab: {len(lab.hosts)} emulated Windows hosts on {lab.bind}")
        for h in summary["hosts"]:
            print(f"  {h['name']:<8} {h['role']:<12} {h['https']}  (NTLM+encryption: {h['http']})")
        print(f"CA file:     {summary['ca_file']}")
        print(f"credentials: {summary['username']} / {summary['password']}")
        print(f"secret file: {summary['credential_file']}  (user:password)")
        if summary["control"]:
            print(f"chaos API:   {summary['control']}/hosts")
        if args.write_config:
            print(f"config:      {args.write_config}  (osiris -c {args.write_config} check)")
        print("Ctrl-C to stop.", flush=True)
    await stop.wait()
    await lab.stop()
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="osiris-lab", description="Osiris test estate: emulated Windows hosts")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="serve a practice of emulated Windows hosts")
    serve.add_argument("--hosts", type=int, default=3, help="number of hosts (default 3: dc01, srv01, ws01)")
    serve.add_argument("--ps-latency", type=float, default=0.0, help="seconds per powershell.exe start")
    serve.add_argument("--request-latency", type=float, default=0.0, help="seconds per HTTP request")
    serve.add_argument("--workdir", help="where the CA and the credential file go (default: a temp dir)")
    serve.add_argument("--password", help="the lab account's password (default: random)")
    serve.add_argument("--bind", default="127.0.0.1", help="loopback address to listen on")
    serve.add_argument("--max-envelope-kb", type=int, default=500, help="MaxEnvelopeSizekb (150 on old systems)")
    serve.add_argument("--control", action="store_true", help="also serve the chaos HTTP API")
    serve.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    serve.add_argument("--write-config", metavar="FILE", help="write an osiris config watching the lab")
    serve.add_argument("--transport", choices=["https", "ntlm"], default="https",
                       help="transport in the written config (default https)")
    sub.add_parser("emulations", help="list the checks and runbooks the lab can run")
    demo = sub.add_parser("demo", help="run the agent once on a fresh emulated practice (make demo)")
    demo.add_argument("--dir", default=".osiris-demo", help="where config, state and lab files go")
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        from .demo import run

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        sys.exit(run(Path(args.dir)))
    if args.cmd == "emulations":
        emulation.load()
        for e in emulation.known():
            print(f"{e.kind:<8} {e.id}/v{e.version}  ({e.fn.__module__})")
        for name, error in emulation.load_errors:
            print(f"failed   {name}: {error}", file=sys.stderr)
        sys.exit(1 if emulation.load_errors else 0)
    if args.hosts < 1:
        parser.error("--hosts: expected at least 1")
    sys.exit(asyncio.run(_serve(args)))
