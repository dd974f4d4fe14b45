"""Shared shapes of the baseline's checks and runbooks.

Each area module (firewall, accounts, audit...) builds its ``CHECKS`` and
``RUNBOOKS`` with :func:`check` and :func:`runbook`, which also record what
docs/windows-baseline.md says about each: what the fragment reads and in
which security context (:data:`NOTES`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from osiris import CheckSpec, Risk, RunbookSpec, Severity, Status, Verdict

KIND = "windows"
ALL = frozenset({"dc", "server", "workstation"})
SERVERS = frozenset({"dc", "server"})
MEMBERS = frozenset({"server", "workstation"})

HOUR = 3600.0
DAY = 86400.0

# The session every fragment runs in: the appliance's WinRM account, which
# must be a member of the host's Administrators (a domain account on
# domain-joined hosts). WinRM gives it an elevated token: a network logon,
# no user profile loaded (WINRS_NOPROFILE).
ADMIN = "the appliance's WinRM account (local administrator, network logon, elevated)"

EMPTY_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class Note:
    reads: str
    context: str = ADMIN
    management: str = ""  # runbooks: how the management path stays open


NOTES: dict[str, Note] = {}


def check(
    id: str,
    title: str,
    *,
    hipaa: tuple[str, ...],
    script: str,
    evaluate: Callable[[Mapping[str, Any], Mapping[str, Any]], Verdict],
    reads: str,
    context: str = ADMIN,
    roles: frozenset[str] = ALL,
    severity: Severity = Severity.MEDIUM,
    interval: float = 4 * HOUR,
    cis: str | None = None,
    params: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
    description: str = "",
) -> CheckSpec:
    NOTES[id] = Note(reads, context)
    return CheckSpec(id=id, title=title, target_kind=KIND, evaluate=evaluate, hipaa=hipaa, roles=roles,
                     severity=severity, interval=interval, cis=cis, description=description, script=script,
                     params=dict(params or {}), timeout=timeout)


def runbook(
    id: str,
    title: str,
    *,
    fixes: tuple[str, ...],
    risk: Risk,
    script: str,
    description: str,
    params_schema: Mapping[str, Any] = EMPTY_SCHEMA,
    timeout: float = 120.0,
    management: str = "",
) -> RunbookSpec:
    """``description`` is the runbook's docstring: what it changes, why it
    is safe at this risk level and, where the change could touch the
    appliance's own access, how the management path stays open
    (``management``, appended)."""
    NOTES[id] = Note(reads="", management=management)
    text = description.strip() + (" Management path: " + management.strip() if management else "")
    return RunbookSpec(id=id, title=title, target_kind=KIND, fixes=fixes, risk=risk, script=script,
                       params_schema=params_schema, timeout=timeout, description=text)


def passed(reason: str) -> Verdict:
    return Verdict(Status.PASS, reason)


def failed(reason: str) -> Verdict:
    return Verdict(Status.FAIL, reason)


def errored(reason: str) -> Verdict:
    return Verdict(Status.ERROR, reason)


def verdict(problems: list[str], ok: str, prefix: str = "") -> Verdict:
    """FAIL listing ``problems``, or PASS with ``ok``."""
    if problems:
        return failed(prefix + "; ".join(problems))
    return passed(ok)


def schema(properties: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": dict(properties), "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out
