"""The lab's disk: an ESP (mkfs.vfat, filled with mtools: no loop mount),
the slots, laid out by systemd-repart from iso/layout.json on a plain file;
and reading it back afterwards (sfdisk for the GPT, mtools for the ESP)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .layout import Layout, repart_definitions

SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LOADER_CONF = "timeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n"


class DiskError(Exception):
    pass


def run(cmd: list[str], *, ok: tuple[int, ...] = (0,)) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    if res.returncode not in ok:
        raise DiskError(f"{' '.join(cmd)}: exit {res.returncode}: {(res.stderr or res.stdout).strip()[-400:]}")
    return res.stdout


def esp_image(layout: Layout, work: Path, *, ukis: dict[str, Path]) -> Path:
    """The ESP as a vfat file: Debian's systemd-boot as the removable-media
    loader, loader.conf, and ``ukis`` (file name -> UKI) in EFI/Linux."""
    if not SYSTEMD_BOOT.exists():
        raise DiskError(f"{SYSTEMD_BOOT} not found (Debian: apt-get install systemd-boot-efi)")
    img = work / "esp.img"
    img.unlink(missing_ok=True)
    size_kib = layout.get("esp").lab_size_mib * 1024
    run(["mkfs.vfat", "-C", "-F", "32", "-n", "ESP", str(img), str(size_kib)])
    i = ["-i", str(img)]
    for d in ("::/EFI", "::/EFI/BOOT", "::/EFI/systemd", "::/EFI/Linux", "::/loader"):
        run(["mmd", *i, d])
    run(["mcopy", *i, str(SYSTEMD_BOOT), "::/EFI/BOOT/BOOTX64.EFI"])
    run(["mcopy", *i, str(SYSTEMD_BOOT), "::/EFI/systemd/systemd-bootx64.efi"])
    conf = work / "loader.conf"
    conf.write_text(LOADER_CONF)
    run(["mcopy", *i, str(conf), "::/loader/loader.conf"])
    for name, uki in ukis.items():
        run(["mcopy", *i, str(uki), f"::/EFI/Linux/{name}"])
    return img


def build(layout: Layout, work: Path, *, version: str, esp: Path, slot: Path) -> Path:
    """The GPT disk image, by systemd-repart on a plain file."""
    defs = work / "repart.d"
    repart_definitions(layout, defs, version, {"esp": esp, "slot-a": slot})
    disk = work / "disk.img"
    disk.unlink(missing_ok=True)
    run(["systemd-repart", "--empty=create", "--size=auto", "--dry-run=no", "--no-pager",
         f"--definitions={defs}", "--seed=random", str(disk)])
    return disk


@dataclass(frozen=True)
class GptPartition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type: str
    name: str


def partitions(disk: Path) -> list[GptPartition]:
    table = json.loads(run(["sfdisk", "-J", str(disk)]))["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    out = []
    for p in table["partitions"]:
        number = int(p["node"].rsplit(str(disk.name), 1)[-1].lstrip("p") or 0)
        out.append(GptPartition(number, int(p["start"]) * sector, int(p["size"]) * sector, p["type"].upper(),
                                p.get("name", "")))
    return out


def esp_entries(disk: Path) -> list[str]:
    """The file names in the ESP's EFI/Linux (the UKIs, a cut install's
    ``.partial``), as mtools reads them."""
    esp = next(p for p in partitions(disk) if p.type == ESP_TYPE)
    out = run(["mdir", "-b", "-i", f"{disk}@@{esp.start}", "::/EFI/Linux"], ok=(0, 1))
    return sorted(line.rsplit("/", 1)[-1] for line in out.splitlines() if line.strip())
