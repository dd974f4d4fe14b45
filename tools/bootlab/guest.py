"""What the guest boots and reads: one initramfs (busybox, a few kernel
modules, sfdisk, init.sh) that every version's UKI carries, a slot image per
version (its version and its health gate), and the update medium an install
reads."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

from .kernel import Kernel

HERE = Path(__file__).resolve().parent
BUSYBOX = Path("/bin/busybox")


class GuestError(Exception):
    pass


class Cpio:
    """A newc cpio archive, as the kernel unpacks an initramfs."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1
        self.seen: set[str] = set()

    def _add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        if name in self.seen:
            return
        self.seen.add(name)
        head = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0))
        self.ino += 1
        blob = head.encode() + name.encode() + b"\0"
        blob += b"\0" * (-len(blob) % 4) + data + b"\0" * (-len(data) % 4)
        self.parts.append(blob)

    def dir(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._add("/".join(parts[:i]), stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o755) -> None:
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)
        self._add(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._add(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._add(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def bytes(self) -> bytes:
        self._add("TRAILER!!!", 0)
        return b"".join(self.parts)


def _libraries(binary: Path) -> list[Path]:
    """The shared objects ``binary`` loads, as ldd resolves them here."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            libs.append(Path(path))
    return libs


def initramfs(kernel: Kernel, out: Path) -> Path:
    if not BUSYBOX.exists():
        raise GuestError(f"{BUSYBOX} not found (Debian: apt-get install busybox-static)")
    sfdisk = shutil.which("sfdisk")
    if sfdisk is None:
        raise GuestError("sfdisk not found (Debian: apt-get install fdisk)")
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "esp", "slot", "medium", "etc", "lib/modules", "tmp"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.file("bin/busybox", BUSYBOX.read_bytes())
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            c.symlink(f"bin/{applet}", "busybox")
    # sfdisk (dynamic) and what it loads: the install relabels GPT partitions with it.
    c.file("bin/sfdisk", Path(sfdisk).read_bytes())
    for lib in _libraries(Path(sfdisk)):
        c.file(str(lib).lstrip("/"), lib.resolve().read_bytes())
    modules = kernel.module_files()
    for m in modules:
        c.file(f"lib/modules/{m.name}", m.read_bytes(), 0o644)
    c.file("etc/modules", "".join(f"{m.name}\n" for m in modules).encode(), 0o644)
    c.file("init", (HERE / "init.sh").read_bytes())
    out.write_bytes(gzip.compress(c.bytes(), compresslevel=6, mtime=0))
    return out


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    if res.returncode != 0:
        raise GuestError(f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()[-400:]}")


def slot_image(version: str, healthy: bool, work: Path, out: Path | None = None) -> Path:
    """A squashfs slot (``out``, default ``<work>/slot-<v>.squashfs``): the
    version and the health gate it boots with, built from ``<work>/slot-<v>``."""
    root = work / f"slot-{version}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "version").write_text(version + "\n")
    gate = root / "gate"
    gate.write_text("#!/bin/sh\n# The health gate of this version, as the lab scenario wants it.\n"
                    f"echo 'OSIRIS-LAB health checks of {version}: {'all pass' if healthy else 'agent.answers FAIL'}'\n"
                    f"exit {0 if healthy else 1}\n")
    gate.chmod(0o755)
    out = out or work / f"slot-{version}.squashfs"
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(["mksquashfs", str(root), str(out), "-quiet", "-noappend", "-comp", "gzip", "-all-root",
          "-mkfs-time", "0", "-all-time", "0"])
    return out


def medium(work: Path, *, version: str, slot: Path, uki: Path, tries: int, prefix: str, empty_label: str,
           pause: bool) -> Path:
    """The update medium: a vfat disk with the new slot and its UKI."""
    files = work / f"medium-{version}{'-pause' if pause else ''}"
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir(parents=True)
    shutil.copy(slot, files / "slot.img")
    (files / "slot.sha256").write_text(hashlib.sha256(slot.read_bytes()).hexdigest() + "\n")
    (files / "version").write_text(version + "\n")
    (files / "tries").write_text(f"{tries}\n")
    (files / "prefix").write_text(prefix + "\n")
    (files / "empty-label").write_text(empty_label + "\n")
    shutil.copy(uki, files / "uki.efi")
    if pause:
        (files / "pause").write_text("the lab answers at every install point\n")
    img = files.with_suffix(".img")
    img.unlink(missing_ok=True)
    size_kib = max(2048, (sum(f.stat().st_size for f in files.iterdir()) // 1024) * 2 + 1024)
    _run(["mkfs.vfat", "-C", "-n", "MEDIUM", str(img), str(size_kib)])
    _run(["mcopy", "-i", str(img), *[str(f) for f in sorted(files.iterdir())], "::/"])
    return img
