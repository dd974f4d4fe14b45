"""The one streamed pass: a release's compressed slot image goes from the
network into the inactive slot with nothing in between but a bounded
buffer, and its UKI onto the ESP with its tries counter last.

Order (each step is safe to interrupt; the next run starts again from the
first; plugins/update-ab/README.md):

1. plan: the booted slot is never the target; the entries of the version
   that lived in the other slot go first (never the only blessed entry),
   then any ``.partial`` UKI; the slot is labelled ``_empty``;
2. stream: compressed chunks in, sha256 of them, zstd/xz decompressed into
   1 MiB buffers that a writer thread writes at the slot's offset and
   hashes while the next is decompressed; lengths
   bounded by the release's and the slot's; both hashes compared when the
   stream ends; fsync;
3. read back, overlapped with 2: every 64 MiB the writer fdatasyncs and a
   reader thread drops that range's page cache (``POSIX_FADV_DONTNEED``) and
   reads it from the disk; the read-back's hash is compared at the end;
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
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import zstandard

from . import disk as gpt
from .esp import PARTIAL, Esp, entry_name

CHUNK = 256 << 10  # network chunks
OUT = 1 << 20  # decompressed buffers handed to the writer
DEPTH = 4  # buffers in flight: memory is DEPTH x OUT whatever the image's size
SYNC_EVERY = 64 << 20  # synced and handed to the read-back this often
# Where the install tells its caller how far it is (the runner journals
# some and its test-only pause hook may stop at any): the first chunk
# received, half the image written, both hashes verified at the stream's
# end, fsynced, read back, the slot labelled, the UKI's .partial checked,
# the UKI renamed (installed).
STAGES = ("download", "mid-write", "verified", "written", "read-back", "labelled", "uki-partial", "installed")


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
Stage = Callable[[str, dict], None]


def plan(disk: Path, esp: Esp, *, booted: str, version: str) -> Plan:
    """What the install will touch, decided before anything is written."""
    gpt.check_version(version)
    mine, other = gpt.booted_and_inactive(disk, booted)
    if version == booted:
        raise InstallRefused(f"version {version}: it is the booted version (slot {mine.number}); nothing to install")
    entries = esp.entries()
    bad = [e.name for e in entries if e.version == version and e.state == "bad"]
    if bad:
        raise InstallRefused(f"version {version}: it ran out of tries on this appliance ({', '.join(bad)}): "
                             "not installed again; a newer release is needed")
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

    def __init__(self, chunks: Iterable[bytes], limit: int, what: str, stage: Stage | None,
                 hashed: bool = True) -> None:
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = memoryview(b"")
        self.n = 0
        self.sha = hashlib.sha256() if hashed else None
        self._limit, self._what, self._stage = limit, what, stage

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not len(self._buf):
            try:
                chunk = next(self._it)
            except StopIteration:
                return 0
            if self.n == 0 and self._stage:
                self._stage("download", {"path": self._what})
            self.n += len(chunk)
            if self.n > self._limit:
                raise InstallRefused(f"{self._what}: more than the release's {self._limit} bytes were served")
            if self.sha is not None:
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


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by its path (the runner's journal directory too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _ReadBack:
    """Reads back what the writer has synced, on a thread of its own, while
    the writer goes on: each range's cached pages are dropped first
    (POSIX_FADV_DONTNEED; they are clean once synced), so the bytes come
    from the medium; one sha256 over the slot, in order."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.sha = hashlib.sha256()
        self.done = 0
        self.error: OSError | InstallError | None = None
        self.ranges: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="slot-read-back", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buf = bytearray(OUT)
        view = memoryview(buf)
        while (item := self.ranges.get()) is not None:
            if self.error is not None:
                continue
            offset, length = item
            try:
                os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_DONTNEED)
                end = offset + length
                while offset < end:
                    n = os.preadv(self.fd, [view[:min(OUT, end - offset)]], offset)
                    if n <= 0:
                        raise InstallError(f"short read at byte {offset}")
                    self.sha.update(view[:n])
                    offset += n
                    self.done += n
                os.posix_fadvise(self.fd, item[0], length, os.POSIX_FADV_DONTNEED)
            except (OSError, InstallError) as exc:
                self.error = exc

    def add(self, offset: int, length: int) -> None:
        if length:
            self.ranges.put((offset, length))

    def close_quietly(self) -> None:
        self.error = self.error or InstallError("abandoned")
        self.ranges.put(None)
        self.thread.join()
        os.close(self.fd)

    def close(self) -> str:
        self.ranges.put(None)
        self.thread.join()
        os.close(self.fd)
        if self.error is not None:
            raise InstallError(f"reading the slot back: {self.error}")
        return self.sha.hexdigest()


class _SlotWriter:
    """pwrite and the image's sha256 on a thread of their own (both release
    the GIL), so decompressing the next MiB overlaps writing this one; a
    pool of DEPTH buffers bounds memory. Every SYNC_EVERY bytes it
    fdatasyncs and hands what is on the medium to the read-back."""

    def __init__(self, fd: int, start: int, back: _ReadBack) -> None:
        self.fd = fd
        self.start, self.synced, self.end = start, start, start
        self.back = back
        self.sha = hashlib.sha256()
        self.error: OSError | None = None
        self.free: queue.Queue[bytearray] = queue.Queue()
        self.full: queue.Queue[tuple[bytearray, int, int] | None] = queue.Queue()
        for _ in range(DEPTH):
            self.free.put(bytearray(OUT))
        self.thread = threading.Thread(target=self._run, name="slot-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.full.get()) is not None:
            buf, n, offset = item
            if self.error is None:
                view = memoryview(buf)[:n]
                try:
                    done = 0
                    while done < n:
                        done += os.pwrite(self.fd, view[done:], offset + done)
                    self.sha.update(view)
                    self.end = offset + n
                    if self.end - self.synced >= SYNC_EVERY:
                        os.fdatasync(self.fd)
                        self.back.add(self.synced, self.end - self.synced)
                        self.synced = self.end
                except OSError as exc:
                    self.error = exc
                view.release()
            self.free.put(buf)

    def buffer(self) -> bytearray:
        self.check()
        return self.free.get()

    def put(self, buf: bytearray, n: int, offset: int) -> None:
        self.full.put((buf, n, offset))

    def close(self) -> None:
        self.full.put(None)
        self.thread.join()

    def finish(self) -> None:
        """fsync the rest and hand it to the read-back."""
        os.fsync(self.fd)
        self.back.add(self.synced, self.end - self.synced)
        self.synced = self.end

    def check(self) -> None:
        if self.error is not None:
            raise InstallError(f"writing the slot: {self.error}")


def write_slot(p: Plan, image: ImageLike, chunks: Iterable[bytes], *, progress: Progress | None = None,
               stage: Stage | None = None, source_verified: bool = False) -> tuple[int, int]:
    """Stream ``chunks`` into the plan's target slot, verify, read back.
    ``source_verified``: the iterator itself raises at its end when the
    compressed bytes' sha256 differs (release.ReleaseClient.stream does),
    so it is not computed twice. Returns (compressed bytes, image bytes)."""
    slot = p.target.partition
    if slot.start == p.booted.partition.start:
        raise InstallRefused(f"{p.disk}: refusing to write the booted slot {slot.number}")
    if image.size > slot.size:
        raise InstallRefused(f"image {image.path}: {image.size} bytes do not fit slot {slot.number} ({slot.size} bytes)")
    src = _Counted(chunks, image.length, f"image {image.path}", stage, hashed=not source_verified)
    written, half = 0, False
    back = _ReadBack(p.disk)
    fd = os.open(p.disk, os.O_WRONLY)
    writer = _SlotWriter(fd, slot.start, back)
    try:
        reader = _decompressed(src, image.compression)
        try:
            while True:
                buf = writer.buffer()
                n = _fill(reader, buf)
                if not n:
                    writer.free.put(buf)
                    break
                if written + n > image.size:
                    raise InstallRefused(f"image {image.path}: decompresses to more than the release's {image.size} bytes")
                writer.put(buf, n, slot.start + written)
                written += n
                if progress:
                    progress("writing", written, image.size)
                if stage and not half and written * 2 >= image.size:
                    half = True
                    stage("mid-write", {"bytes": written, "of": image.size})
            src.drain()  # to the stream's end: the release client checks its hash there
        except (zstandard.ZstdError, lzma.LZMAError, EOFError) as exc:
            raise InstallRefused(f"image {image.path}: not a valid {image.compression} stream ({exc})") from None
        finally:
            writer.close()
        writer.check()
        out_sha = writer.sha
        got = src.sha.hexdigest() if src.sha is not None else image.sha256
        if src.n != image.length or got != image.sha256:
            raise InstallRefused(f"image {image.path}: {src.n} bytes with sha256 {got}, "
                                 f"the release says {image.length} bytes with sha256 {image.sha256}")
        if written != image.size or out_sha.hexdigest() != image.image_sha256:
            raise InstallRefused(f"image {image.path}: decompressed to {written} bytes with sha256 "
                                 f"{out_sha.hexdigest()}, the release says {image.size} with {image.image_sha256}")
        if stage:
            stage("verified", {"compressed_bytes": src.n, "sha256": image.sha256, "image_bytes": written,
                               "image_sha256": image.image_sha256})
        writer.finish()
    except BaseException:
        back.close_quietly()
        raise
    finally:
        os.close(fd)
    if stage:
        stage("written", {"slot": slot.number, "offset": slot.start, "bytes": written})
    if progress:
        progress("read-back", back.done, image.size)
    got = back.close()
    if back.done != image.size or got != image.image_sha256:
        raise InstallError(f"{p.disk}: slot {slot.number} read back with sha256 {got}, written {image.image_sha256}: "
                           "the disk did not keep what was written")
    return src.n, written


def _fill(reader: io.RawIOBase | io.BufferedIOBase, buf: bytearray) -> int:
    """Fill ``buf`` as far as the stream goes (a reader may return less)."""
    view, n = memoryview(buf), 0
    while n < len(buf):
        k = reader.readinto(view[n:])
        if not k:
            break
        n += k
    view.release()
    return n


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
            progress: Progress | None = None, stage: Stage | None = None, source_verified: bool = False) -> Result:
    """Install ``version`` into the slot not booted; the entry on trial."""
    if tries < 1:
        raise InstallError(f"tries = {tries}: expected at least 1")
    t0 = time.monotonic()
    p = plan(disk, esp, booted=booted, version=version)
    for name in p.remove:
        esp.remove(name)
    if p.target.partition.label != gpt.EMPTY:
        gpt.set_label(disk, p.target.number, gpt.EMPTY)
    compressed, size = write_slot(p, image, image_chunks, progress=progress, stage=stage,
                                  source_verified=source_verified)
    if stage:
        stage("read-back", {"slot": p.target.number, "image_sha256": image.image_sha256})
    gpt.set_label(disk, p.target.number, gpt.PREFIX + version)
    if stage:
        stage("labelled", {"slot": p.target.number, "label": gpt.PREFIX + version})
    if progress:
        progress("installing", 0, uki.length)
    try:
        name = install_uki(esp, version, tries, uki, uki_chunks)
    except BaseException:
        gpt.set_label(disk, p.target.number, gpt.EMPTY)  # nothing half-installed stays named
        raise
    if stage:
        stage("uki-partial", {"entry": name + PARTIAL, "sha256": uki.sha256})
    esp.rename(name + PARTIAL, name)
    if stage:
        stage("installed", {"entry": name, "tries": tries, "slot": p.target.number})
    return Result(version, p.target.number, name, compressed, size, time.monotonic() - t0)
