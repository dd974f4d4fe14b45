"""Every check and runbook of the baseline: the area modules' code, and
the check packs the plugin ships (``packs/*.yaml``).

``CHECKS`` and ``RUNBOOKS`` are the catalogue as shipped (the docs, the
HIPAA mapping and the tests read them; a broken shipped pack raises here).
The running plugin assembles the same from the packs it actually loaded
(:func:`checks`, :func:`runbooks`), site packs included.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from osiris import CheckSpec, RunbookSpec

from . import accounts, audit, backup, bitlocker, defender, eventlog, firewall, network, persistence, policies
from . import services
from . import timesync, updates, winrm
from .common import NOTES, Note
from .pack import Pack, parse
from .packset import SHIPPED_PREFIX, shipped_files

AREAS = (firewall, defender, bitlocker, updates, accounts, audit, eventlog, network, policies, timesync, services, backup,
         persistence, winrm)
# The shipped pack that holds each area's table-shaped checks (docs list them with the area).
AREA_PACKS = {"audit": "audit.yaml", "policies": "policies.yaml", "services": "services.yaml", "winrm": "winrm.yaml"}

CODE_CHECKS: tuple[CheckSpec, ...] = tuple(c for area in AREAS for c in area.CHECKS)
CODE_RUNBOOKS: tuple[RunbookSpec, ...] = tuple(r for area in AREAS for r in area.RUNBOOKS)
CODE = "windows-baseline (code)"


def _unique(kind: str, ids: list[str]) -> None:
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"windows-baseline: {kind} ids defined twice: {', '.join(dup)}")


def taken() -> dict[str, str]:
    """Check ids the plugin's code declares: no pack may declare them again."""
    return {c.id: CODE for c in CODE_CHECKS}


def checks(packs: Sequence[Pack]) -> list[CheckSpec]:
    out = list(CODE_CHECKS)
    for p in packs:
        for e, spec in zip(p.entries, p.checks()):
            NOTES.setdefault(spec.id, Note(e.check.probe.reads()))
            out.append(spec)
    _unique("check", [c.id for c in out])
    return out


def runbooks(packs: Sequence[Pack]) -> list[RunbookSpec]:
    """The code's runbooks, and the generic ones for the pack checks whose
    heal entry names them (their ``fixes`` and accepted values follow the
    loaded packs)."""
    guids: dict[str, str] = {}
    values: dict[str, list[tuple[str, str]]] = {}
    for p in packs:
        for e in p.entries:
            heal, probe = e.check.heal, e.check.probe
            if heal is None:
                continue
            if heal.runbook == audit.ENABLE_ID and probe.type == "audit_subcategory":
                guids[e.check.id] = probe.guid
            elif heal.runbook == policies.SET_VALUE_ID and probe.type == "registry_value":
                values[e.check.id] = [(v.path, v.name) for v in probe.values.values()]
    out = list(CODE_RUNBOOKS)
    if guids:
        out.append(audit.enable_runbook(guids))
    if values:
        out.append(policies.set_value_runbook(values))
    _unique("runbook", [r.id for r in out])
    return out


@cache
def shipped() -> tuple[Pack, ...]:
    """The shipped packs, strictly: a broken one is a bug of this package."""
    return tuple(parse(path.read_bytes(), name) for name, path in shipped_files())


def area_checks(area: Any) -> list[CheckSpec]:
    """An area's checks as shipped: its pack's, then its code's."""
    name = area.__name__.rsplit(".", 1)[-1]
    pack = next((p for p in shipped() if p.file == SHIPPED_PREFIX + AREA_PACKS.get(name, "")), None)
    return [c for c in __getattr__("CHECKS") if pack and c.source and c.source.file == pack.file] + list(area.CHECKS)


def __getattr__(name: str) -> Any:
    # CHECKS and RUNBOOKS as shipped, built on first use so that importing
    # this module (as the plugin does) never parses the shipped packs twice.
    if name == "CHECKS":
        value: Any = tuple(checks(shipped()))
    elif name == "RUNBOOKS":
        value = tuple(runbooks(shipped()))
    else:
        raise AttributeError(name)
    globals()[name] = value
    return value
