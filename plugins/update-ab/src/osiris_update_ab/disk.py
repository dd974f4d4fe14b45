"""The appliance's disk as the installer sees it: the GPT read with
``sfdisk --json`` (a block device or a disk image file alike), the two
slots found by their partition label (``osiris_<version>`` or ``_empty``,
docs/image.md), which one is booted, and relabelling with ``sfdisk
--part-label``. Slots are written at their byte offset in the disk itself,
so an image file and a block device are the same thing to the installer."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

PREFIX = "osiris_"
EMPTY = "_empty"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
# systemd's discoverable-partitions "usr" types (x86-64, arm64): the slots.
USR_TYPES = frozenset({"8484680C-9521-48C6-9C11-B0720656F69E", "B0E01050-EE5F-4390-949A-9101B17104E9"})
LABEL_MAX = 36  # GPT partition names: 36 UTF-16 code units
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~^-]*$")


class DiskError(Exception):
    """The disk cannot be read or changed as the installer needs; the
    message names the disk and what was expected."""


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes from the start of the disk
    size: int  # bytes
    type: str  # GPT type GUID, upper case
    label: str


@dataclass(frozen=True)
class Slot:
    """A usr partition: ``version`` is None when it is labelled ``_empty``
    (or anything that is not ``osiris_<version>``: being written, foreign)."""

    partition: Partition
    version: str | None

    @property
    def number(self) -> int:
        return self.partition.number


def check_version(version: str) -> str:
    """A version that names a slot and a UKI safely: no '/', '+', spaces,
    and a label that fits GPT's 36 characters."""
    if not _VERSION.match(version or ""):
        raise DiskError(f"version {version!r}: expected letters, digits and . _ ~ ^ - (it names a partition and a file)")
    if len(PREFIX + version) > LABEL_MAX:
        raise DiskError(f"version {version!r}: the label {PREFIX + version!r} is longer than {LABEL_MAX} characters")
    return version


def _run(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiskError(f"{cmd[0]}: {exc}") from None
    if res.returncode != 0:
        raise DiskError(f"{' '.join(cmd)}: exit {res.returncode}: {(res.stderr or res.stdout).strip()[-300:]}")
    return res.stdout


def partitions(disk: Path) -> list[Partition]:
    """The GPT's partitions, from ``sfdisk --json``."""
    try:
        table = json.loads(_run(["sfdisk", "--json", str(disk)]))["partitiontable"]
    except (ValueError, KeyError) as exc:
        raise DiskError(f"{disk}: sfdisk --json: unexpected output ({exc})") from None
    if table.get("label") != "gpt":
        raise DiskError(f"{disk}: partition table {table.get('label')!r}, expected gpt")
    sector = int(table.get("sectorsize", 512))
    out = []
    for p in table.get("partitions", []):
        node = str(p["node"])
        number = int(re.search(r"(\d+)$", node).group(1))
        out.append(Partition(number, int(p["start"]) * sector, int(p["size"]) * sector, str(p["type"]).upper(),
                             str(p.get("name", ""))))
    return out


def slot_version(label: str) -> str | None:
    if label.startswith(PREFIX) and not label.endswith("_verity"):
        v = label[len(PREFIX):]
        return v if _VERSION.match(v) else None
    return None


def slots(disk: Path) -> list[Slot]:
    """The disk's slots in GPT order (exactly two on an appliance)."""
    found = [Slot(p, slot_version(p.label)) for p in partitions(disk) if p.type in USR_TYPES]
    if len(found) != 2:
        raise DiskError(f"{disk}: {len(found)} usr partitions (slots), expected 2 (docs/image.md, iso/layout.json)")
    return found


def esp_partition(disk: Path) -> Partition:
    for p in partitions(disk):
        if p.type == ESP_TYPE:
            return p
    raise DiskError(f"{disk}: no EFI system partition (type {ESP_TYPE})")


def booted_and_inactive(disk: Path, booted: str) -> tuple[Slot, Slot]:
    """The booted version's slot and the other one. Refuses when the booted
    version has no slot on this disk: the installer never guesses which
    slot is running."""
    both = slots(disk)
    mine = [s for s in both if s.version == booted]
    if len(mine) != 1:
        labels = ", ".join(f"{s.partition.number}:{s.partition.label}" for s in both)
        raise DiskError(f"{disk}: booted version {booted!r} is in {len(mine)} slots ({labels}), expected exactly one")
    other = next(s for s in both if s is not mine[0])
    return mine[0], other


def set_label(disk: Path, number: int, label: str) -> None:
    """Rename partition ``number`` (and sync the table to the disk). The
    kernel's idea of the labels is left alone (``--no-reread``): the booted
    slot is busy, and the next boot reads the table anew."""
    if label != EMPTY:
        check_version(label[len(PREFIX):])
    _run(["sfdisk", "--no-reread", "--no-tell-kernel", "--part-label", str(disk), str(number), label])
    fd = os.open(disk, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cmdline_version(cmdline: str) -> str | None:
    for word in cmdline.split():
        for key in ("mount.usr=PARTLABEL=", "osiris.slot="):
            if word.startswith(key):
                return slot_version(word[len(key):])
    return None


def booted_version(given: str | None = None, *, os_release: Path = Path("/etc/os-release"),
                   cmdline: Path = Path("/proc/cmdline")) -> str:
    """The running version: ``given``, else os-release's IMAGE_VERSION,
    else the slot the kernel command line names."""
    if given:
        return check_version(given)
    try:
        for line in os_release.read_text().splitlines():
            if line.startswith("IMAGE_VERSION="):
                v = line.split("=", 1)[1].strip().strip("\"'")
                if v:
                    return check_version(v)
    except OSError:
        pass
    try:
        v = _cmdline_version(cmdline.read_text())
    except OSError:
        v = None
    if v:
        return check_version(v)
    raise DiskError(f"the booted version is unknown: no IMAGE_VERSION in {os_release}, no slot on {cmdline}; "
                    "set the plugin's booted_version")
