"""The ESP's boot entries: one UKI per installed version in ``EFI/Linux/``,
named as the Boot Loader Specification counts boots,
``osiris_<version>[+LEFT[-DONE]].efi``: no counter is blessed (good), a
counter with tries left is a trial, ``+0-N`` is bad (docs/image.md).

Two ways to the same files: a mounted ESP directory (the appliance's
``/boot`` or ``/efi``) or, for disk image files, mtools on the ESP
partition at its byte offset (``mtools -i disk@@offset``, no loop mount).
Both write a new entry as ``<name>.partial``, read it back, and rename it
last, so a half-written UKI never has a name systemd-boot boots."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .disk import PREFIX, esp_partition

DIR = "EFI/Linux"
PARTIAL = ".partial"
_ENTRY = re.compile(r"^" + re.escape(PREFIX) + r"(?P<v>[A-Za-z0-9][A-Za-z0-9._~^-]*?)"
                    r"(?:\+(?P<left>\d+)(?:-(?P<done>\d+))?)?\.efi$")
CHUNK = 1 << 20


class EspError(Exception):
    """The ESP cannot be read or written; the message names it."""


@dataclass(frozen=True)
class Entry:
    name: str
    version: str
    tries_left: int | None
    tries_done: int | None

    @property
    def state(self) -> str:
        if self.tries_left is None:
            return "blessed"
        return "trial" if self.tries_left > 0 else "bad"


def parse(name: str) -> Entry | None:
    """A file name in EFI/Linux as an entry, or None (not ours, or .partial)."""
    m = _ENTRY.match(name)
    if not m:
        return None
    left, done = m.group("left"), m.group("done")
    return Entry(name, m.group("v"), int(left) if left is not None else None,
                 int(done) if done is not None else (0 if left is not None else None))


def entry_name(version: str, tries: int) -> str:
    return f"{PREFIX}{version}+{tries}.efi"


class Esp:
    """What the installer needs of an ESP."""

    def names(self) -> list[str]:  # file names in EFI/Linux
        raise NotImplementedError

    def remove(self, name: str) -> None:
        raise NotImplementedError

    def rename(self, old: str, new: str) -> None:
        raise NotImplementedError

    def write(self, name: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        """Write ``name`` from ``chunks``; (length, sha256) of what was written."""
        raise NotImplementedError

    def digest(self, name: str) -> tuple[int, str]:
        """(length, sha256) of ``name`` read back from the ESP."""
        raise NotImplementedError

    def entries(self) -> list[Entry]:
        return sorted((e for e in map(parse, self.names()) if e is not None), key=lambda e: e.name)


class DirEsp(Esp):
    """A mounted ESP (vfat): plain files, fsynced, the directory too."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / DIR

    def names(self) -> list[str]:
        if not self.root.is_dir():
            raise EspError(f"{self.root}: the ESP is not there (not mounted?)")
        return sorted(p.name for p in self.dir.iterdir()) if self.dir.is_dir() else []

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        (self.dir / name).unlink(missing_ok=True)
        self._sync_dir()

    def rename(self, old: str, new: str) -> None:
        os.rename(self.dir / old, self.dir / new)
        self._sync_dir()

    def write(self, name: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        h, n = hashlib.sha256(), 0
        with open(self.dir / name, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                h.update(chunk)
                n += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        self._sync_dir()
        return n, h.hexdigest()

    def digest(self, name: str) -> tuple[int, str]:
        h, n = hashlib.sha256(), 0
        with open(self.dir / name, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # read the disk, not the page cache
            while chunk := f.read(CHUNK):
                h.update(chunk)
                n += len(chunk)
        return n, h.hexdigest()


class ImageEsp(Esp):
    """The ESP partition of a disk image file, through mtools."""

    def __init__(self, disk: Path) -> None:
        self.disk = Path(disk)
        self.image = f"{self.disk}@@{esp_partition(self.disk).start}"

    def _mtools(self, *args: str, ok: tuple[int, ...] = (0,)) -> str:
        cmd = [args[0], "-i", self.image, *args[1:]]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EspError(f"{cmd[0]}: {exc}") from None
        if res.returncode not in ok:
            raise EspError(f"{' '.join(cmd)}: exit {res.returncode}: {(res.stderr or res.stdout).strip()[-300:]}")
        return res.stdout

    def names(self) -> list[str]:
        out = self._mtools("mdir", "-b", f"::/{DIR}", ok=(0, 1))
        names = (line.rstrip("/").rsplit("/", 1)[-1] for line in out.splitlines() if line.strip())
        # FAT is case-insensitive; mtools shows a bare 8.3 name (mren makes
        # one of "osiris_2.efi") in upper case, Linux's vfat in lower case.
        return sorted(n.lower() if n.isupper() else n for n in names)

    def remove(self, name: str) -> None:
        if name in self.names():
            self._mtools("mdel", f"::/{DIR}/{name}")

    def rename(self, old: str, new: str) -> None:
        self._mtools("mren", "-D", "o", f"::/{DIR}/{old}", f"::/{DIR}/{new}")

    def write(self, name: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        self._mtools("mmd", "-D", "s", "::/EFI", ok=(0, 1))
        self._mtools("mmd", "-D", "s", f"::/{DIR}", ok=(0, 1))
        h, n = hashlib.sha256(), 0
        with tempfile.NamedTemporaryFile(prefix="osiris-uki-") as tmp:
            for chunk in chunks:
                tmp.write(chunk)
                h.update(chunk)
                n += len(chunk)
            tmp.flush()
            self._mtools("mcopy", "-o", tmp.name, f"::/{DIR}/{name}")
        fd = os.open(self.disk, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return n, h.hexdigest()

    def digest(self, name: str) -> tuple[int, str]:
        h, n = hashlib.sha256(), 0
        cmd = ["mcopy", "-i", self.image, f"::/{DIR}/{name}", "-"]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}) as proc:
            while chunk := proc.stdout.read(CHUNK):
                h.update(chunk)
                n += len(chunk)
            err = proc.stderr.read().decode(errors="replace")
        if proc.returncode != 0:
            raise EspError(f"{' '.join(cmd)}: exit {proc.returncode}: {err.strip()[-300:]}")
        return n, h.hexdigest()


def open_esp(esp: str | Path, disk: Path) -> Esp:
    """``esp`` "image": the ESP partition of ``disk`` (an image file);
    otherwise the mounted ESP directory."""
    return ImageEsp(disk) if str(esp) == "image" else DirEsp(Path(esp))
