"""The one streamed pass: a release's compressed slot image goes from the
network into the inactive slot with nothing in between but a bounded
buffer, and its UKI onto the ESP with its tries counter last.

Order (each step is safe to interrupt; the next run starts again from the
first, docs/updates.md "What an interrupted install leaves"):

1. plan: the booted slot is never the target; the entries of the version
   that lived in the other slot go first (never the only blessed entry),
   then any ``.partial`` UKI; the slot is labelled ``_empty``;
2. stream: compressed chunks in, sha256 of them, zstd/xz decompressed into
   a 1 MiB buffer, sha256 of that, written at the slot's offset; lengths
   bounded by the release's and the slot's; both hashes compared when the
   stream ends; fsync;
3. read back: the range's page cache dropped (``POSIX_FADV_DONTNEED``), the
   slot read from the disk and its hash compared;
4. the slot labelled ``osiris_<version>``;
5. the UKI streamed to ``EFI/Linux/osiris_<version>+<tries>.efi.partial``,
   its hash checked as written and as read back, then renamed.

Until 5 ends no boot entry names the new version, so a power cut anywhere
leaves the booted version booting. Memory is the buffers (a few MiB),
whatever the image's size."""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import zstandard

from . import disk as gpt
from .esp import PARTIAL, Esp, entry_name

CHUNK = 1 << 20
STAGES = ("download", "mid-write", "written", "read-back", "labelled", "uki-partial", "installed")


class InstallError(Exception):
    """The install could not be done (the disk, the ESP, the network)."""

    refused = False


class InstallRefused(InstallError):
    """The install was refused: what was given is not what the release
    says, or doing it would break a rule (the booted slot, the only
    blessed entry). The message names what and why."""

    refused = True


class TargetLike(Protocol):
    path: str
    length: int
    sha256: str


class ImageLike(TargetLike, Protocol):
    compression: str
    size: int
    image_sha256: str


@dataclass(frozen=True)
class Plan:
    disk: Path
    version: str
    booted: gpt.Slot
    target: gpt.Slot
    remove: tuple[str, ...]  # ESP names to remove before the slot is written


@dataclass(frozen=True)
class Result:
    version: str
    slot: int
    entry: str
    compressed_bytes: int
    image_bytes: int
    seconds: float


Progress = Callable[[str, int, "int | None"], None]
Pause = Callable[[str], None]


def plan(disk: Path, esp: Esp, *, booted: str, version: str) -> Plan:
    """What the install will touch, decided before anything is written."""
    gpt.check_version(version)
    mine, other = gpt.booted_and_inactive(disk, booted)
    if version == booted:
        raise InstallRefused(f"version {version}: it is the booted version (slot {mine.number}); nothing to install")
    entries = esp.entries()
    remove = [e for e in entries if e.version != booted]
    blessed = [e for e in entries if e.state == "blessed"]
    if blessed and all(e in remove for e in blessed):
        names = ", ".join(e.name for e in blessed)
        raise InstallRefused(
            f"{disk}: the only blessed entry ({names}) is not of the booted version {booted}, which is still on "
            f"trial; installing would remove it (bless {booted} first: its health gate passes and boot-complete)")
    partial = [n for n in esp.names() if n.endswith(PARTIAL)]
    return Plan(disk, version, mine, other, tuple([e.name for e in remove] + partial))


class _Counted(io.RawIOBase):
    """The compressed chunks as a file: counted, hashed, and cut at
    ``limit`` bytes (a stream longer than the release says is refused)."""

    def __init__(self, chunks: Iterable[bytes], limit: int, what: str, pause: Pause | None) -> None:
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = memoryview(b"")
        self.n = 0
        self.sha = hashlib.sha256()
        self._limit, self._what, self._pause = limit, what, pause

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not len(self._buf):
            try:
                chunk = next(self._it)
            except StopIteration:
                return 0
            if self.n == 0 and self._pause:
                self._pause("download")
            self.n += len(chunk)
            if self.n > self._limit:
                raise InstallRefused(f"{self._what}: more than the release's {self._limit} bytes were served")
            self.sha.update(chunk)
            self._buf = memoryview(chunk)
        k = min(len(b), len(self._buf))
        b[:k] = self._buf[:k]
        self._buf = self._buf[k:]
        return k

    def drain(self) -> None:
        scratch = bytearray(CHUNK)
        while self.readinto(scratch):
            pass


def _decompressed(src: _Counted, compression: str) -> io.RawIOBase | io.BufferedIOBase:
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(src, read_size=CHUNK, read_across_frames=True)
    if compression == "xz":
        return lzma.LZMAFile(src)
    if compression == "none":
        return src
    raise InstallRefused(f"image compression {compression!r}: expected zstd, xz or none")


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_slot(p: Plan, image: ImageLike, chunks: Iterable[bytes], *, progress: Progress | None = None,
               pause: Pause | None = None) -> tuple[int, int]:
    """Stream ``chunks`` into the plan's target slot, verify, read back.
    Returns (compressed bytes, image bytes)."""
    slot = p.target.partition
    if slot.start == p.booted.partition.start:
        raise InstallRefused(f"{p.disk}: refusing to write the booted slot {slot.number}")
    if image.size > slot.size:
        raise InstallRefused(f"image {image.path}: {image.size} bytes do not fit slot {slot.number} ({slot.size} bytes)")
    src = _Counted(chunks, image.length, f"image {image.path}", pause)
    out_sha, written, half = hashlib.sha256(), 0, False
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    fd = os.open(p.disk, os.O_WRONLY)
    try:
        reader = _decompressed(src, image.compression)
        try:
            while n := reader.readinto(buf):
                if written + n > image.size:
                    raise InstallRefused(f"image {image.path}: decompresses to more than the release's {image.size} bytes")
                os.pwrite(fd, view[:n], slot.start + written)
                out_sha.update(view[:n])
                written += n
                if progress:
                    progress("writing", written, image.size)
                if pause and not half and written * 2 >= image.size:
                    half = True
                    pause("mid-write")
            src.drain()  # to the stream's end: the release client checks its hash there
        except (zstandard.ZstdError, lzma.LZMAError, EOFError) as exc:
            raise InstallRefused(f"image {image.path}: not a valid {image.compression} stream ({exc})") from None
        if src.n != image.length or src.sha.hexdigest() != image.sha256:
            raise InstallRefused(f"image {image.path}: {src.n} bytes with sha256 {src.sha.hexdigest()}, "
                                 f"the release says {image.length} bytes with sha256 {image.sha256}")
        if written != image.size or out_sha.hexdigest() != image.image_sha256:
            raise InstallRefused(f"image {image.path}: decompressed to {written} bytes with sha256 "
                                 f"{out_sha.hexdigest()}, the release says {image.size} with {image.image_sha256}")
        os.fsync(fd)
    finally:
        os.close(fd)
    if pause:
        pause("written")
    if progress:
        progress("read-back", 0, image.size)
    got = read_back(p.disk, slot.start, image.size, progress=progress)
    if got != image.image_sha256:
        raise InstallError(f"{p.disk}: slot {slot.number} read back with sha256 {got}, written {image.image_sha256}: "
                           "the disk did not keep what was written")
    return src.n, written


def read_back(path: Path, offset: int, length: int, *, progress: Progress | None = None) -> str:
    """sha256 of ``length`` bytes at ``offset`` as the disk has them: the
    range's cached pages are dropped first, so this reads the medium."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        h, done = hashlib.sha256(), 0
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while done < length:
            want = min(CHUNK, length - done)
            n = os.preadv(fd, [view[:want]], offset + done)
            if n <= 0:
                raise InstallError(f"{path}: short read at byte {offset + done}")
            h.update(view[:n])
            done += n
            if progress:
                progress("read-back", done, length)
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        return h.hexdigest()
    finally:
        os.close(fd)


def install_uki(esp: Esp, version: str, tries: int, uki: TargetLike, chunks: Iterable[bytes]) -> str:
    """The UKI as ``.partial``, checked as written and read back, renamed last."""
    name = entry_name(version, tries)
    partial = name + PARTIAL
    esp.remove(partial)
    src = _Counted(chunks, uki.length, f"UKI {uki.path}", None)

    def pieces() -> Iterator[bytes]:
        buf = bytearray(CHUNK)
        while n := src.readinto(buf):
            yield bytes(buf[:n])

    n, sha = esp.write(partial, pieces())
    if n != uki.length or sha != uki.sha256:
        esp.remove(partial)
        raise InstallRefused(f"UKI {uki.path}: {n} bytes with sha256 {sha}, the release says {uki.length} with {uki.sha256}")
    if esp.digest(partial) != (n, sha):
        esp.remove(partial)
        raise InstallError(f"UKI {partial}: read back differs from what was written")
    return name


def install(disk: Path, esp: Esp, *, booted: str, version: str, tries: int, image: ImageLike,
            image_chunks: Iterable[bytes], uki: TargetLike, uki_chunks: Iterable[bytes],
            progress: Progress | None = None, pause: Pause | None = None) -> Result:
    """Install ``version`` into the slot not booted; the entry on trial."""
    if tries < 1:
        raise InstallError(f"tries = {tries}: expected at least 1")
    t0 = time.monotonic()
    p = plan(disk, esp, booted=booted, version=version)
    for name in p.remove:
        esp.remove(name)
    if p.target.partition.label != gpt.EMPTY:
        gpt.set_label(disk, p.target.number, gpt.EMPTY)
    compressed, size = write_slot(p, image, image_chunks, progress=progress, pause=pause)
    if pause:
        pause("read-back")
    gpt.set_label(disk, p.target.number, gpt.PREFIX + version)
    if pause:
        pause("labelled")
    if progress:
        progress("installing", 0, uki.length)
    try:
        name = install_uki(esp, version, tries, uki, uki_chunks)
    except BaseException:
        gpt.set_label(disk, p.target.number, gpt.EMPTY)  # nothing half-installed stays named
        raise
    if pause:
        pause("uki-partial")
    esp.rename(name + PARTIAL, name)
    if pause:
        pause("installed")
    return Result(version, p.target.number, name, compressed, size, time.monotonic() - t0)
