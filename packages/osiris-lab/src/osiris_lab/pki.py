"""A throwaway certificate authority for the lab's HTTPS listeners.

Clients validate the server certificate against ``ca.pem`` exactly as they
would validate a practice's own CA, so tests exercise real verification
(hostname/IP match, chain, expiry) rather than turning it off. Keys are
ECDSA P-256: signing is cheap, which matters when a benchmark opens
hundreds of TLS connections at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class LabPKI:
    ca_file: Path
    cert_file: Path
    key_file: Path
    cert_der: bytes

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def channel_binding_hash(self) -> bytes:
        """RFC 5929 tls-server-end-point: SHA-256 of the certificate (the
        signature hash of an ECDSA-SHA256 certificate), what NTLM clients
        bind to over HTTPS."""
        return hashlib.sha256(self.cert_der).digest()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Osiris lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def create(directory: Path, hostnames: list[str] | None = None, ips: list[str] | None = None,
           days: int = 30) -> LabPKI:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` into ``directory``.

    The server certificate names ``localhost`` and ``127.0.0.1`` plus any
    extra hostnames and addresses (subject alternative names).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Osiris lab test CA"))
        .issuer_name(_name("Osiris lab test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in ["localhost", *(hostnames or [])]]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ["127.0.0.1", *(ips or [])]]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return LabPKI(ca_file, cert_file, key_file, cert.public_bytes(serialization.Encoding.DER))
