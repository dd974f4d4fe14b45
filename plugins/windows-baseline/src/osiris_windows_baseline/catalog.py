"""Every check and runbook of the baseline, from the area modules."""

from __future__ import annotations

from osiris import CheckSpec, RunbookSpec

from . import accounts, audit, backup, bitlocker, defender, eventlog, firewall, network, persistence, policies
from . import services
from . import timesync, updates, winrm

AREAS = (firewall, defender, bitlocker, updates, accounts, audit, eventlog, network, policies, timesync, services, backup,
         persistence, winrm)

CHECKS: tuple[CheckSpec, ...] = tuple(c for area in AREAS for c in area.CHECKS)
RUNBOOKS: tuple[RunbookSpec, ...] = tuple(r for area in AREAS for r in area.RUNBOOKS)


def _unique(kind: str, ids: list[str]) -> None:
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"windows-baseline: {kind} ids defined twice: {', '.join(dup)}")


_unique("check", [c.id for c in CHECKS])
_unique("runbook", [r.id for r in RUNBOOKS])
