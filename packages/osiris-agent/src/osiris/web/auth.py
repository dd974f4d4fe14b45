"""Who may see the status page and act on it.

* Listening on loopback (the default), the page needs no login: only
  someone on the appliance reaches it. Actions ask for the person's name.
* Any other listen address needs TLS and local accounts; the agent refuses
  to start without both (:func:`require_access`). Passwords are argon2id
  hashes (argon2-cffi); a login is a random session token in a
  ``__Host-`` cookie (Secure, HttpOnly, SameSite=Strict) of which the store
  keeps only the SHA-256; ``LOCK_AFTER`` failed logins in a row lock the
  account for ``LOCK_MINUTES``.
* Roles: ``viewer`` (the practice owner, an auditor) sees; ``operator``
  (the MSP) also acts.
* Every form carries a CSRF token equal to a cookie of its own
  (double-submit; SameSite=Strict) and must come from the page's own
  origin (``Origin``, ``Sec-Fetch-Site``); on loopback the ``Host`` must
  name loopback too (DNS rebinding).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..api_guard import is_loopback
from ..config import ConfigError, HttpSettings
from ..store import Store, iso

ROLES = ("viewer", "operator")
LOCK_AFTER = 5
LOCK_MINUTES = 15
MIN_PASSWORD = 12
SESSION_COOKIE = "__Host-osiris_session"
CSRF_COOKIE_TLS = "__Host-osiris_csrf"
CSRF_COOKIE_PLAIN = "osiris_csrf"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

_hasher = PasswordHasher()  # argon2id with the library's current defaults (RFC 9106's second recommendation)
# Checked when a name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY = _hasher.hash(secrets.token_hex(16))


class AuthError(Exception):
    """A refused account change or login; ``str()`` is the message."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def login_required(http: HttpSettings) -> bool:
    """Whether the page asks for a login: it does off loopback."""
    return not is_loopback(http.listen)


def require_access(http: HttpSettings, store: Store, source: str) -> ssl.SSLContext | None:
    """The TLS context to serve with, or :class:`ConfigError` when the
    listen address is not loopback and TLS or accounts are missing."""
    where = f"{source}: section 'agent', key 'http.listen'"
    if login_required(http):
        if http.tls is None:
            raise ConfigError([
                f"{where}: {http.listen} is not a loopback address: the status page and API would be open to the "
                "network; set agent.http.tls.cert and agent.http.tls.key (HTTPS), add an account with "
                "`osiris users add NAME --role operator`, or listen on 127.0.0.1"])
        if not store.users():
            raise ConfigError([
                f"{where}: {http.listen} is not a loopback address and no status page account exists: add one "
                "with `osiris users add NAME --role operator` (or listen on 127.0.0.1)"])
    if http.tls is None:
        return None
    return tls_context(http.tls.cert, http.tls.key, source)


def tls_context(cert: Path, key: Path, source: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{source}: section 'agent', key 'http.tls': cannot load certificate {cert} with key "
                           f"{key}: {why} (expected PEM files the agent can read)"]) from None
    return ctx


# -- accounts ---------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise AuthError(f"user name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter "
                        "or digit")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AuthError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    return role


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"password: at least {MIN_PASSWORD} characters")
    if password != password.strip() or any(ord(c) < 32 for c in password):
        raise AuthError("password: no leading or trailing spaces and no control characters")
    return _hasher.hash(password)


def add_user(store: Store, name: str, role: str, password: str) -> None:
    from ..store import StoreError

    try:
        store.add_user(check_name(name), check_role(role), hash_password(password))
    except StoreError as exc:
        raise AuthError(str(exc)) from None


def set_password(store: Store, name: str, password: str) -> None:
    from ..store import StoreError

    try:
        store.set_password(name, hash_password(password))
    except StoreError as exc:
        raise AuthError(str(exc)) from None


# -- logins and sessions ----------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(store: Store, name: str, password: str, now: datetime | None = None) -> User:
    """The user, or :class:`AuthError` with one message for every failure
    (a locked account says so: its owner must know to wait). Blocking
    (argon2): call it from a worker thread."""
    now = now or datetime.now(timezone.utc)
    row = store.user(name) if _NAME.match(name or "") else None
    if row is None:
        try:
            _hasher.verify(_DUMMY, password)
        except VerificationError:
            pass
        raise AuthError("wrong name or password")
    if row["locked_until"] and row["locked_until"] > iso(now):
        raise AuthError(f"this account is locked after {LOCK_AFTER} failed logins; try again after "
                        f"{row['locked_until'][11:16]} UTC")
    try:
        _hasher.verify(row["password_hash"], password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        store.login_failed(name, LOCK_AFTER, iso(now + timedelta(minutes=LOCK_MINUTES)))
        raise AuthError("wrong name or password") from None
    store.login_succeeded(name)
    if _hasher.check_needs_rehash(row["password_hash"]):
        store.set_password(name, _hasher.hash(password))
    return User(row["name"], row["role"])


def start_session(store: Store, user: User, hours: float, now: datetime | None = None) -> str:
    """A new session's token (the cookie's value; the store keeps its hash)."""
    now = now or datetime.now(timezone.utc)
    token = secrets.token_urlsafe(32)
    store.create_session(_token_hash(token), user.name, iso(now + timedelta(hours=hours)))
    return token


def session_user(store: Store, token: str | None, now: datetime | None = None) -> User | None:
    if not token or len(token) > 128:
        return None
    row = store.session(_token_hash(token), iso(now or datetime.now(timezone.utc)))
    return User(row["name"], row["role"]) if row else None


def end_session(store: Store, token: str | None) -> None:
    if token and len(token) <= 128:
        store.end_session(_token_hash(token))


# -- CSRF and origin ---------------------------------------------------------------------------


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def same_token(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and bool(a) and hmac.compare_digest(a.encode(), b.encode())


def cross_site(headers: Any, scheme: str, host: str) -> str | None:
    """Why a form post looks cross-site, or None."""
    origin = headers.get("Origin")
    if origin is not None and origin != f"{scheme}://{host}":
        return "cross-origin form posts are refused"
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return "cross-site form posts are refused"
    return None
