"""Signed notes and checkpoints in the C2SP formats (c2sp.org/signed-note,
c2sp.org/tlog-checkpoint).

Why our own code: the formats are a few lines of text and an Ed25519
signature; the Python packages that implement them are tied to other
transparency-log stacks (sigstore, Go's sumdb ports) and would bring far
more than they save. Following the specs keeps checkpoints readable by the
Go ``golang.org/x/mod/sumdb/note`` verifier and by OpenSSL alone
(docs/evidence.md shows the two commands).

A checkpoint's text is::

    <origin>
    <tree size>
    <base64 root hash>
    time <RFC 3339 UTC>

The ``time`` line is an extension line (allowed by the spec, opaque to
generic verifiers, covered by the signature like the rest of the text).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime

from .errors import VerificationError
from .keys import SigningKey, VerifyKey

__all__ = ["sign_note", "open_note", "Checkpoint", "checkpoint_text", "parse_checkpoint", "note_text"]

_DASH = "\u2014"
_SIG_LINE = re.compile(rf"^{_DASH} (\S+) ([A-Za-z0-9+/=]+)$")
_NAME = re.compile(r"^[^\s+]+$")


def sign_note(text: str, name: str, key: SigningKey) -> bytes:
    """A signed note: text (ending in newline), blank line, one signature line."""
    if not _NAME.match(name):
        raise ValueError(f"key name {name!r}: must be non-empty without spaces or '+'")
    if not text.endswith("\n") or any(ord(c) < 0x20 and c != "\n" for c in text):
        raise ValueError("note text must end in a newline and contain no control characters")
    data = text.encode("utf-8")
    sig = key.verify_key.key_id(name) + key.sign(data)
    return data + b"\n" + f"{_DASH} {name} {base64.b64encode(sig).decode()}\n".encode()


def note_text(note: bytes) -> tuple[bytes, list[str]]:
    """Split a note into its signed text and its signature lines."""
    if not note.endswith(b"\n"):
        raise VerificationError("note does not end in a newline")
    sep = note.rfind(b"\n\n")
    if sep < 0:
        raise VerificationError("note has no blank line before its signatures")
    text, sigs = note[: sep + 1], note[sep + 2:]
    try:
        lines = sigs.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise VerificationError("note signature lines are not UTF-8") from None
    return text, lines


def open_note(note: bytes, name: str, key: VerifyKey) -> str:
    """Verify a note signed by ``key`` under ``name``; returns its text.

    As the spec says, signatures by unknown keys are ignored, a known key's
    bad signature rejects the note, and a note with no signature by the key
    is rejected.
    """
    text, lines = note_text(note)
    want_id = key.key_id(name)
    verified = False
    for line in lines:
        m = _SIG_LINE.match(line)
        if not m:
            raise VerificationError(f"malformed signature line {line[:60]!r}")
        if m.group(1) != name:
            continue
        try:
            blob = base64.b64decode(m.group(2), validate=True)
        except binascii.Error:
            raise VerificationError("signature is not base64") from None
        if blob[:4] != want_id:
            continue
        if len(blob) != 68 or not key.verify(blob[4:], text):
            raise VerificationError(f"signature by {name} does not verify")
        verified = True
    if not verified:
        raise VerificationError(f"note is not signed by {name} (key id {want_id.hex()})")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError("note text is not UTF-8") from None


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: str  # RFC 3339 UTC text, as signed
    note: bytes  # the whole signed note, byte for byte

    @property
    def datetime(self) -> datetime:
        return datetime.fromisoformat(self.time.replace("Z", "+00:00"))


def checkpoint_text(origin: str, size: int, root: bytes, time: str) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\ntime {time}\n"


def parse_checkpoint(note: bytes, *, key: VerifyKey | None = None, origin: str | None = None) -> Checkpoint:
    """Parse (and, given ``key``, verify) a checkpoint note."""
    if key is not None:
        if origin is None:
            raise ValueError("verifying a checkpoint needs its origin (the key name)")
        text = open_note(note, origin, key)
    else:
        raw, _ = note_text(note)
        text = raw.decode("utf-8", errors="strict")
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise VerificationError("checkpoint text has fewer than three lines")
    got_origin, size_text, root_text = lines[:3]
    if origin is not None and got_origin != origin:
        raise VerificationError(f"checkpoint origin {got_origin!r}, expected {origin!r}")
    if not re.fullmatch(r"0|[1-9][0-9]*", size_text):
        raise VerificationError(f"checkpoint tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise VerificationError("checkpoint root hash is not base64") from None
    if len(root) != 32:
        raise VerificationError(f"checkpoint root hash has {len(root)} bytes, expected 32")
    time = ""
    for ext in lines[3:]:
        if ext.startswith("time "):
            time = ext[5:]
    return Checkpoint(got_origin, int(size_text), root, time, note)
