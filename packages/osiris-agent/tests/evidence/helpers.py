"""Shared helpers for the evidence tests: a key, a log, statements."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from osiris.evidence.bundle import Identity, build_statement
from osiris.evidence.keys import SigningKey
from osiris.evidence.log import LOG_NAME, EvidenceLog
from osiris.evidence.scrub import Scrubber

ORIGIN = "osiris.evidence/test-site/appliance"
IDENTITY = Identity("test-site", "Test Practice", "appliance", "0.1.0", "1.1", {"appliance-selfcheck": "0.1.0"})
SCRUBBER = Scrubber()


def statement(i: int = 0, *, now: datetime | None = None, kind: str = "sweep", host: str = "dc01") -> dict:
    payload = {
        "target": {"name": host, "kind": "windows", "role": "dc"},
        "observations": [{"check": "windows.firewall.profiles_enabled", "status": "pass",
                          "reason": f"all three profiles on (sweep {i})", "facts": {"profiles": [True, True, True]},
                          "duration_ms": 12.5}],
    }
    return build_statement(IDENTITY, SCRUBBER, kind, payload, host=host, policy={"checks": {}}, now=now)


def new_log(tmp_path: Path, key: SigningKey, **kw) -> EvidenceLog:
    return EvidenceLog(tmp_path / "evidence" / LOG_NAME, origin=ORIGIN, verify_key=key.verify_key, **kw)


def fill(log: EvidenceLog, key: SigningKey, n: int, *, batch: int = 7, checkpoint_every: int | None = None,
         now: datetime | None = None) -> None:
    done = 0
    while done < n:
        k = min(batch, n - done)
        log.append([statement(done + j) for j in range(k)], key, now=now)
        done += k
        if checkpoint_every and done % checkpoint_every < k:
            log.checkpoint(key)
