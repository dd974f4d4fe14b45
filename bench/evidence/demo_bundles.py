"""Write ``demo-bundles.json``: bundles of realistic size, from a run of
``osiris-lab demo`` (a domain controller, a file server and a workstation
swept by every installed check, drift healed), for bench/evidence and
bench/evidence-growth.

    .venv/bin/osiris-lab demo --dir /tmp/osiris-demo
    .venv/bin/python bench/evidence/demo_bundles.py /tmp/osiris-demo/state/evidence/log.sqlite3

Kept per role: the first full sweep (every check), and one healing attempt
and the sweep that verified it; the chain members (log, seq, prev,
recorded_at) are dropped, the log adds its own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from osiris.evidence.log import EvidenceLog

OUT = Path(__file__).with_name("demo-bundles.json")
CHAIN = ("log", "seq", "prev", "recorded_at")


def main() -> None:
    log = EvidenceLog(Path(sys.argv[1]), create=False)
    full: dict[str, dict] = {}
    heal = verify = None
    for e in log.iter_entries():
        st = {k: v for k, v in json.loads(e.body).items() if k not in CHAIN}
        payload = st["payload"] if isinstance(st["payload"], dict) else {}
        obs = payload.get("observations") or []
        target = payload.get("target")
        role = target.get("role") if isinstance(target, dict) else None
        if st["kind"] == "sweep" and role and role not in full and len(obs) > 20:
            full[role] = st
        elif st["kind"] == "healing_attempt" and heal is None and st["host"] != st["appliance"]:
            heal = st
        elif st["kind"] == "sweep" and heal is not None and verify is None and len(obs) == 1:
            verify = st
    if not {"dc", "server", "workstation"} <= set(full) or heal is None or verify is None:
        raise SystemExit(f"{sys.argv[1]}: not a demo log (full sweeps of {sorted(full)})")
    OUT.write_text(json.dumps({"full": full, "healing_attempt": heal, "verify": verify}, indent=1,
                              sort_keys=True) + "\n")
    print(f"{OUT}: {OUT.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
