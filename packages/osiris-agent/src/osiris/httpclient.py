"""Rules every plugin that calls an outside HTTP service applies the same way.

Ours, not a library's, because they are appliance policy rather than
protocol: which URLs a plugin may be configured with (https only; plain
http only behind an explicit lab flag, since what these plugins send
(incidents, evidence, prompts) must not cross a network in clear text),
what of a URL may be shown in logs and errors, and how a server's
``Retry-After`` becomes a wait, so that the webhook channel and the
evidence sink read a malformed header the same way.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import time
from urllib.parse import urlsplit

__all__ = ["origin", "require_https", "retry_after"]


def require_https(url: str, *, allow_http: bool, flag: str) -> str:
    """``url`` if it is an absolute https:// URL (or http:// with
    ``allow_http``); otherwise ``ValueError`` naming the lab ``flag``. The
    message never repeats the URL: webhook URLs often carry tokens."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("an absolute https:// URL")
    try:
        _ = parts.port  # urllib checks the port only when it is read
    except ValueError:
        raise ValueError("an absolute https:// URL with a port from 1 to 65535") from None
    if parts.scheme == "http" and not allow_http:
        raise ValueError(f"an https:// URL (plain http:// only with {flag}: true, for a lab)")
    return url


def origin(url: str) -> str:
    """Scheme, host and port: all that logs and errors show of a URL. Paths
    and queries (webhook tokens) and userinfo (``user:password@``, which
    aiohttp sends as Basic auth) stay out."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 section
    10.2.3): delay-seconds (digits only) or an HTTP date, never negative;
    None for an absent or malformed header (the caller's backoff applies)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # asctime form or "-0000": HTTP dates are GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
