"""Exceptions: risks a practice accepts, for a time, with a reason.

An exception covers one check on one host (or on every host) until it
expires or is removed. Drift it covers is accepted risk: shown and
reported as such, never healed or escalated (the ladder ends its incident
as ``accepted``); when the exception ends, the drift is drift again. Who
approved it, why, and until when, is signed evidence (``risk_accepted``,
``risk_acceptance_removed``).

This module holds the rules (what a valid exception is, what it covers);
the store keeps them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Any

#: The outcome of an incident whose drift an exception covers.
ACCEPTED = "accepted"
#: The longest an exception may run: a risk is accepted again, on purpose, at least yearly.
MAX_DAYS = 366
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ExceptionError(ValueError):
    """An exception that cannot be made; ``str()`` says which field and why."""


def parse_expiry(text: str, now: datetime) -> datetime:
    """``--expires``: a date (the exception holds through that day, UTC) or
    an ISO 8601 time with a zone; in the future and at most a year ahead."""
    text = (text or "").strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            d = date.fromisoformat(text)
            when = datetime(d.year, d.month, d.day, tzinfo=timezone.utc) + timedelta(days=1)
        else:
            when = datetime.fromisoformat(text)
            if when.tzinfo is None:
                raise ExceptionError(f"expires {text!r}: a time needs its zone (e.g. {text}Z), or give a date")
    except ValueError as exc:
        if isinstance(exc, ExceptionError):
            raise
        raise ExceptionError(f"expires {text!r}: expected a date (YYYY-MM-DD) or an ISO 8601 time with a zone") from None
    when = when.astimezone(timezone.utc)
    if when <= now:
        raise ExceptionError(f"expires {text!r}: already past; an exception must end in the future")
    if when > now + timedelta(days=MAX_DAYS):
        raise ExceptionError(f"expires {text!r}: more than {MAX_DAYS} days ahead; accept a risk again when it runs out")
    return when


def text_field(name: str, value: str, limit: int = 500) -> str:
    """A person's name or a reason: non-empty, one line, bounded."""
    value = (value or "").strip()
    if not value:
        raise ExceptionError(f"{name}: required")
    if _CONTROL.search(value):
        raise ExceptionError(f"{name}: one line of text without control characters")
    if len(value) > limit:
        raise ExceptionError(f"{name}: at most {limit} characters")
    return value


def validate(check_id: str, target: str | None, reason: str, approved_by: str, *, checks: Iterable[str],
             targets: Iterable[str]) -> tuple[str, str | None, str, str]:
    """The fields of a new exception, checked against what is installed and configured."""
    known_checks = set(checks)
    if check_id not in known_checks:
        raise ExceptionError(f"check {check_id!r}: no such check (see `osiris checks`)")
    if target:
        known = set(targets)
        if target not in known:
            raise ExceptionError(f"host {target!r}: no such target (known: {', '.join(sorted(known))})")
    return check_id, target or None, text_field("reason", reason), text_field("approved by", approved_by, 200)


def covers(exc: Mapping[str, Any], target: str, check_id: str, at: str) -> bool:
    """Whether exception ``exc`` (a store row) covers ``check_id`` on ``target`` at ISO time ``at``."""
    return (exc["check_id"] == check_id and (exc["target"] is None or exc["target"] == target)
            and exc["created_at"] <= at < exc["expires_at"]
            and (exc["removed_at"] is None or at < exc["removed_at"]))


def covering(exceptions: Iterable[Mapping[str, Any]], target: str, check_id: str, at: str) -> Mapping[str, Any] | None:
    """The exception that covers the pair at ``at`` (the one running longest), if any."""
    found = [e for e in exceptions if covers(e, target, check_id, at)]
    return max(found, key=lambda e: e["expires_at"]) if found else None


def evidence(exc: Mapping[str, Any], by: str, via: str) -> dict[str, Any]:
    """The ``risk_accepted`` / ``risk_acceptance_removed`` payload."""
    return {"exception": exc["id"], "check": exc["check_id"], "host": exc["target"] or "*",
            "reason": exc["reason"], "approved_by": exc["approved_by"], "created_at": exc["created_at"],
            "expires_at": exc["expires_at"], "removed_at": exc["removed_at"], "removed_by": exc["removed_by"],
            "removed_reason": exc["removed_reason"], "by": by, "via": via}


def describe(exc: Mapping[str, Any]) -> str:
    where = exc["target"] or "every host"
    return (f"accepted risk: exception {exc['id']} ({exc['check_id']} on {where}) approved by {exc['approved_by']} "
            f"until {exc['expires_at'][:16]}Z: {exc['reason']}")
