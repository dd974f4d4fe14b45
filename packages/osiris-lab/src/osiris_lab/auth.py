"""Authentication and message encryption, server side, as WinRM does it.

* Basic: checked on every request; accepted over HTTPS, and over HTTP only
  where the host allows unencrypted traffic (Windows' AllowUnencrypted,
  false by default), otherwise the request is rejected with 401.
* Negotiate (NTLM): pyspnego's acceptor, one security context per TCP
  connection, because NTLM authenticates the connection rather than the
  request. Raw NTLM tokens and SPNEGO-wrapped ones are both accepted. Over
  HTTPS the context checks the client's channel binding against the
  server certificate (RFC 5929 tls-server-end-point).
* Message encryption: after the handshake, HTTP bodies are
  ``multipart/encrypted`` with ``application/HTTP-SPNEGO-session-encrypted``
  parts: a 4-byte little-endian signature length, the signature and the
  sealed SOAP envelope (MS-WSMV 2.2.9.1.1), unwrapped and wrapped with the
  connection's context. Faults are encrypted like any other response.

pyspnego's NTLM acceptor reads users from the file named by the
``NTLM_USER_FILE`` environment variable (``DOMAIN:user:password`` lines).
:func:`register_ntlm_user` maintains such a file for this process unless the
variable already points at one the caller manages.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import spnego
import spnego.channel_bindings
from spnego.exceptions import SpnegoError

PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = b"--Encrypted Boundary"
CONTENT_TYPE = f'multipart/encrypted;protocol="{PROTOCOL}";boundary="Encrypted Boundary"'

_user_file_lock = threading.Lock()
_owned_user_file: Path | None = None


def register_ntlm_user(domain: str, user: str, password: str) -> Path:
    """Make ``user`` known to the NTLM acceptor under ``DOMAIN\\user``,
    ``.\\user`` and a bare ``user``, replacing an earlier password of the
    same user (the acceptor knows one per user name in a process). Returns
    the credential file."""
    global _owned_user_file
    if ":" in user or ":" in password or ":" in domain or "\n" in password:
        raise ValueError("NTLM user file entries cannot contain ':' or newlines")
    with _user_file_lock:
        current = os.environ.get("NTLM_USER_FILE")
        if current and (_owned_user_file is None or Path(current) != _owned_user_file):
            path = Path(current)  # the caller's own file: read, never write
            lines = path.read_text().splitlines() if path.is_file() else []
            if not any(ln.split(":")[1:2] == [user] for ln in lines if ln.count(":") == 2):
                raise ValueError(f"NTLM_USER_FILE={current} does not list user {user!r}")
            return path
        if _owned_user_file is None:
            d = Path(tempfile.mkdtemp(prefix="osiris-lab-ntlm-"))
            _owned_user_file = d / "users"
            _owned_user_file.touch(mode=0o600)
            os.environ["NTLM_USER_FILE"] = str(_owned_user_file)
        # One password per user: pyspnego takes the first matching line, so a
        # later lab with the same user replaces the earlier lab's entries.
        domains = {domain.upper(), ".", ""}
        kept = [ln for ln in _owned_user_file.read_text().splitlines()
                if not (ln.count(":") == 2 and ln.split(":")[1].lower() == user.lower()
                        and ln.split(":")[0].upper() in domains)]
        kept += [f"{dom}:{user}:{password}" for dom in (domain, ".", "")]
        _owned_user_file.write_text("".join(ln + "\n" for ln in kept))
        return _owned_user_file


def basic_credentials(header: str) -> tuple[str, str] | None:
    try:
        raw = base64.b64decode(header.split(" ", 1)[1], validate=True).decode("utf-8")
    except (IndexError, binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None


def split_user(name: str) -> tuple[str, str]:
    """``DOMAIN\\user``, ``user@domain`` or ``user`` -> (domain, user)."""
    if "\\" in name:
        d, u = name.split("\\", 1)
        return d, u
    if "@" in name:
        u, d = name.split("@", 1)
        return d, u
    return "", name


@dataclass
class Connection:
    """Per-TCP-connection security state."""

    context: spnego.ContextProxy | None = None
    user: str | None = None  # set once authenticated (NTLM)
    pending: bool = False  # handshake in progress

    def reset(self) -> None:
        self.context, self.user, self.pending = None, None, False


class AuthFailed(Exception):
    """Answer 401; ``challenge`` is the Negotiate token to send, if any."""

    def __init__(self, reason: str, challenge: bytes | None = None):
        super().__init__(reason)
        self.challenge = challenge


def negotiate_step(conn: Connection, header: str, cbt_hash: bytes | None) -> bytes | None:
    """Feed one ``Authorization: Negotiate`` token to the connection's
    context. Returns the final token to send with the response (SPNEGO's
    mechListMIC) once authenticated, raises :class:`AuthFailed` with the
    challenge while the handshake goes on or when it fails."""
    try:
        token = base64.b64decode(header.split(" ", 1)[1].strip(), validate=True)
    except (IndexError, binascii.Error):
        conn.reset()
        raise AuthFailed("malformed Negotiate token") from None
    if conn.context is None or not conn.pending:
        # A new handshake (the first token, or re-authentication on a kept-alive connection).
        protocol = "ntlm" if token.startswith(b"NTLMSSP\x00") else "negotiate"
        bindings = (spnego.channel_bindings.GssChannelBindings(
            application_data=b"tls-server-end-point:" + cbt_hash) if cbt_hash else None)
        conn.context = spnego.server(protocol=protocol, channel_bindings=bindings)
        conn.user, conn.pending = None, True
    try:
        out = conn.context.step(token)
    except SpnegoError as exc:
        conn.reset()
        raise AuthFailed(f"NTLM authentication failed: {exc}") from None
    if not conn.context.complete:
        raise AuthFailed("challenge", out)
    conn.pending = False
    conn.user = conn.context.client_principal or "unknown"
    return out


_LENGTH = re.compile(rb"Length=(\d+)")


def unwrap(conn: Connection, body: bytes) -> bytes:
    """Decrypt a ``multipart/encrypted`` request body with the connection's context."""
    if conn.context is None or conn.user is None:
        raise AuthFailed("encrypted message on a connection that is not authenticated")
    parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
    if len(parts) < 2:
        raise ValueError("encrypted body: expected a header part and a data part")
    out = b""
    for i in range(0, len(parts) - 1, 2):
        m = _LENGTH.search(parts[i])
        if not m:
            raise ValueError("encrypted body: OriginalContent has no Length")
        payload = parts[i + 1]
        if payload.endswith(BOUNDARY + b"--\r\n"):
            payload = payload[: -len(BOUNDARY) - 4]
        prefix = b"\tContent-Type: application/octet-stream\r\n"
        if not payload.startswith(prefix):
            raise ValueError("encrypted body: data part is not application/octet-stream")
        payload = payload[len(prefix):]
        (sig_len,) = struct.unpack("<I", payload[:4])
        header, data = payload[4: 4 + sig_len], payload[4 + sig_len:]
        try:
            plain = conn.context.unwrap_winrm(header, data)
        except SpnegoError as exc:
            raise AuthFailed(f"cannot decrypt message: {exc}") from None
        if len(plain) != int(m.group(1)):
            raise ValueError("encrypted body: decrypted length does not match OriginalContent")
        out += plain
    return out


def wrap(conn: Connection, body: bytes) -> bytes:
    assert conn.context is not None
    res = conn.context.wrap_winrm(body)
    return (BOUNDARY + b"\r\n\tContent-Type: " + PROTOCOL.encode() + b"\r\n"
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(len(body)).encode() + b"\r\n"
            + BOUNDARY + b"\r\n\tContent-Type: application/octet-stream\r\n"
            + struct.pack("<I", len(res.header)) + res.header + res.data + BOUNDARY + b"--\r\n")
