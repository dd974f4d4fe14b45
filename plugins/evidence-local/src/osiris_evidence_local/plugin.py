"""The evidence-local plugin: a write-once directory store.

Layout under ``path`` (one tree per log: a log is named by its origin and
the key that signs it, as the C2SP key id, 8 hex digits)::

    <path>/<origin>/<key id>/public-key.pem
    <path>/<origin>/<key id>/bundles/<index>.json    the exact signed bytes (RFC 8785)
    <path>/<origin>/<key id>/bundles/<index>.sig     the raw Ed25519 signature
    <path>/<origin>/<key id>/checkpoints/<size>.note signed C2SP checkpoints

the same names as in an export, so ``openssl pkeyutl -verify`` works on the
store as it is (docs/evidence.md). The key id is in the path because a new
key means a new log with the same origin, whose indexes start at 0 again:
without it the new log's ``bundles/000000000000.json`` would collide with
the old one's and the store would refuse every delivery. A store written
before the key id was in the path (``<path>/<origin>/public-key.pem``) keeps
being used for the key it holds.

Write-once: each file is written under a temporary name, fsynced, made
read-only (0444), then hard-linked to its final name, which fails if the
name exists; the directory is fsynced after. A name that already exists
with the same bytes is a redelivery and succeeds (the outbox delivers at
least once); one that exists with other bytes is refused and nothing is
overwritten.

The store must exist (it is usually a mount point): a missing or
unwritable store makes delivery fail, and the core's outbox retries with
backoff until it is back, so nothing is lost while a NAS is away. Real
immutability against a root user needs the storage's help (NAS snapshots,
object lock, ``chattr +i``); this plugin never rewrites or deletes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from osiris import SettingsSection, hookimpl
from osiris.evidence.bundle import SignedBundle
from osiris.evidence.files import WriteOnceViolation, write_once
from osiris.evidence.keys import VerifyKey
from osiris.evidence.note import parse_checkpoint

__all__ = ["LocalStore", "Settings", "WriteOnceViolation", "write_once"]

NAME = "evidence-local"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_KEY_ID = re.compile(r"^[0-9a-f]{8}$")
_CHECKPOINT_ID = re.compile(r"^checkpoint-([0-9a-f]{8})-(\d+)$")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = Field(default=None, description="Store directory (must exist, e.g. a mount point); unset: no sink")
    create: bool = Field(default=False, description="Create the store directory if it is missing (not for mount points)")


class LocalStore:
    name = NAME
    kinds = ("bundle", "checkpoint")

    def __init__(self, root: Path, *, public_key_pem: bytes | None = None, create: bool = False,
                 run: Callable[..., Awaitable[Any]] | None = None):
        self.root = Path(root)
        self.public_key_pem = public_key_pem
        self.create = create
        self._run = run or asyncio.to_thread
        self.written = 0

    def _base(self, origin: str, kid: str) -> Path:
        if not _SAFE.match(origin) or ".." in origin.split("/"):
            raise ValueError(f"log origin {origin!r} cannot name a directory")
        if not _KEY_ID.match(kid):
            raise ValueError(f"key id {kid!r}: expected 8 hex digits")
        if not self.root.is_dir():
            if not self.create:
                raise FileNotFoundError(f"{self.root}: the evidence store is not there (not mounted?)")
            self.root.mkdir(parents=True, exist_ok=True)
        base = self._legacy(origin, kid) or self.root / origin / kid
        for sub in ("bundles", "checkpoints"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        if self.public_key_pem is not None and not (base / "public-key.pem").exists():
            if VerifyKey.from_pem(self.public_key_pem).key_id(origin).hex() == kid:
                write_once(base / "public-key.pem", self.public_key_pem)
        return base

    def _legacy(self, origin: str, kid: str) -> Path | None:
        """``<root>/<origin>`` if it is a store of the old layout for this key."""
        base = self.root / origin
        try:
            pem = (base / "public-key.pem").read_bytes()
        except FileNotFoundError:
            return None
        return base if VerifyKey.from_pem(pem, str(base / "public-key.pem")).key_id(origin).hex() == kid else None

    def store(self, item_id: str, payload: bytes) -> int:
        """Write one item (synchronously); returns how many files were new."""
        if item_id.startswith("checkpoint-"):
            m = _CHECKPOINT_ID.match(item_id)
            if m is None:
                raise ValueError(f"checkpoint item id {item_id!r}: expected checkpoint-<key id>-<size>")
            cp = parse_checkpoint(payload)
            if int(m.group(2)) != cp.size:
                raise ValueError(f"checkpoint {cp.size} delivered as {item_id}")
            return int(write_once(self._base(cp.origin, m.group(1)) / "checkpoints" / f"{cp.size}.note", payload))
        sb = SignedBundle.from_envelope(payload)
        if sb.bundle_id != item_id:
            raise ValueError(f"envelope holds bundle {sb.bundle_id}, delivered as {item_id}")
        base = self._base(sb.log, sb.key_id.hex()) / "bundles"
        name = f"{sb.index:012d}"
        return int(write_once(base / f"{name}.sig", sb.signature)) + int(write_once(base / f"{name}.json", sb.body))

    async def deliver(self, item_id: str, payload: bytes) -> None:
        self.written += await self._run(self.store, item_id, payload)

    def newest_checkpoint(self, origin: str, kid: str) -> bytes | None:
        """The newest checkpoint note stored for the log ``origin`` signed by
        key ``kid`` (synchronously), or None. Nothing is created."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: the evidence store is not there (not mounted?)")
        base = self._legacy(origin, kid) or self.root / origin / kid
        sizes = [int(p.name[:-5]) for p in (base / "checkpoints").glob("*.note") if p.name[:-5].isdigit()]
        return (base / "checkpoints" / f"{max(sizes)}.note").read_bytes() if sizes else None

    async def latest_checkpoint(self, origin: str, key_id: str) -> bytes | None:
        """What ``osiris evidence verify`` compares the log with: a log cut
        short below this store's newest checkpoint fails."""
        return await self._run(self.newest_checkpoint, origin, key_id)


@hookimpl
def osiris_settings():
    return SettingsSection(NAME, Settings, "Write-once directory store for signed evidence")


@hookimpl
def osiris_evidence_sinks(ctx):
    s: Settings = ctx.settings(NAME)
    if s.path is None:
        return None
    pem = ctx.evidence.verify_key.pem() if ctx.evidence is not None else None
    return LocalStore(s.path, public_key_pem=pem, create=s.create, run=ctx.run_blocking)
