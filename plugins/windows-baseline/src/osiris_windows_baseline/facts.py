"""Reading facts the way Windows PowerShell 5.1 writes them.

Our fragments normalise what they can on the host, but evaluators also
accept the raw shapes a cmdlet's objects take through ``ConvertTo-Json``
in Windows PowerShell 5.1, so that a sample captured on a real machine
(``Get-NetFirewallProfile | ConvertTo-Json``) is a valid facts document:

* enums become their numeric value (``"DefaultInboundAction": 4``), or a
  string where the fragment cast them (``"Block"``);
* ``GpoBoolean`` (NetSecurity) is ``1``/``0``/``2`` (True/False/NotConfigured);
* ``DateTime`` becomes ``"\\/Date(1700000000000)\\/"`` (milliseconds since
  the Unix epoch, UTC); our fragments write ISO 8601 instead.

Every helper here is pure: evaluators must be functions of the facts.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

_TRUE = {"true", "1", "yes", "on", "enabled"}
_FALSE = {"false", "0", "no", "off", "disabled"}
_MS_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")


class FactError(ValueError):
    """The facts do not have the shape this evaluator reads (the observation
    becomes an error, with the facts kept)."""


def as_bool(value: Any, *, not_configured: bool | None = None) -> bool | None:
    """True/False from a bool, 1/0, "True"/"False"... ``NotConfigured``
    (GpoBoolean 2, or the string) and ``None`` give ``not_configured``."""
    if value is None:
        return not_configured
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if value == 2:
            return not_configured
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text in ("notconfigured", "2", ""):
        return not_configured
    raise FactError(f"expected a boolean, got {value!r}")


def as_int(value: Any, default: int | None = None) -> int | None:
    """An integer from a number or a numeric string; ``None`` -> default.
    REG_DWORD values above 0x7FFFFFFF arrive negative (Int32): kept as is."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip(), 0)
    except ValueError:
        raise FactError(f"expected an integer, got {value!r}") from None


def enum_name(value: Any, names: Mapping[int, str]) -> str:
    """An enum's name from its number (ConvertTo-Json) or its name."""
    if isinstance(value, bool):
        raise FactError(f"expected one of {sorted(names.values())}, got {value!r}")
    if isinstance(value, int):
        if value not in names:
            raise FactError(f"unknown value {value} (expected one of {sorted(names)})")
        return names[value]
    text = str(value).strip()
    for name in names.values():
        if name.lower() == text.lower():
            return name
    if text.isdigit():
        return enum_name(int(text), names)
    raise FactError(f"expected one of {sorted(names.values())}, got {value!r}")


def as_datetime(value: Any) -> datetime | None:
    """A UTC datetime from ISO 8601 or ``/Date(ms)/``; ``None`` stays None.
    Naive ISO values are taken as UTC (our fragments write UTC)."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    m = _MS_DATE.match(text.replace("\\/", "/"))
    if m:
        return datetime.fromtimestamp(int(m.group(1)) / 1000.0, tz=timezone.utc)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FactError(f"expected a date (ISO 8601 or /Date(ms)/), got {value!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def listify(value: Any) -> list[Any]:
    """PowerShell collapses a one-element pipeline result to the element and
    an empty one to null: accept all three shapes."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def require(facts: Mapping[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in facts]
    if missing:
        raise FactError(f"facts lack {', '.join(missing)}")


def glob_any(value: str, patterns: Iterable[str]) -> bool:
    """Case-insensitive glob match (Windows names are case-insensitive)."""
    v = value.lower()
    return any(fnmatch.fnmatchcase(v, p.lower()) for p in patterns)


def ip_allowed(address: str, allowed: Iterable[str]) -> bool:
    """Whether an address (IPv6 scope ids ignored) is one of ``allowed``
    (addresses or CIDR networks)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0].strip())
    except ValueError:
        return False
    for entry in allowed:
        try:
            if ip in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"
