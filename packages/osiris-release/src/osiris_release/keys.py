"""Ed25519 signing keys in PEM files (PKCS#8, mode 0600), optionally passphrase-encrypted.

Private key bytes are never printed nor put in an error; a key is named by
its file and its TUF key id (a hash of the public key).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey

from osiris_release.errors import ReleaseError

PASSPHRASE_ENV = "OSIRIS_RELEASE_PASSPHRASE"


class KeyFileError(ReleaseError):
    """A key file that cannot be used; the message names the file."""


def generate(path: Path, passphrase: bytes | None = None) -> CryptoSigner:
    """A new Ed25519 key written to `path` (created 0600, never overwritten)."""
    private = Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    write_private(path, pem)
    return signer_of(private)


def write_private(path: Path, pem: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise KeyFileError(f"key file {path}: already exists (a key is never overwritten)") from e
    except OSError as e:
        raise KeyFileError(f"key file {path}: {e.strerror}") from e
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path, passphrase: bytes | None = None, *, private_mode: bool = False) -> CryptoSigner:
    """The signer in an Ed25519 PEM file; the passphrase from the argument or $OSIRIS_RELEASE_PASSPHRASE.

    `private_mode`: refuse a file others may read (the online keys; root keys
    come from removable media whose file modes the mount decides).
    """
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"key file {path}: {e.strerror or e}") from e
    if private_mode and mode & 0o077:
        raise KeyFileError(f"key file {path}: readable by others (mode {mode & 0o777:o}); chmod 600 it")
    if passphrase is None and os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    try:
        private = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as e:
        if passphrase is None:
            raise KeyFileError(f"key file {path}: encrypted; give its passphrase (${PASSPHRASE_ENV})") from e
        raise KeyFileError(f"key file {path}: not encrypted, but a passphrase was given") from e
    except ValueError as e:
        message = "wrong passphrase or not a PEM private key" if passphrase else "not a PEM private key"
        raise KeyFileError(f"key file {path}: {message}") from e
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"key file {path}: not an Ed25519 key")
    return signer_of(private)


def is_encrypted(path: Path) -> bool:
    try:
        return b"ENCRYPTED" in path.read_bytes()[:64]
    except OSError:
        return False


def signer_of(private: Ed25519PrivateKey) -> CryptoSigner:
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key(), scheme="ed25519"))
