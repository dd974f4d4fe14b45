"""The endpoint's identity: its key (generated here, never sent), its
certificate from the appliance's CA, and enrolment with a one-time token.

Before enrolment the endpoint trusts nothing but the token. It fetches the
appliance's certificate chain with a plain TLS handshake, checks that the
chain's CA has the SHA-256 the token carries (the pin) and that the server
certificate is signed by it, and only then talks gRPC with that CA as its
only trust anchor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TOKEN_PREFIX = "osiris-enrol-1."


class EnrolError(Exception):
    """Enrolment cannot go on; the message says why (never the token)."""


@dataclass(frozen=True)
class TokenInfo:
    site: str
    host: str
    port: int
    pin: str
    text: str


def read_token(text: str) -> TokenInfo:
    text = text.strip()
    if not text.startswith(TOKEN_PREFIX):
        raise EnrolError(f"not an Osiris enrolment token (expected text starting with {TOKEN_PREFIX!r})")
    body = text[len(TOKEN_PREFIX):]
    try:
        doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        host, _, port = str(doc["a"]).rpartition(":")
        info = TokenInfo(str(doc["s"]), host.strip("[]"), int(port), str(doc["p"]).lower(), text)
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise EnrolError("the enrolment token is damaged (copy it again)") from None
    if not info.host or len(info.pin) != 64:
        raise EnrolError("the enrolment token is damaged (copy it again)")
    return info


def new_key() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return key, pem


def csr_for(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def _unverified_chain(sock: ssl.SSLSocket) -> list[bytes]:
    """The chain the server sent, DER, leaf first. Python 3.13 has it as a
    public method; 3.10-3.12 only on the underlying SSL object."""
    getter = getattr(sock, "get_unverified_chain", None)
    if getter is None:
        getter = sock._sslobj.get_unverified_chain  # noqa: SLF001 - public from Python 3.13 on
    chain = getter() or []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # noqa: SLF001


def pinned_ca(host: str, port: int, pin: str, timeout: float = 10.0) -> bytes:
    """The appliance's CA certificate (PEM), taken from its TLS handshake
    and accepted only if its SHA-256 is ``pin`` and it signed the server's
    certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # nothing is trusted yet: the pin decides below
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as sock:
            chain = _unverified_chain(sock)
    except (OSError, ssl.SSLError) as exc:
        raise EnrolError(f"cannot reach the appliance at {host}:{port}: {exc}") from None
    if len(chain) < 2:
        raise EnrolError(f"the appliance at {host}:{port} sent no CA certificate with its own")
    for der in chain[1:]:
        if hashlib.sha256(der).hexdigest() == pin:
            ca = x509.load_der_x509_certificate(der)
            leaf = x509.load_der_x509_certificate(chain[0])
            try:
                leaf.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                raise EnrolError(f"the appliance at {host}:{port}: its certificate is not signed by the pinned CA") \
                    from None
            return ca.public_bytes(serialization.Encoding.PEM)
    raise EnrolError(f"the appliance at {host}:{port} does not have the CA the token pins (SHA-256 {pin[:16]}...): "
                     "wrong address, or someone in between")


@dataclass
class Identity:
    """What the endpoint keeps in its directory (0600 files)."""

    name: str
    site: str
    host: str
    enrol_port: int
    stream_port: int
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes

    FILE = "identity.json"

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = {"name": self.name, "site": self.site, "host": self.host, "enrol_port": self.enrol_port,
               "stream_port": self.stream_port, "key": self.key_pem.decode(), "cert": self.cert_pem.decode(),
               "ca": self.ca_pem.decode()}
        tmp = directory / f"{self.FILE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / self.FILE)

    @classmethod
    def load(cls, directory: Path) -> Identity:
        path = Path(directory) / cls.FILE
        try:
            doc = json.loads(path.read_text())
            return cls(doc["name"], doc["site"], doc["host"], int(doc["enrol_port"]), int(doc["stream_port"]),
                       doc["key"].encode(), doc["cert"].encode(), doc["ca"].encode())
        except FileNotFoundError:
            raise EnrolError(f"{path}: not enrolled yet (osiris-endpoint enrol TOKEN)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise EnrolError(f"{path}: damaged ({type(exc).__name__}: {exc}); enrol again") from None

    @property
    def not_after(self) -> float:
        return x509.load_pem_x509_certificate(self.cert_pem).not_valid_after_utc.timestamp()
