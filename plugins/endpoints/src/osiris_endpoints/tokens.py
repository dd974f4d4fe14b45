"""One-time enrolment tokens.

A token is what an administrator pastes into the endpoint's installer:
``osiris-enrol-1.`` and base64url of a small JSON document with the site,
the address to enrol at, the SHA-256 pin of the appliance's endpoint CA
(so the endpoint can trust the appliance before it has a certificate) and
a random secret. The appliance keeps only the secret's SHA-256, with the
token's expiry and remaining uses; taking a use is one transaction, so a
token used twice at once enrols once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

PREFIX = "osiris-enrol-1."
KEY = "token/"


class TokenError(Exception):
    """A token that cannot be used; the message says why (never the token)."""


@dataclass(frozen=True)
class Token:
    site: str
    address: str
    pin: str
    secret: str

    def encode(self) -> str:
        doc = json.dumps({"s": self.site, "a": self.address, "p": self.pin, "k": self.secret},
                         separators=(",", ":"), sort_keys=True)
        return PREFIX + base64.urlsafe_b64encode(doc.encode()).decode().rstrip("=")

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.secret.encode()).hexdigest()


def decode(text: str) -> Token:
    text = text.strip()
    if not text.startswith(PREFIX) or len(text) > 2048:
        raise TokenError(f"not an Osiris enrolment token (expected text starting with {PREFIX!r})")
    body = text[len(PREFIX):]
    try:
        doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        token = Token(str(doc["s"]), str(doc["a"]), str(doc["p"]), str(doc["k"]))
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise TokenError("the enrolment token is damaged (copy it again from `osiris endpoints token`)") from None
    if len(token.pin) != 64 or not token.secret:
        raise TokenError("the enrolment token is damaged (copy it again from `osiris endpoints token`)")
    return token


def issue(state: Any, site: str, address: str, pin: str, ttl: float, uses: int = 1) -> tuple[Token, float]:
    """A new token, its digest recorded in ``state`` (ctx.state) with its
    expiry and uses; expired records are cleared on the way."""
    now = time.time()
    for key, rec in state.items(KEY):
        if rec.get("expires", 0) < now - 86400:
            state.delete(key)
    token = Token(site, address, pin, secrets.token_urlsafe(32))
    expires = now + ttl
    state.put(KEY + token.digest, {"site": site, "expires": expires, "uses": uses, "issued": now})
    return token, expires


def take(state: Any, token: Token, site: str) -> None:
    """Use the token once, or raise TokenError saying why it is refused."""
    if token.site != site:
        raise TokenError(f"the enrolment token is for site {token.site!r}; this appliance is site {site!r}")
    now = time.time()

    def use(rec: Any) -> Any:
        if rec is None:
            raise TokenError("the enrolment token is unknown to this appliance")
        if rec["expires"] < now:
            raise TokenError(f"the enrolment token expired at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(rec['expires']))}")
        if rec["uses"] < 1:
            raise TokenError("the enrolment token was already used")
        return {**rec, "uses": rec["uses"] - 1, "last_used": now}

    state.update(KEY + token.digest, use)
