"""The evidence key: created once with owner-only permissions, pinned, and a
key that is loose or does not match its pin stops everything."""

import os
import stat

import pytest

from osiris.evidence.errors import EvidenceError
from osiris.evidence.keys import PRIVATE_NAME, PUBLIC_NAME, SigningKey, VerifyKey, load_or_create, load_public


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_an_owner_only_key_and_pins_it(tmp_path):
    kd = tmp_path / "keys"
    key = load_or_create(kd)
    assert mode(kd) == 0o700
    assert mode(kd / PRIVATE_NAME) == 0o600 and mode(kd / PUBLIC_NAME) == 0o600
    assert load_public(kd).raw == key.verify_key.raw
    assert b"PRIVATE KEY" in (kd / PRIVATE_NAME).read_bytes()
    assert not [p for p in kd.iterdir() if p.name.startswith(".")]  # no temporary files left
    # Second start: the same key, nothing rewritten.
    before = (kd / PRIVATE_NAME).read_bytes(), (kd / PUBLIC_NAME).read_bytes()
    again = load_or_create(kd)
    assert again.verify_key.raw == key.verify_key.raw
    assert ((kd / PRIVATE_NAME).read_bytes(), (kd / PUBLIC_NAME).read_bytes()) == before
    sig = again.sign(b"hello")
    assert key.verify_key.verify(sig, b"hello") and not key.verify_key.verify(sig, b"hellp")


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o660, 0o644])
def test_loose_permissions_stop_with_the_file_and_mode_named(tmp_path, loose):
    kd = tmp_path / "keys"
    load_or_create(kd)
    os.chmod(kd / PRIVATE_NAME, loose)
    with pytest.raises(EvidenceError) as err:
        load_or_create(kd)
    assert str(kd / PRIVATE_NAME) in str(err.value) and f"{loose:04o}" in str(err.value)
    assert "0600" in str(err.value)


def test_a_private_key_that_does_not_match_the_pin_is_refused_not_replaced(tmp_path):
    kd = tmp_path / "keys"
    load_or_create(kd)
    pinned = (kd / PUBLIC_NAME).read_bytes()
    other = SigningKey.generate()
    from cryptography.hazmat.primitives import serialization
    (kd / PRIVATE_NAME).write_bytes(other.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(EvidenceError, match="does not match the pinned public key"):
        load_or_create(kd)
    assert (kd / PUBLIC_NAME).read_bytes() == pinned  # no silent re-pinning


def test_missing_halves_are_errors_not_regeneration(tmp_path):
    kd = tmp_path / "keys"
    load_or_create(kd)
    pub = (kd / PUBLIC_NAME).read_bytes()
    (kd / PRIVATE_NAME).unlink()
    with pytest.raises(EvidenceError, match="lost or removed"):
        load_or_create(kd)
    assert not (kd / PRIVATE_NAME).exists() and (kd / PUBLIC_NAME).read_bytes() == pub
    kd2 = tmp_path / "keys2"
    load_or_create(kd2)
    (kd2 / PUBLIC_NAME).unlink()
    with pytest.raises(EvidenceError, match="no pinned public key"):
        load_or_create(kd2)


def test_symlinked_or_garbage_keys_are_refused(tmp_path):
    kd = tmp_path / "keys"
    load_or_create(kd)
    real = tmp_path / "elsewhere.key"
    os.rename(kd / PRIVATE_NAME, real)
    os.symlink(real, kd / PRIVATE_NAME)
    with pytest.raises(EvidenceError, match="symbolic link"):
        load_or_create(kd)
    os.unlink(kd / PRIVATE_NAME)
    (kd / PRIVATE_NAME).write_bytes(b"not a key")
    os.chmod(kd / PRIVATE_NAME, 0o600)
    with pytest.raises(EvidenceError, match="not an unencrypted PEM private key"):
        load_or_create(kd)


def test_verifier_key_string_follows_c2sp(tmp_path):
    key = load_or_create(tmp_path / "keys").verify_key
    name, key_id, blob = key.note_verifier("example.com/log").split("+", 2)
    assert name == "example.com/log" and len(key_id) == 8
    import base64
    import hashlib
    raw = base64.b64decode(blob)
    assert raw[0] == 1 and raw[1:] == key.raw
    assert key_id == hashlib.sha256(b"example.com/log\n\x01" + key.raw).digest()[:4].hex()
    assert VerifyKey.from_pem(key.pem()).raw == key.raw
