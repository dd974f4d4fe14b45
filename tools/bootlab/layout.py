"""The disk layout, read from iso/layout.json (the same file the NixOS
image module reads), turned into systemd-repart definitions for the lab."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYOUT = REPO / "iso" / "layout.json"


class LayoutError(Exception):
    pass


@dataclass(frozen=True)
class Partition:
    id: str
    type: str
    format: str | None
    label: str
    size_mib: int
    lab_size_mib: int
    when: str | None

    def label_for(self, version: str) -> str:
        return self.label.replace("@version", version)


@dataclass(frozen=True)
class Layout:
    partitions: tuple[Partition, ...]
    tries: int
    entry_prefix: str
    empty_label: str
    label_max: int

    def lab_partitions(self) -> list[Partition]:
        """What the lab builds: no optional partitions (Debian 12's
        systemd-repart cannot make dm-verity ones)."""
        return [p for p in self.partitions if p.when is None]

    def get(self, pid: str) -> Partition:
        for p in self.partitions:
            if p.id == pid:
                return p
        raise LayoutError(f"{LAYOUT}: no partition with id {pid!r}")

    def slot_label(self, version: str) -> str:
        label = self.get("slot-a").label_for(version)
        if len(label) > self.label_max:
            raise LayoutError(f"version {version!r}: slot label {label!r} is longer than {self.label_max} characters")
        return label


def load(path: Path = LAYOUT) -> Layout:
    try:
        data = json.loads(path.read_text())
        parts = tuple(
            Partition(p["id"], p["type"], p.get("format"), p["label"], int(p["sizeMiB"]), int(p["labSizeMiB"]),
                      p.get("when"))
            for p in data["partitions"]
        )
        layout = Layout(parts, int(data["tries"]), data["entryPrefix"], data["emptyLabel"], int(data["labelMaxChars"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LayoutError(f"{path}: {type(exc).__name__}: {exc}") from None
    ids = [p.id for p in parts]
    for need in ("esp", "slot-a", "slot-b"):
        if need not in ids:
            raise LayoutError(f"{path}: key 'partitions': expected a partition with id {need!r}")
    return layout


def repart_definitions(layout: Layout, directory: Path, version: str, blocks: dict[str, Path]) -> None:
    """One systemd-repart definition per lab partition; ``blocks`` maps a
    partition id to the file its content is copied from (CopyBlocks=)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(layout.lab_partitions()):
        size = p.lab_size_mib * 1024 * 1024
        lines = ["[Partition]", f"Type={p.type}", f"Label={p.label_for(version)}",
                 f"SizeMinBytes={size}", f"SizeMaxBytes={size}"]
        if p.id in blocks:
            lines.append(f"CopyBlocks={blocks[p.id]}")
        (directory / f"{i:02d}-{p.id}.conf").write_text("\n".join(lines) + "\n")
