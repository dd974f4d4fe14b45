"""What people do, from the CLI or the status page, each recorded as signed
evidence with who, when, why and through which door (``via``).

Every function checks its input (a clear :class:`ActionError` naming the
field), changes the store, and records one bundle through ``evidence``:
anything with ``async record(kind, payload, host=...)`` (the agent's
evidence service; the CLI wraps ``record_now``), or None when the site runs
without an evidence log.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from . import risk
from .healing.learning import Candidate, Learning, decider
from .store import Store, StoreError, iso


class ActionError(Exception):
    """An action refused; ``str()`` is the message for the person."""


def who(by: str, what: str) -> str:
    """A person's name for the record, or :class:`ActionError` saying what is wrong with it."""
    try:
        return decider(by, what)
    except StoreError as exc:
        raise ActionError(str(exc)) from None


async def accept_risk(store: Store, evidence: Any, *, check: str, host: str | None, reason: str, approved_by: str,
                      expires: str, by: str, via: str, checks: Iterable[str], targets: Iterable[str],
                      now: datetime) -> dict[str, Any]:
    """Add an exception: drift of ``check`` on ``host`` (or every host) is an
    accepted risk until ``expires``."""
    try:
        check, host, reason, approved_by = risk.validate(check, host, reason, approved_by, checks=checks,
                                                          targets=targets)
        until = risk.parse_expiry(expires, now)
    except risk.ExceptionError as exc:
        raise ActionError(str(exc)) from None
    by = who(by, "accepting a risk")
    exc = store.add_exception(check, host, reason, approved_by, by, iso(until))
    if evidence is not None:
        await evidence.record("risk_accepted", risk.evidence(exc, by, via), host=host)
    return exc


async def remove_exception(store: Store, evidence: Any, eid: int, *, by: str, reason: str, via: str) -> dict[str, Any]:
    """End an exception before it expires; the drift it covered is drift again."""
    by = who(by, "removing an exception")
    try:
        reason = risk.text_field("reason", reason)
        exc = store.remove_exception(eid, by, reason)
    except (risk.ExceptionError, StoreError) as e:
        raise ActionError(str(e)) from None
    if evidence is not None:
        await evidence.record("risk_acceptance_removed", risk.evidence(exc, by, via), host=exc["target"])
    return exc


async def decide_candidate(learning: Learning, evidence: Any, cid: int, decision: str, *, by: str, reason: str,
                           via: str) -> Candidate:
    """Approve (a promoted L1 rule file is written) or reject a rule candidate."""
    if decision not in ("approve", "reject"):
        raise ActionError(f"decision {decision!r}: expected approve or reject")
    try:
        reason = risk.text_field("reason", reason) if reason else ""
        fn = learning.approve if decision == "approve" else learning.reject
        c = fn(cid, by)
    except (risk.ExceptionError, StoreError) as exc:
        raise ActionError(str(exc)) from None
    if evidence is not None:
        await evidence.record("rule_decision", {**c.as_dict(), "reason": reason, "via": via})
    return c


async def account_changed(evidence: Any, *, user: str, change: str, role: str | None, by: str, via: str) -> None:
    """A status page account added, removed or given a new password (never the password or its hash)."""
    if evidence is not None:
        await evidence.record("account", {"user": user, "change": change, "role": role, "by": by, "via": via})


class NowRecorder:
    """``evidence`` for commands: each record appended at once (one commit)."""

    def __init__(self, service: Any):
        self.service = service

    async def record(self, kind: str, payload: Any, *, host: str | None = None) -> Any:
        return self.service.record_now(kind, payload, host=host)
