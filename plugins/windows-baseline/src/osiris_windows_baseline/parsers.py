"""Parsers of text that Windows tools print: ``secedit /export``,
``net accounts``, ``auditpol /get /r``, ``w32tm /query /status /verbose``.

Fragments send the tool's text as a fact and these pure functions read it,
so the text is kept with the observation and a verdict can be recomputed
from evidence. Each parser raises :class:`~.facts.FactError` with what it
expected when the text is not what that tool prints.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from .facts import FactError

# -- secedit /export /cfg FILE /areas SECURITYPOLICY ----------------------------------
#
# The exported INF (UTF-16 with a BOM) has sections such as [System Access]:
#     MinimumPasswordAge = 0
#     MaximumPasswordAge = 42
#     NewGuestName = "Guest"
# Fragments send only the [System Access] section's lines.


def parse_inf_section(text: str, section: str = "System Access") -> dict[str, str]:
    """``key = value`` lines of one INF section (values unquoted); the
    whole text may be given, or just the section's lines."""
    out: dict[str, str] = {}
    current: str | None = None
    saw_header = False
    for raw in text.splitlines():
        line = raw.strip().lstrip("\ufeff")
        if not line or line.startswith(";"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            saw_header = True
            continue
        if saw_header and current != section:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise FactError(f"secedit INF: line {line[:60]!r} is not 'key = value'")
        out[key.strip()] = value.strip().strip('"')
    if not out:
        raise FactError(f"secedit INF: no [{section}] values")
    return out


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise FactError(f"secedit INF: expected a number, got {value!r}") from None


def policy_from_secedit(text: str) -> dict[str, Any]:
    """Password and lockout policy from [System Access]. Absent lockout
    values (Windows omits them while the threshold is 0) read as None.
    MaximumPasswordAge -1 (or 0) means passwords never expire."""
    v = parse_inf_section(text)
    max_age = _int_or_none(v.get("MaximumPasswordAge"))
    return {
        "min_length": _int_or_none(v.get("MinimumPasswordLength")),
        "history": _int_or_none(v.get("PasswordHistorySize")),
        "max_age_days": None if max_age is None else (0 if max_age < 0 else max_age),
        "min_age_days": _int_or_none(v.get("MinimumPasswordAge")),
        "complexity": None if "PasswordComplexity" not in v else v["PasswordComplexity"] == "1",
        "reversible": None if "ClearTextPassword" not in v else v["ClearTextPassword"] == "1",
        "lockout_threshold": _int_or_none(v.get("LockoutBadCount")),
        "lockout_duration_min": _int_or_none(v.get("LockoutDuration")),
        "lockout_window_min": _int_or_none(v.get("ResetLockoutCount")),
        "guest_enabled": None if "EnableGuestAccount" not in v else v["EnableGuestAccount"] == "1",
    }


# -- net accounts (fallback when secedit cannot export) -----------------------------------
#
# English output, e.g.:
#     Minimum password length:                              0
#     Length of password history maintained:                None
#     Maximum password age (days):                          42
#     Lockout threshold:                                    Never

_NET_KEYS = {
    "minimum password length": "min_length",
    "length of password history maintained": "history",
    "maximum password age (days)": "max_age_days",
    "minimum password age (days)": "min_age_days",
    "lockout threshold": "lockout_threshold",
    "lockout duration (minutes)": "lockout_duration_min",
    "lockout observation window (minutes)": "lockout_window_min",
}
_NET_ZERO = {"none", "never", "unlimited"}


def policy_from_net_accounts(text: str) -> dict[str, Any]:
    """Password and lockout policy from ``net accounts`` (English only: it
    has no machine-readable mode). Complexity is not shown there: None."""
    out: dict[str, Any] = {v: None for v in _NET_KEYS.values()}
    found = 0
    for raw in text.splitlines():
        label, sep, value = raw.partition(":")
        key = _NET_KEYS.get(label.strip().lower())
        if not sep or key is None:
            continue
        value = value.strip()
        if value.lower() in _NET_ZERO:
            out[key] = 0
        else:
            try:
                out[key] = int(value)
            except ValueError:
                raise FactError(f"net accounts: {label.strip()!r}: expected a number, got {value!r}") from None
        found += 1
    if found < 3:
        raise FactError("net accounts: expected lines such as 'Minimum password length: 8' (English output)")
    out.update(complexity=None, reversible=None, guest_enabled=None)
    return out


# -- auditpol /get /subcategory:{GUID} /r --------------------------------------------------
#
# CSV, usually after an empty line:
#   Machine Name,Policy Target,Subcategory,Subcategory GUID,Inclusion Setting,Exclusion Setting[,Setting Value]
#   WS01,System,Logon,{0CCE9215-69AE-11D9-BED3-505054503030},Success and Failure,
# The column names and Inclusion Setting are localised; the GUID is not, nor
# is Setting Value (1 success, 2 failure, 3 both, 0/4 none) where present.

_INCLUSION = {
    "no auditing": (False, False),
    "success": (True, False),
    "failure": (False, True),
    "success and failure": (True, True),
}


def parse_auditpol_csv(text: str) -> dict[str, dict[str, Any]]:
    """Rows by lower-case subcategory GUID: name, inclusion text and the
    success/failure flags."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise FactError("auditpol printed nothing")
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    header = rows[0]
    if len(header) < 6:
        raise FactError(f"auditpol /r: expected a CSV header of 6 or 7 columns, got {lines[0][:80]!r}")
    out: dict[str, dict[str, Any]] = {}
    for row in rows[1:]:
        if len(row) < 5 or not row[3].strip().startswith("{"):
            continue  # options rows (Option:CrashOnAuditFail) have no GUID
        guid = row[3].strip().lower()
        inclusion = row[4].strip()
        value = row[6].strip() if len(row) > 6 else ""
        if value.isdigit():
            n = int(value)
            success, failure = bool(n & 1) and n != 4, bool(n & 2) and n != 4
        elif inclusion.lower() in _INCLUSION:
            success, failure = _INCLUSION[inclusion.lower()]
        else:
            raise FactError(f"auditpol /r: {row[2]}: cannot read the setting {inclusion!r} (a localised "
                            "name and no Setting Value column)")
        out[guid] = {"name": row[2].strip(), "inclusion": inclusion, "success": success, "failure": failure}
    return out


# -- w32tm /query /status /verbose ----------------------------------------------------------
#
#   Leap Indicator: 0(no warning)
#   Stratum: 3 (secondary reference - syncd by (S)NTP)
#   ...
#   Source: DC01.corp.example.com
#   Phase Offset: 0.0012345s
#   Time since Last Good Sync Time: 512.3456789s


def parse_w32tm_status(text: str) -> dict[str, str]:
    """``Label: value`` lines; labels keep their case."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        label, sep, value = raw.partition(":")
        if sep and label.strip() and not label.startswith(" "):
            out.setdefault(label.strip(), value.strip())
    if "Source" not in out and "Stratum" not in out:
        raise FactError("w32tm /query /status: expected lines such as 'Source: ...' and 'Stratum: ...' "
                        "(English output)")
    return out


_SECONDS = re.compile(r"^(-?\d+(?:[.,]\d+)?)s$")


def w32tm_seconds(value: str | None) -> float | None:
    """``0.0012345s`` -> 0.0012345 (comma decimals accepted)."""
    if value is None:
        return None
    m = _SECONDS.match(value.strip())
    if not m:
        return None
    return float(m.group(1).replace(",", "."))


def w32tm_leading_int(value: str | None) -> int | None:
    if value is None:
        return None
    m = re.match(r"^\s*(-?\d+)", value)
    return int(m.group(1)) if m else None
