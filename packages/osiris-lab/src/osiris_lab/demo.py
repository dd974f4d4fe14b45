"""``osiris-lab demo``: the whole product once, on an emulated practice.

A lab practice (a domain controller, a file server and a workstation,
served over real HTTPS with a test CA) stands in for the clinic; the agent
runs once with an embedded config: every installed check on every host and
on the appliance itself, the healing ladder in ``standard`` mode, and the
signed evidence log. Before the sweep a setting is broken the way a
technician might (the DC's firewall turned off), so the demo shows drift
being healed at L1 and verified, and everything recorded as evidence that
``osiris evidence verify`` checks. It ends by writing the compliance
report (``report.html`` and ``report.pdf``) and printing where.

State goes under ``.osiris-demo/`` (or ``--dir``), so ``osiris -c
.osiris-demo/config.json incidents --all`` and the other commands work on it
afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .server import Lab

HOSTS = [("dc01", "dc"), ("srv01", "server"), ("ws01", "workstation")]
DRIFT = ("dc01", "firewall.domain.enabled")

# A site rule of the kind an MSP writes: heal a disabled firewall profile at
# L1. (Plugins ship their own default rules; this one makes the demo's
# outcome independent of which plugins are installed.)
SITE_RULES = """\
rules:
  - id: demo-firewall-profiles
    description: Re-enable every Windows Firewall profile
    match: {check: windows.firewall.profiles_enabled}
    action:
      runbook: windows.firewall.enable_profiles
      params: {profiles: [Domain, Private, Public]}
"""


def demo_config(lab: Lab, root: Path) -> dict[str, Any]:
    return {
        "site": {"id": "demo-practice", "name": "Demo Family Practice", "appliance": "appliance"},
        "state_dir": str(root / "state"),
        "agent": {"workers": 8, "http": {"enabled": True, "listen": "127.0.0.1", "port": 0}},
        "secrets": {"files": {lab.credential_name: str(lab.credential_file)}},
        "targets": lab.targets("https"),
        "healing": {"mode": "standard"},
        "plugins": {"windows": {"connect_timeout": 5, "operation_timeout": 20, "retries": 2, "backoff": 0.2}},
    }


def _osiris(config: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("osiris") or str(Path(sys.executable).with_name("osiris"))
    return subprocess.run([exe, "--config", str(config), *args], capture_output=True, text=True, timeout=300)


def _print_summary(config: Path) -> int:
    from osiris.store import Store

    cfg = json.loads(config.read_text())
    store = Store(cfg["state_dir"])
    try:
        per_host: dict[str, dict[str, int]] = {}
        for row in store.latest():
            counts = per_host.setdefault(row["target"], {"pass": 0, "fail": 0, "error": 0})
            counts[row["status"]] += 1
        print("\nCompliance after one sweep (pass / fail / error per host):")
        for host, c in sorted(per_host.items()):
            print(f"  {host:<10} {c['pass']:>3} pass  {c['fail']:>3} fail  {c['error']:>3} error")
        print("\nIncidents and how each ended:")
        for inc in reversed(store.incidents(None)):
            print(f"  #{inc.id:<3} {inc.target:<10} {inc.check_id:<45} {inc.outcome or 'OPEN':<10} "
                  f"{inc.tier or '':<4} {inc.detail[:70]}")
        still_open = store.incidents("open")
    finally:
        store.close()
    verify = _osiris(config, "evidence", "verify")
    print("\nEvidence: " + (verify.stdout.strip() or verify.stderr.strip()).replace("\n", "\n          "))
    print(f"\nExplore: osiris -c {config} incidents --all | rules patterns | evidence export ...")
    if still_open:
        print(f"osiris-lab demo: {len(still_open)} incidents left open", file=sys.stderr)
        return 1
    return 0 if verify.returncode == 0 else 1


def run(root: Path) -> int:
    from osiris.app import load
    from osiris.runtime import Agent

    root = root.resolve()
    if root.exists():
        shutil.rmtree(root)  # a demo starts from a clean practice every time
    (root / "state" / "rules").mkdir(parents=True)
    (root / "state" / "rules" / "demo.yaml").write_text(SITE_RULES)
    lab = Lab(HOSTS, workdir=root / "lab")
    with lab.running():
        config = root / "config.json"
        config.write_text(json.dumps(demo_config(lab, root), indent=2) + "\n")
        print(f"osiris-lab demo: practice of {len(HOSTS)} emulated Windows hosts over HTTPS "
              f"(CA {lab.ca_file}); config {config}")
        host, setting = DRIFT
        lab.break_setting(host, setting)
        print(f"chaos: {setting} turned off on {host}")
        loaded = load(config)
        logging.getLogger("osiris.engine").setLevel(logging.ERROR)  # the summary below says it all
        print(f"agent: {len(loaded.registry.checks)} checks, {len(loaded.registry.runbooks)} runbooks from "
              f"{', '.join(sorted(loaded.pm.infos))}")
        asyncio.run(Agent(loaded).run(once=True))
        healed = lab.host(host).state[setting]
        print(f"lab: {setting} on {host} is now {healed!r}")
        code = _print_summary(config)
    return _write_reports(config, root) or code


def _write_reports(config: Path, root: Path) -> int:
    """The compliance report an auditor would get, HTML and PDF (offline)."""
    written = []
    for fmt in ("html", "pdf"):
        out = root / f"report.{fmt}"
        res = _osiris(config, "report", "--format", fmt, "-o", str(out))
        if res.returncode != 0:
            print(f"osiris-lab demo: report ({fmt}) failed: {res.stderr.strip()}", file=sys.stderr)
            return 1
        written.append(str(out))
    print("\nCompliance report: " + " and ".join(written) + " (each with a signed .manifest.json beside it)")
    return 0
