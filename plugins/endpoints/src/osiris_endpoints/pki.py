"""The appliance's endpoint CA: its key lives in the key directory (never
in the state database), it signs a fresh server certificate at each start
and short-lived client certificates for enrolled endpoints.

Keys are ECDSA P-256: small, fast to sign, and what every TLS 1.3 stack
(BoringSSL in grpcio, SChannel on Windows) accepts for client certificates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_KEY = "endpoints-ca.key"
CA_CERT = "endpoints-ca.pem"
CA_YEARS = 10


class PKIError(Exception):
    """A CA file that cannot be used, or a request that cannot be signed;
    the message names the file or the field."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def pin_of(cert_pem_or_der: bytes) -> str:
    """The SHA-256 (hex) of a certificate's DER encoding: the token's pin."""
    if cert_pem_or_der.lstrip().startswith(b"-----BEGIN"):
        cert_pem_or_der = x509.load_pem_x509_certificate(cert_pem_or_der).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(cert_pem_or_der).hexdigest()


def _write_new(path: Path, data: bytes) -> bool:
    """Write a file that must not exist yet (0600); False when another
    process wrote it first."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


@dataclass(frozen=True)
class Issued:
    pem: bytes
    serial: int
    not_after: dt.datetime
    name: str


class Authority:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.key, self.cert = key, cert
        self.pem = cert.public_bytes(serialization.Encoding.PEM)
        self.pin = pin_of(cert.public_bytes(serialization.Encoding.DER))

    @classmethod
    def load_or_create(cls, key_dir: Path, site: str) -> Authority:
        """The CA of ``key_dir``, created on first use. Two processes
        creating it at once agree on one (the file written first wins)."""
        key_dir = Path(key_dir)
        key_path, cert_path = key_dir / CA_KEY, key_dir / CA_CERT
        if not key_path.exists():
            try:
                key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise PKIError(f"{key_dir}: cannot create the key directory: {exc.strerror}") from None
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Osiris"),
                              x509.NameAttribute(NameOID.COMMON_NAME, f"Osiris endpoint CA {site}"[:64])])
            now = _now()
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - dt.timedelta(minutes=5))
                    .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                 key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                 key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                 decipher_only=False), critical=True)
                    .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                    .sign(key, hashes.SHA256()))
            key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            # The certificate first: a key file without its certificate
            # would be a CA nobody can trust.
            tmp = cert_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            os.chmod(tmp, 0o600)
            if _write_new(key_path, key_pem):
                os.replace(tmp, cert_path)
            else:
                tmp.unlink(missing_ok=True)
        return cls.load(key_dir)

    @classmethod
    def load(cls, key_dir: Path) -> Authority:
        key_path, cert_path = Path(key_dir) / CA_KEY, Path(key_dir) / CA_CERT
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except FileNotFoundError as exc:
            raise PKIError(f"{exc.filename}: missing (the endpoint CA is created by the agent or "
                           "`osiris endpoints token`)") from None
        except (ValueError, TypeError) as exc:
            raise PKIError(f"{key_path} or {cert_path}: not a usable key and certificate: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise PKIError(f"{key_path}: not the key of {cert_path}")
        return cls(key, cert)

    # -- issuing -----------------------------------------------------------------

    def _leaf(self, subject: str, public_key, lifetime: dt.timedelta, server: bool,
              names: list[str] | None = None) -> Issued:
        now = _now()
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(self.cert.subject).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + lifetime)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=False, crl_sign=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                                            critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), cert.serial_number,
                      cert.not_valid_after_utc, subject)

    def server_identity(self, names: list[str], lifetime: dt.timedelta = dt.timedelta(days=90)) -> tuple[bytes, bytes]:
        """(private key PEM, certificate chain PEM) for the gRPC server: a new
        key at each start, the chain carrying the CA (enrolling endpoints
        check it against the token's pin)."""
        key = ec.generate_private_key(ec.SECP256R1())
        issued = self._leaf(names[0], key.public_key(), lifetime, True, names)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return key_pem, issued.pem + self.pem

    def sign_request(self, csr_pem: bytes, name: str, lifetime: dt.timedelta) -> Issued:
        """A client certificate for ``name`` from an endpoint's CSR (its key
        never leaves it). The CSR's own subject is ignored: the name is the
        one the enrolment accepted."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise PKIError("csr: expected a PEM certificate signing request (PKCS#10)") from None
        try:
            if not csr.is_signature_valid:
                raise PKIError("csr: its signature does not verify (not signed by the key it carries)")
        except InvalidSignature:
            raise PKIError("csr: its signature does not verify") from None
        key = csr.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in ("secp256r1", "secp384r1"):
                raise PKIError(f"csr: ECDSA curve {key.curve.name} is not accepted (expected P-256 or P-384)")
        elif isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise PKIError(f"csr: RSA key of {key.key_size} bits is too small (expected 2048 or more)")
        else:
            raise PKIError(f"csr: {type(key).__name__} keys are not accepted (expected ECDSA P-256/P-384 or RSA)")
        return self._leaf(name, key, lifetime, False)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True)
class Peer:
    """What a verified client certificate says."""

    name: str
    serial: int
    not_after: dt.datetime


def peer_of(cert_pem: bytes) -> Peer:
    cert = x509.load_pem_x509_certificate(cert_pem)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return Peer(str(cn[0].value) if cn else "", cert.serial_number, cert.not_valid_after_utc)
