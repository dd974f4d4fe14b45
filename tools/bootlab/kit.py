"""The lab's parts for other tests: build a disk image file with a version
installed, build a release's two artefacts (slot image and UKI) for any
version, and boot an existing disk image file until a condition holds,
reporting the versions that ran and the ESP's UKIs afterwards. The update
backend's test installs a release with the real installer between the two;
docs/image.md, "The boot lab as a library"."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import disk as disks
from . import guest, kernel, qemu, uki
from .layout import REPO, Layout, load

CACHE = REPO / ".cache" / "boot-lab"


@dataclass(frozen=True)
class Release:
    """A version's two artefacts, as a release ships them: ``slot_image``
    (``<dir>/osiris_<v>.squashfs``, the slot's content, its gate passing or
    failing) and ``uki`` (``<dir>/osiris_<v>.efi``, to be installed as
    ``EFI/Linux/osiris_<v>+<tries>.efi``); ``<dir>/release.json`` names both
    with their sizes and SHA-256."""

    version: str
    healthy: bool
    slot_image: Path
    uki: Path
    manifest: Path


@dataclass(frozen=True)
class Disk:
    """A lab disk image file and the firmware variable store it boots with."""

    path: Path
    vars_fd: Path


@dataclass
class DiskBoots:
    """What ``boot_disk`` saw: every boot (``qemu.Boot``: version, gate,
    blessed, how it ended) and the ESP's EFI/Linux afterwards."""

    boots: list[qemu.Boot]
    entries_after: list[str]
    condition_met: bool

    @property
    def versions(self) -> list[str | None]:
        return [b.version for b in self.boots]

    def as_dict(self) -> dict:
        return {"versions": self.versions, "entries_after": self.entries_after, "condition_met": self.condition_met,
                "boot_log": [{"version": b.version, "entry": b.entry, "gate": b.gate, "blessed": b.blessed,
                              "already_blessed": b.already_blessed, "ended": b.ended,
                              "seconds": round(b.seconds, 1)} for b in self.boots]}


@dataclass
class Kit:
    """What every disk and release is built from: the layout, Debian's
    kernel (fetched once into ``cache``) and the initramfs, built in ``work``."""

    layout: Layout
    kernel: kernel.Kernel
    initrd: Path
    work: Path
    _built: dict = field(default_factory=dict)

    @classmethod
    def prepare(cls, work: Path, cache: Path = CACHE) -> Kit:
        work.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        layout = load()
        k = kernel.fetch(cache)
        return cls(layout, k, guest.initramfs(k, work / "initrd.img"), work)

    def name(self, version: str) -> str:
        """``osiris_<v>``: the slot's GPT label and the UKI's file name stem."""
        return self.layout.slot_label(version)

    def uki(self, version: str, out: Path) -> Path:
        """Version ``version``'s UKI: the kernel, the initramfs, its slot on
        the command line (``mount.usr=PARTLABEL=osiris_<v>``), its .osrel."""
        return uki.build(out, vmlinuz=self.kernel.vmlinuz, initrd=self.initrd,
                         cmdline_text=uki.cmdline(self.name(version)), osrel_text=uki.os_release(version))

    def slot(self, version: str, healthy: bool, out: Path) -> Path:
        """Version ``version``'s slot image (squashfs: its version and gate)."""
        return guest.slot_image(version, healthy, self.work / "slot-roots" / f"{version}-{healthy}", out=out)

    def release(self, version: str, out: Path, *, healthy: bool = True) -> Release:
        """The two artefacts of ``version``'s release in directory ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        stem = self.name(version)
        slot = self.slot(version, healthy, out / f"{stem}.squashfs")
        u = self.uki(version, out / f"{stem}.efi")
        files = {"slot_image": slot, "uki": u}
        manifest = out / "release.json"
        manifest.write_text(json.dumps({
            "version": version, "healthy": healthy, "tries": self.layout.tries,
            "install_uki_as": f"EFI/Linux/{stem}+{self.layout.tries}.efi", "slot_label": stem,
            **{k: {"file": p.name, "size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
               for k, p in files.items()}}, indent=2) + "\n")
        return Release(version, healthy, slot, u, manifest)

    def disk(self, version: str, out: Path, *, blessed: bool = False, healthy: bool = True) -> Disk:
        """A disk image file as the installer writes it (iso/layout.json, lab
        sizes): ``version`` in slot A (``osiris_<v>``), slot B ``_empty``, its
        UKI on the ESP as ``osiris_<v>+<tries>.efi``, or ``osiris_<v>.efi``
        with ``blessed`` (as its first boot leaves it); ``<out>.vars`` is a
        fresh OVMF variable store for it."""
        work = self.work / f"disk-{out.name}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        stem = self.name(version)
        entry = f"{stem}.efi" if blessed else f"{stem}+{self.layout.tries}.efi"
        esp = disks.esp_image(self.layout, work, ukis={entry: self.uki(version, work / f"{stem}.efi")})
        slot = self.slot(version, healthy, work / f"{stem}.squashfs")
        built = disks.build(self.layout, work, version=version, esp=esp, slot=slot)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(built, out)
        vars_fd = qemu.vars_file(out.with_name(out.name + ".vars"))
        shutil.rmtree(work, ignore_errors=True)
        return Disk(out, vars_fd)


def boot_disk(disk: Path, *, vars_fd: Path | None = None, boots: int = 1,
              until: Callable[[list[qemu.Boot]], bool] | None = None, max_boots: int = 10,
              log_dir: Path | None = None) -> DiskBoots:
    """Boot the disk image file ``disk`` in place (QEMU TCG, OVMF) ``boots``
    times, or with ``until`` until ``until(boots_so_far)`` is true (at most
    ``max_boots``; ``condition_met`` says whether it held). ``vars_fd``
    defaults to ``<disk>.vars`` (made from OVMF's template if missing).
    Serial logs go to ``log_dir`` (default: beside the disk). A boot that
    crashes or times out raises ``qemu.BootFailed`` naming its serial log."""
    if vars_fd is None:
        vars_fd = disk.with_name(disk.name + ".vars")
        if not vars_fd.exists():
            qemu.vars_file(vars_fd)
    logs = log_dir or disk.with_name(disk.name + ".boots")
    logs.mkdir(parents=True, exist_ok=True)
    m = qemu.Machine(disk.name, logs, disk, vars_fd, logs_before=len(list(logs.glob("boot-*.serial"))))
    met = False
    while len(m.boots) < (max_boots if until else boots):
        m.boot()
        if until is not None and until(m.boots):
            met = True
            break
    return DiskBoots(m.boots, m.entries(), met if until else True)
