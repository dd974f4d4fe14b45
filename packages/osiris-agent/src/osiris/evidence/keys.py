"""The appliance's Ed25519 evidence key: created once, pinned, checked at load.

Files, under ``<state_dir>/keys/`` (a 0700 directory):

* ``evidence-ed25519.key`` the private key, PKCS#8 PEM, mode 0600;
* ``evidence-ed25519.pub`` the pinned public key, SubjectPublicKeyInfo PEM,
  mode 0600 too (the appliance-selfcheck plugin wants every file in keys/
  owner-only; the public key is published through exports anyway).

Rules (:func:`load_or_create`):

* neither file exists: a key pair is generated and both files are written
  (temporary names, fsync, then linked into place, never overwriting);
* the private key is a symbolic link, is not owned by the agent's user or is
  readable or writable by group or others: refused;
* the private key does not match the pinned public key, or only one of the
  two files exists: refused. There is no silent regeneration: a new key
  would make every later bundle unverifiable against the key auditors
  already hold. The error says what to do.

Signatures are plain Ed25519 (RFC 8032) over the exact bytes, so OpenSSL's
``pkeyutl -verify -rawin`` checks them; key IDs follow C2SP signed-note.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import EvidenceError
from .files import write_once

__all__ = ["PRIVATE_NAME", "PUBLIC_NAME", "SigningKey", "VerifyKey", "load_or_create", "load_public", "key_id"]

PRIVATE_NAME = "evidence-ed25519.key"
PUBLIC_NAME = "evidence-ed25519.pub"
SIG_TYPE_ED25519 = 0x01


def key_id(name: str, public_raw: bytes) -> bytes:
    """C2SP signed-note key ID: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([SIG_TYPE_ED25519]) + public_raw).digest()[:4]


@dataclass(frozen=True)
class VerifyKey:
    public: Ed25519PublicKey

    @property
    def raw(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the raw public key, hex: how the key is named in meta and docs."""
        return hashlib.sha256(self.raw).hexdigest()

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self.public.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def key_id(self, name: str) -> bytes:
        return key_id(name, self.raw)

    def note_verifier(self, name: str) -> str:
        """The C2SP verifier key string: ``<name>+<hex key id>+<base64(0x01 || key)>``."""
        blob = base64.b64encode(bytes([SIG_TYPE_ED25519]) + self.raw).decode()
        return f"{name}+{self.key_id(name).hex()}+{blob}"

    def pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @classmethod
    def from_pem(cls, data: bytes, source: str = "public key") -> VerifyKey:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise EvidenceError(f"{source}: not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise EvidenceError(f"{source}: expected an Ed25519 public key, got {type(key).__name__}")
        return cls(key)

    @classmethod
    def from_raw(cls, raw: bytes) -> VerifyKey:
        return cls(Ed25519PublicKey.from_public_bytes(raw))


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    path: Path | None = None

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(self.private.public_key())

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())


def _check_private_file(path: Path) -> None:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise EvidenceError(f"{path}: the evidence signing key is a symbolic link; expected a regular file")
    if not stat.S_ISREG(st.st_mode):
        raise EvidenceError(f"{path}: the evidence signing key is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise EvidenceError(
            f"{path}: mode {mode:04o}: the evidence signing key must be readable by its owner only "
            f"(expected 0600; run `chmod 600 {path}` after checking who could have read it)"
        )
    if st.st_uid != os.geteuid():
        raise EvidenceError(
            f"{path}: owned by uid {st.st_uid}, expected the agent's user (uid {os.geteuid()})"
        )


def _read_private(path: Path) -> Ed25519PrivateKey:
    _check_private_file(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise EvidenceError(f"{path}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError(f"{path}: expected an Ed25519 private key, got {type(key).__name__}")
    return key


def load_public(key_dir: Path) -> VerifyKey:
    """The pinned public key (no private key needed: verification, exports)."""
    path = Path(key_dir) / PUBLIC_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EvidenceError(f"{path}: no pinned evidence public key (has the agent ever started here?)") from None
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read: {exc.strerror}") from None
    return VerifyKey.from_pem(data, str(path))


def load_or_create(key_dir: Path, *, create: bool = True) -> SigningKey:
    """Load the evidence key, checked against its pin; create it on first start."""
    key_dir = Path(key_dir)
    priv_path, pub_path = key_dir / PRIVATE_NAME, key_dir / PUBLIC_NAME
    try:
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise EvidenceError(f"{key_dir}: cannot create the key directory: {exc.strerror}") from None
    have_priv, have_pub = priv_path.exists() or priv_path.is_symlink(), pub_path.exists()
    if not have_priv and not have_pub:
        if not create:
            raise EvidenceError(f"{priv_path}: no evidence signing key")
        key = Ed25519PrivateKey.generate()
        pem_priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        pem_pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        try:
            write_once(priv_path, pem_priv, mode=0o600, same_ok=False)
            write_once(pub_path, pem_pub, mode=0o600, same_ok=False)
        except FileExistsError:
            # Another process created them first: load theirs, checked as usual.
            return load_or_create(key_dir, create=False)
        except OSError as exc:
            raise EvidenceError(f"{key_dir}: cannot write the new evidence key: {exc.strerror}") from None
        return SigningKey(key, priv_path)
    if not have_priv:
        raise EvidenceError(
            f"{priv_path}: missing, but a public key is pinned in {pub_path}: the signing key was lost or "
            "removed. Refusing to create a new one silently (evidence signed from now on would not verify "
            "against the pinned key). Restore the key from backup; if this appliance never recorded "
            f"evidence, remove {pub_path} to start afresh."
        )
    if not have_pub:
        raise EvidenceError(
            f"{pub_path}: missing: the evidence signing key {priv_path} has no pinned public key to be "
            "checked against. Restore the pinned public key from backup or from an export (public-key.pem)."
        )
    key = _read_private(priv_path)
    pinned = load_public(key_dir)
    actual = VerifyKey(key.public_key())
    if actual.raw != pinned.raw:
        raise EvidenceError(
            f"{priv_path}: does not match the pinned public key {pub_path} (private key fingerprint "
            f"{actual.fingerprint[:16]}..., pinned {pinned.fingerprint[:16]}...). Refusing to sign with it: "
            "restore the original key. A deliberate key change needs a new evidence log (docs/evidence.md)."
        )
    return SigningKey(key, priv_path)
