"""Debian's kernel, fetched once with ``apt-get download`` and unpacked
with ``dpkg -x`` (nothing installed), cached under .cache/boot-lab/; and
the few modules the guest needs, with their dependencies read from each
module's .modinfo (the package ships no modules.dep)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The guest's drivers: the virtio disk, the ESP (vfat, its code pages), the
# slot (squashfs) and the EFI variables systemd-boot sets (efivarfs).
MODULES = ["virtio_pci", "virtio_blk", "vfat", "nls_cp437", "nls_ascii", "squashfs", "efivarfs"]


class KernelError(Exception):
    pass


@dataclass(frozen=True)
class Kernel:
    version: str
    vmlinuz: Path
    modules_dir: Path

    def module_files(self, names: list[str] = MODULES) -> list[Path]:
        """``names`` and everything they depend on, dependencies first."""
        index = {p.stem.replace("-", "_"): p for p in self.modules_dir.rglob("*.ko")}
        order: list[Path] = []

        def visit(name: str, seen: tuple[str, ...]) -> None:
            if name not in index:
                raise KernelError(f"kernel {self.version}: no module {name}.ko")
            path = index[name]
            if path in order or name in seen:
                return
            m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", path.read_bytes())
            for dep in (m.group(1).decode().split(",") if m else []):
                if dep:
                    visit(dep.replace("-", "_"), seen + (name,))
            order.append(path)

        for n in names:
            visit(n, ())
        return order


def _run(cmd: list[str], cwd: Path) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise KernelError(f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()[-500:]}")
    return res.stdout


def fetch(cache: Path) -> Kernel:
    """The cached kernel, or Debian's current linux-image-amd64 fetched now."""
    root = cache / "kernel"
    found = sorted(root.glob("boot/vmlinuz-*"))
    if not found:
        for tool in ("apt-get", "apt-cache", "dpkg"):
            if shutil.which(tool) is None:
                raise KernelError(f"{tool} not found: the boot lab takes Debian's kernel package (run on Debian)")
        deps = _run(["apt-cache", "depends", "linux-image-amd64"], cache)
        m = re.search(r"Depends: (linux-image-[0-9][^\s]*)", deps)
        if not m:
            raise KernelError("apt-cache depends linux-image-amd64: no linux-image-<version> dependency found")
        dl = cache / "download"
        shutil.rmtree(dl, ignore_errors=True)
        dl.mkdir(parents=True)
        _run(["apt-get", "download", m.group(1)], dl)
        debs = list(dl.glob("*.deb"))
        if len(debs) != 1:
            raise KernelError(f"apt-get download {m.group(1)}: expected one .deb in {dl}, found {len(debs)}")
        tmp = cache / "kernel.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _run(["dpkg", "-x", str(debs[0]), str(tmp)], cache)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
        shutil.rmtree(dl, ignore_errors=True)
        found = sorted(root.glob("boot/vmlinuz-*"))
        if not found:
            raise KernelError(f"{debs[0].name}: no boot/vmlinuz-* inside")
    vmlinuz = found[-1]
    version = vmlinuz.name.removeprefix("vmlinuz-")
    return Kernel(version, vmlinuz, root / "lib" / "modules" / version)
