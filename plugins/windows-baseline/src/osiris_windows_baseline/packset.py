"""The check packs the plugin loads: the ones it ships, then the site's
(setting ``packs``), each kept as its last good copy under the state
directory.

A pack that cannot be used (unreadable, not YAML, a bad field or probe, a
check id another pack or the plugin's code already declares) is reported
with file and line, and its last good copy, the bytes that last loaded
cleanly from that same path, is used instead: the agent keeps its last
good set. A pack with no good copy yet is left out. Packs are read when the
agent starts (a change takes effect at the next start; on NixOS a changed
pack is a changed config, which restarts the agent); ``osiris config
check`` and ``osiris checks`` read them the same way and print the errors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pack import Pack, PackError, parse

log = logging.getLogger("osiris.windows_baseline.packs")

SHIPPED = Path(__file__).with_name("packs")
SHIPPED_PREFIX = "osiris_windows_baseline/packs/"  # how shipped packs are named: the same on every install
LAST_GOOD = Path("windows-baseline") / "packs"  # under the state directory


@dataclass
class Loaded:
    file: str
    origin: str  # "shipped" | "site"
    status: str  # "loaded" | "last_good" (the file is broken; its last good copy is in use) | "rejected"
    pack: Pack | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class PackSet:
    loaded: list[Loaded]
    good: dict[str, bytes] = field(default_factory=dict)  # name -> the bytes that loaded cleanly

    def keep(self, state_dir: Path) -> None:
        """Save each pack that loaded cleanly as its last good copy. Only the
        agent does this, once it runs (its state directory exists, with its
        modes); commands that merely read packs never write."""
        for name, data in self.good.items():
            _keep(state_dir, name, data)

    @property
    def packs(self) -> list[Pack]:
        return [lp.pack for lp in self.loaded if lp.pack is not None]

    @property
    def errors(self) -> list[str]:
        return [e for lp in self.loaded for e in lp.errors]

    def evidence(self) -> dict[str, Any]:
        """The ``check_packs`` bundle's payload (docs/evidence.md)."""
        return {"packs": [{"file": lp.file, "origin": lp.origin, "status": lp.status,
                           "sha256": lp.pack.sha256 if lp.pack else None,
                           "checks": [e.check.id for e in lp.pack.entries] if lp.pack else [],
                           "errors": list(lp.errors)} for lp in self.loaded]}


def shipped_files() -> list[tuple[str, Path]]:
    return [(SHIPPED_PREFIX + p.name, p) for p in sorted(SHIPPED.glob("*.yaml"))]


def site_files(paths: Iterable[Path]) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """Pack files named by the setting: files, and the *.yaml / *.yml files
    of directories. A directory that cannot be listed is an error (its
    packs cannot be named, so none of them is loaded)."""
    out: list[tuple[str, Path]] = []
    errors: list[tuple[str, str]] = []  # (directory, message)
    for p in paths:
        p = Path(p)
        if p.is_dir():
            try:
                found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            except OSError as exc:
                errors.append((str(p), f"{p}: cannot list the directory: {exc.strerror}"))
                continue
            out.extend((str(f), f) for f in found)
        else:
            out.append((str(p), p))
    return out, errors


def _copy_path(state_dir: Path, name: str) -> Path:
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    return state_dir / LAST_GOOD / f"{digest}-{Path(name).name}"


def _keep(state_dir: Path, name: str, data: bytes) -> None:
    """Save ``data`` as the last good copy of pack ``name``, atomically,
    private to the agent's user; a failure is logged, not fatal."""
    path = _copy_path(state_dir, name)
    try:
        if path.exists() and path.read_bytes() == data:
            return
        for d in (path.parent.parent, path.parent):
            d.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("check pack %s: cannot keep its last good copy at %s: %s", name, path, exc)


def _parse_checked(data: bytes, name: str, taken: Mapping[str, str]) -> Pack:
    pack = parse(data, name)
    clash = [f"{name}:{e.line}: check {e.check.id!r} is already declared by {taken[e.check.id]}"
             for e in pack.entries if e.check.id in taken]
    if clash:
        raise PackError(clash)
    return pack


def load_one(name: str, path: Path, origin: str, state_dir: Path | None,
             taken: Mapping[str, str]) -> tuple[Loaded, bytes | None]:
    """The pack at ``path``, else its last good copy; and the bytes to keep
    as its new last good copy (None when it did not load cleanly)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        errors = [f"{name}: cannot read: {exc.strerror or exc}"]
    else:
        try:
            pack = _parse_checked(data, name, taken)
        except PackError as exc:
            errors = exc.messages
        else:
            return Loaded(name, origin, "loaded", pack), data
    copy = _copy_path(state_dir, name) if state_dir is not None else None
    if copy is not None and copy.is_file():
        try:
            pack = _parse_checked(copy.read_bytes(), name, taken)
        except (OSError, PackError) as exc:
            errors.append(f"{name}: its last good copy ({copy}) cannot be used either: {exc}")
        else:
            errors.append(f"{name}: using its last good copy (sha256 {pack.sha256[:12]}) from {copy}")
            return Loaded(name, origin, "last_good", pack, errors), None
    else:
        errors.append(f"{name}: no last good copy: its checks are not loaded")
    return Loaded(name, origin, "rejected", None, errors), None


def load(site: Sequence[Path], state_dir: Path | None, taken: Mapping[str, str]) -> PackSet:
    """Every shipped pack, then every site pack, in order. ``taken``: check
    ids declared elsewhere (the plugin's code) -> where."""
    taken = dict(taken)
    files, errors = site_files(site)
    out = PackSet([Loaded(d, "site", "rejected", None, [msg]) for d, msg in errors])
    for origin, items in (("shipped", shipped_files()), ("site", files)):
        for name, path in items:
            lp, good = load_one(name, path, origin, state_dir, taken)
            if good is not None:
                out.good[name] = good
            if lp.pack is not None:
                taken.update({e.check.id: f"{name}:{e.line}" for e in lp.pack.entries})
            for msg in lp.errors:
                log.error("check pack: %s", msg)
            out.loaded.append(lp)
    return out
