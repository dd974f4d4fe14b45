"""Why the appliance's stream port refused a connection.

The stream port asks for a client certificate in the TLS handshake, and
grpcio's Python server can only require one or not ask for one: a client
without a certificate, or with one from another CA, is refused by the
handshake before any call reaches the service, so the service cannot
answer with a status of its own. Under TLS 1.3 the client finishes its
half of the handshake before the server has checked its certificate; the
server then closes the connection without an alert reaching the client,
and grpc reports ``UNAVAILABLE: ... Socket closed`` whatever the cause.
A server certificate the client does not trust fails on the client's side
(``Tls handshake failed ... CERTIFICATE_VERIFY_FAILED``).

So the client finds the cause itself: one TLS 1.3 handshake of its own
with the same trust anchor and certificate, then it waits for the
server's first HTTP/2 frames. A server whose certificate does not verify
against the pinned CA, or one that closes the connection after the
handshake, combined with what the client knows of its own certificate (none;
not signed by the CA it pins, which the handshake just proved is the
server's; expired), names the cause. Anything else (nothing listening, a
timeout, a server that answers) is not a refusal and gets no verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

# What an HTTP/2 client sends first; a server that accepted the connection
# answers with its SETTINGS frame.
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


@dataclass(frozen=True)
class Refusal:
    """A refusal's cause as a gRPC status name and a sentence."""

    code: str
    details: str


def pin_of(ca_pem: bytes) -> str:
    """The SHA-256 (hex) of the CA certificate's DER encoding: the pin."""
    cert = x509.load_pem_x509_certificate(ca_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _own_certificate_problem(ca_pem: bytes, cert_pem: bytes | None) -> Refusal | None:
    """What is wrong with this client's certificate, as far as the
    client can tell: none, not issued by the pinned CA, or expired."""
    if not cert_pem:
        return Refusal("UNAUTHENTICATED", "no client certificate: the appliance's stream port requires one from its "
                                          "CA (enrol first: osiris-endpoint enrol TOKEN)")
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return Refusal("PERMISSION_DENIED", f"this endpoint's certificate ({cert.subject.rfc4514_string()}, issued by "
                                            f"{cert.issuer.rfc4514_string()}) was not issued by this appliance's CA "
                                            f"(SHA-256 {pin_of(ca_pem)[:16]}...): it is from another appliance; "
                                            "enrol again with a token from this one")
    if cert.not_valid_after_utc < dt.datetime.now(dt.timezone.utc):
        return Refusal("UNAUTHENTICATED", f"this endpoint's certificate expired at "
                                          f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: enrol again with a new token")
    return None


def _context(ca_pem: bytes, key_pem: bytes | None, cert_pem: bytes | None, workdir: Path | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # grpc checks the name; the CA is the question here
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    context.load_verify_locations(cadata=ca_pem.decode())
    if key_pem and cert_pem:
        # ssl loads a certificate and key from files only: a private file
        # in the endpoint's own directory, removed at once.
        fd, path = tempfile.mkstemp(prefix=".diagnose-", suffix=".pem", dir=workdir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(cert_pem + b"\n" + key_pem)
            context.load_cert_chain(path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return context


async def why_refused(host: str, port: int, ca_pem: bytes, key_pem: bytes | None = None,
                      cert_pem: bytes | None = None, *, timeout: float = 10.0,
                      workdir: Path | None = None) -> Refusal | None:
    """The cause when the stream port at ``host:port`` refuses this client
    in its TLS handshake, or None when it does not (or cannot be reached)."""
    where = f"the appliance at {host}:{port}"
    context = _context(ca_pem, key_pem, cert_pem, workdir)
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout)
        writer.write(_PREFACE)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(9), timeout)
    except ssl.SSLCertVerificationError as exc:
        return Refusal("UNAUTHENTICATED", f"{where} presents a certificate that the CA this endpoint enrolled with "
                                          f"(SHA-256 {pin_of(ca_pem)[:16]}...) did not issue "
                                          f"({exc.verify_message}): the appliance was reinstalled with a new CA, or "
                                          "this address is not the appliance; enrol again with a new token")
    except (ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError):
        answer = b""  # closed without a word, as a refusing grpc server does
    except (OSError, asyncio.TimeoutError):
        return None  # not reachable: not a refusal
    finally:
        if writer is not None:
            writer.transport.abort()  # no TLS close_notify exchange: asyncio would wait up to 30 s for it
    if answer:
        return None  # the server took the connection: the certificate is not the problem
    problem = _own_certificate_problem(ca_pem, cert_pem)
    if problem is None:
        return None
    return Refusal(problem.code, f"{where} refused the TLS handshake: {problem.details}")
