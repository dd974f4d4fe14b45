"""A version's Unified Kernel Image, as the appliance image has one: Debian's
systemd-boot stub (``linuxx64.efi.stub``, systemd-boot-efi) with the kernel,
the initramfs, the command line naming the version's slot and an os-release
added as PE sections by ``objcopy`` (binutils). Debian 12's systemd 252 has
no ``ukify``; this is what ukify does, and what systemd's documentation did
before it: each section after the stub's last one, page-aligned."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
PAGE = 0x1000
# What every version's kernel command line carries besides its slot.
CMDLINE_REST = "console=ttyS0 quiet loglevel=1 panic=-1"


class UkiError(Exception):
    pass


def cmdline(slot_label: str) -> str:
    """The version's kernel command line: its store partition by GPT label,
    as the image's UKI names it (``mount.usr=PARTLABEL=osiris_<v>``)."""
    return f"mount.usr=PARTLABEL={slot_label} {CMDLINE_REST}\n"


def os_release(version: str) -> str:
    """The ``.osrel`` section: systemd-boot 252 lists a UKI in EFI/Linux
    only with a name and a version in it; IMAGE_ID is the sort key, and the
    newest IMAGE_VERSION with tries left boots first."""
    return (f'NAME="Osiris"\nPRETTY_NAME="Osiris {version}"\nID=osiris\nIMAGE_ID=osiris\n'
            f"IMAGE_VERSION={version}\nVERSION_ID={version}\n")


def _run(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UkiError(f"{cmd[0]} not found (Debian: apt-get install binutils)") from None
    if res.returncode != 0:
        raise UkiError(f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()[-400:]}")
    return res.stdout


def _stub_end(stub: Path) -> int:
    """The first page after the stub's own sections (ImageBase included)."""
    out = _run(["objdump", "-h", str(stub)])
    base = re.search(r"ImageBase\s+([0-9a-fA-F]+)", _run(["objdump", "-p", str(stub)]))
    ends = [int(m.group(1), 16) + int(m.group(2), 16)
            for m in re.finditer(r"^\s*\d+\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s", out, re.M)]
    if not ends or base is None:
        raise UkiError(f"{stub}: objdump found no sections or no ImageBase")
    # objdump -h prints VMAs with the image base added already.
    return (max(ends) + PAGE - 1) // PAGE * PAGE


def build(out: Path, *, vmlinuz: Path, initrd: Path, cmdline_text: str, osrel_text: str,
          stub: Path = STUB) -> Path:
    """Write the UKI to ``out`` (sections .osrel, .cmdline, .linux, .initrd)."""
    if not stub.exists():
        raise UkiError(f"{stub} not found (Debian: apt-get install systemd-boot-efi)")
    work = out.parent
    work.mkdir(parents=True, exist_ok=True)
    osrel = work / f"{out.name}.osrel"
    cmd_f = work / f"{out.name}.cmdline"
    osrel.write_text(osrel_text)
    cmd_f.write_text(cmdline_text)
    args = ["objcopy"]
    vma = _stub_end(stub)
    for name, path in ((".osrel", osrel), (".cmdline", cmd_f), (".linux", vmlinuz), (".initrd", initrd)):
        args += ["--add-section", f"{name}={path}", "--change-section-vma", f"{name}=0x{vma:x}"]
        vma = (vma + path.stat().st_size + PAGE - 1) // PAGE * PAGE
    tmp = out.with_name(out.name + ".tmp")
    _run([*args, str(stub), str(tmp)])
    tmp.replace(out)
    osrel.unlink()
    cmd_f.unlink()
    return out


def sections(uki: Path) -> dict[str, bytes]:
    """The text sections of a UKI (.osrel, .cmdline), read back with objcopy."""
    got = {}
    for name in (".osrel", ".cmdline"):
        dump = uki.with_name(uki.name + name)
        _run(["objcopy", "-O", "binary", "--only-section", name, str(uki), str(dump)])
        got[name] = dump.read_bytes().rstrip(b"\0")
        dump.unlink()
    return got
