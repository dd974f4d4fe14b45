"""Checkpoints as C2SP signed notes, checked by us and by OpenSSL alone."""

import base64
import subprocess

import pytest

from osiris.evidence.errors import VerificationError
from osiris.evidence.keys import SigningKey
from osiris.evidence.note import checkpoint_text, open_note, parse_checkpoint, sign_note

ORIGIN = "osiris.evidence/site/appliance"


@pytest.fixture
def key():
    return SigningKey.generate()


def test_checkpoint_round_trip_and_format(key):
    root = bytes(range(32))
    note = sign_note(checkpoint_text(ORIGIN, 42, root, "2024-05-01T10:22:33.000000Z"), ORIGIN, key)
    text, _, sig_line = note.decode().rpartition("\n\n")
    assert text + "\n" == f"{ORIGIN}\n42\n{base64.b64encode(root).decode()}\ntime 2024-05-01T10:22:33.000000Z\n"
    assert sig_line.startswith(f"\u2014 {ORIGIN} ") and sig_line.endswith("\n")
    blob = base64.b64decode(sig_line.split()[2])
    assert blob[:4] == key.verify_key.key_id(ORIGIN) and len(blob) == 68
    cp = parse_checkpoint(note, key=key.verify_key, origin=ORIGIN)
    assert (cp.origin, cp.size, cp.root, cp.time) == (ORIGIN, 42, root, "2024-05-01T10:22:33.000000Z")


def test_tampered_or_foreign_notes_are_rejected(key):
    note = sign_note(checkpoint_text(ORIGIN, 42, bytes(32), "t"), ORIGIN, key)
    with pytest.raises(VerificationError, match="does not verify"):
        open_note(note.replace(b"\n42\n", b"\n43\n"), ORIGIN, key.verify_key)
    other = SigningKey.generate()
    with pytest.raises(VerificationError, match="not signed by"):
        open_note(note, ORIGIN, other.verify_key)
    with pytest.raises(VerificationError, match="not signed by"):
        parse_checkpoint(note, key=key.verify_key, origin=ORIGIN + "x")  # the key name is the origin
    with pytest.raises(VerificationError, match="origin"):
        parse_checkpoint(note, origin=ORIGIN + "x")
    # A second signature by an unknown key is ignored (cosigners, rotation).
    cosigned = note + sign_note(checkpoint_text(ORIGIN, 42, bytes(32), "t"), "witness.example", other).split(b"\n\n")[1]
    assert open_note(cosigned, ORIGIN, key.verify_key).startswith(ORIGIN)


def test_openssl_verifies_a_checkpoint_signature(tmp_path, key):
    note = sign_note(checkpoint_text(ORIGIN, 7, bytes(32), "2024-05-01T00:00:00.000000Z"), ORIGIN, key)
    (tmp_path / "pub.pem").write_bytes(key.verify_key.pem())
    (tmp_path / "cp.note").write_bytes(note)
    script = """
        awk 'NF == 0 { exit } { print }' cp.note > text
        tail -n 1 cp.note | awk '{ print $3 }' | openssl base64 -d -A | tail -c 64 > sig
        openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in text -sigfile sig
    """
    ok = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout
    (tmp_path / "cp.note").write_bytes(note.replace(b"\n7\n", b"\n8\n"))
    bad = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0
