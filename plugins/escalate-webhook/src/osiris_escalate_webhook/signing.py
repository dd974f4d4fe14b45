"""The webhook signature scheme, for the sender and for receivers.

Every POST carries::

    X-Osiris-Timestamp: <unix seconds>
    X-Osiris-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

(the GitHub/Stripe shape). The MAC covers the exact body bytes, so a
receiver must verify *before* parsing JSON; it covers the timestamp, so a
captured request cannot be replayed once the timestamp is older than the
receiver's tolerance. Receivers also deduplicate on ``X-Osiris-Delivery``
(the same id on every retry of one escalation).

This module uses only the standard library so that a receiver can copy it
(or ``pip install osiris-escalate-webhook``) and call :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DELIVERY_HEADER",
    "SignatureError",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Osiris-Signature"
TIMESTAMP_HEADER = "X-Osiris-Timestamp"
DELIVERY_HEADER = "X-Osiris-Delivery"
SCHEME = "sha256"
DEFAULT_TOLERANCE = 300  # seconds either side of the receiver's clock


class SignatureError(ValueError):
    """The request is not authentic (or too old); the reason says which
    part failed, never the expected MAC or the secret."""


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The value of the ``X-Osiris-Signature`` header for ``body`` sent at
    ``timestamp`` (integer Unix seconds)."""
    mac = hmac.new(_key(secret), str(int(timestamp)).encode("ascii") + b"." + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def verify(
    secret: str | bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a received webhook; return ``None`` or raise :class:`SignatureError`.

    ``body`` is the raw request body (bytes, before any JSON parsing);
    ``timestamp`` and ``signature`` are the header values as received.
    """
    if not timestamp or not signature:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise SignatureError(f"{TIMESTAMP_HEADER} is {current - ts:+.0f} s off (tolerance {tolerance:g} s)")
    scheme, _, digest = signature.partition("=")
    if scheme != SCHEME or not digest:
        raise SignatureError(f"{SIGNATURE_HEADER} must look like '{SCHEME}=<hex>'")
    if not hmac.compare_digest(sign(secret, ts, body), f"{SCHEME}={digest}"):
        raise SignatureError("signature does not match the body and timestamp")
