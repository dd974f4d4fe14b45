"""Canonical JSON for evidence: RFC 8785 (JCS), with the ``rfc8785`` library
as the reference.

Two steps:

* :func:`to_json` turns what plugins hand us (datetimes, enums, paths,
  tuples, sets, bytes, numbers JCS cannot carry) into plain JSON values,
  deterministically, so the same facts always give the same bytes;
* :func:`canonical` serialises a plain JSON value to RFC 8785 bytes.

Why :func:`canonical` does not always call ``rfc8785.dumps``: the library is
pure Python and takes about 100 us for a typical 700-byte bundle, more than
signing it, which alone would cap the log below its 10,000 appends/s target.
For the subset of JSON where the C ``json`` encoder (sorted keys, no
whitespace, no ASCII escaping) is byte-for-byte RFC 8785, we use that
encoder; everything else goes to ``rfc8785.dumps``. The subset:

* strings: both escape exactly ``"``, ``\\``, and U+0000..U+001F (with the
  short forms ``\\b \\t \\n \\f \\r`` and lower-case ``\\u00xx``), and write
  every other character as UTF-8; lone surrogates are rejected by both;
* integers with magnitude below 2**53 (JCS refuses larger ones);
* ``true``, ``false``, ``null``;
* floats that are not integral and lie in [1e-4, 1e16): there Python's
  ``repr`` and ECMAScript's Number-to-String both print the shortest
  round-tripping digits in plain decimal notation. Integral floats are
  written as integers by :func:`to_json` (ECMAScript prints 5.0 as ``5``);
* object keys without characters outside the Basic Multilingual Plane:
  there code-point order (Python) and UTF-16 code-unit order (JCS) agree.

``tests/evidence/test_canonical.py`` checks the two paths give identical
bytes on a corpus of awkward documents.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from datetime import date, datetime, time, timezone
from pathlib import PurePath
from typing import Any

import rfc8785

__all__ = ["to_json", "canonical", "canonical_reference", "utc_text", "CanonicalError", "MAX_SAFE_INT", "json_number",
           "utf8_text"]

MAX_SAFE_INT = 2**53 - 1
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class CanonicalError(ValueError):
    """A value that cannot be written as canonical JSON."""


def utc_text(dt: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``: sorts as text in time order."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_number(x: float) -> Any:
    if math.isnan(x) or math.isinf(x):
        # JCS has no NaN or infinities; keep the information as text.
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if x.is_integer() and abs(x) <= MAX_SAFE_INT:
        return int(x)  # -0.0 becomes 0, as ECMAScript prints it
    return x


def utf8_text(s: str) -> str:
    """Lone surrogates (from badly decoded bytes) cannot be UTF-8: replace them."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return s


def _key(k: Any) -> str:
    return utf8_text(str(k.value if isinstance(k, enum.Enum) else k))


def to_json(value: Any) -> Any:
    """Plain JSON (dict with str keys, list, str, int, float, bool, None).

    Conversions are deterministic: aware datetimes become UTC text, naive
    ones are taken as UTC; sets are sorted by their canonical form; bytes
    become base64 text; integers JCS cannot carry (beyond 2**53) become
    decimal text; anything else unknown becomes ``str(value)``, as the state
    store does for facts.
    """
    t = type(value)
    if t is str:
        return value if value.isascii() else utf8_text(value)
    if t is dict:
        return {(k if type(k) is str and k.isascii() else _key(k)): to_json(v) for k, v in value.items()}
    if t is list:
        return [to_json(v) for v in value]
    if value is None or t is bool or t is int:
        return value if t is not int or -MAX_SAFE_INT <= value <= MAX_SAFE_INT else str(value)
    if t is float:
        return json_number(value)
    if isinstance(value, enum.Enum):  # before str and int: str- and int-valued enums
        return to_json(value.value)
    if isinstance(value, str):
        return utf8_text(str.__str__(value))
    if isinstance(value, int):
        return to_json(int(value))
    if isinstance(value, float):
        return json_number(float(value))
    if isinstance(value, Mapping):
        return {_key(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [to_json(v) for v in value]
        return sorted(items, key=lambda v: canonical(v))
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value))
    return str(value)


def _fast_ok(value: Any) -> bool:
    """Whether ``value`` lies in the subset where the C encoder is JCS."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if not -MAX_SAFE_INT <= v <= MAX_SAFE_INT:
                return False
        elif t is float:
            a = abs(v)
            if v != v or a == math.inf or v.is_integer() or not 1e-4 <= a < 1e16:
                return False
        elif t is dict:
            for k in v:
                if type(k) is not str or (not k.isascii() and max(k) > "\uffff"):
                    return False
            stack.extend(v.values())
        elif t is list:
            stack.extend(v)
        else:
            return False
    return True


def canonical(value: Any) -> bytes:
    """RFC 8785 bytes of a plain JSON value (see the module docstring)."""
    if _fast_ok(value):
        try:
            return _encode(value).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CanonicalError(f"not valid Unicode (lone surrogate?): {exc}") from None
    return canonical_reference(value)


def canonical_reference(value: Any) -> bytes:
    """RFC 8785 bytes through the ``rfc8785`` library only."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise CanonicalError(str(exc)) from None
    except UnicodeEncodeError as exc:
        raise CanonicalError(f"not valid Unicode (lone surrogate?): {exc}") from None
