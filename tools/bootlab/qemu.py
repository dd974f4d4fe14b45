"""One boot of the lab's disk in QEMU (TCG, OVMF), and what the serial
console said. A power cut is a SIGKILL of QEMU at an install point the
guest announces (it waits there for the lab's answer, so the cut lands
exactly between two steps)."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .disk import esp_entries

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
MARK = re.compile(rb"OSIRIS-LAB ([^\r\n]*)")


class QemuError(Exception):
    pass


class BootFailed(QemuError):
    """A boot that neither powered off nor rebooted (timed out, crashed)."""


@dataclass
class Boot:
    """What one boot printed (``said``: the guest's OSIRIS-LAB lines) and how it ended."""

    said: list[str] = field(default_factory=list)
    ended: str = "running"  # poweroff, reboot, cut, timeout, crashed
    seconds: float = 0.0
    serial: bytes = b""

    def value(self, prefix: str) -> str | None:
        for line in self.said:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        return None

    @property
    def version(self) -> str | None:
        v = self.value("version ")
        return v.split()[0] if v else None

    @property
    def entry(self) -> str | None:
        boot = self.value("boot ")
        m = re.search(r"entry=(\S*)", boot or "")
        return m.group(1) if m else None

    @property
    def gate(self) -> str | None:
        return self.value("gate ")

    @property
    def blessed(self) -> bool:
        """This boot blessed its entry (renamed it without the counter)."""
        return any(s.startswith("blessed ") and s != "blessed already" for s in self.said)

    @property
    def already_blessed(self) -> bool:
        """This boot came from an entry without a counter (a blessed one)."""
        return "blessed already" in self.said


def vars_file(path: Path) -> Path:
    """A fresh copy of OVMF's variable store for one machine."""
    if not OVMF_VARS.exists() or not OVMF_CODE.exists():
        raise QemuError(f"{OVMF_CODE} not found (Debian: apt-get install ovmf)")
    shutil.copy(OVMF_VARS, path)
    return path


def boot(disk: Path, vars_fd: Path, *, medium: Path | None = None, cut_at: str | None = None,
         deadline: float = 600.0, log: Path | None = None) -> Boot:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise QemuError("qemu-system-x86_64 not found (Debian: apt-get install qemu-system-x86)")
    cmd = [qemu, "-machine", "q35", "-accel", "tcg", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config",
           "-display", "none", "-serial", "stdio", "-no-reboot",
           "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
           "-drive", f"if=pflash,format=raw,unit=1,file={vars_fd}",
           "-drive", f"if=virtio,format=raw,file={disk},cache=writeback"]
    if medium is not None:
        cmd += ["-drive", f"if=virtio,format=raw,file={medium},readonly=on"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    result = Boot()
    buf = b""
    serial = bytearray()
    assert proc.stdout is not None and proc.stdin is not None
    fd = proc.stdout.fileno()
    try:
        while True:
            left = started + deadline - time.monotonic()
            if left <= 0:
                result.ended = "timeout"
                proc.kill()
                break
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            serial += chunk
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                m = MARK.search(line)
                if not m:
                    continue
                said = m.group(1).decode("utf-8", "replace").strip()
                result.said.append(said)
                if said.startswith("install at "):
                    point = said.removeprefix("install at ")
                    if point == cut_at:
                        proc.send_signal(signal.SIGKILL)  # the power cut
                        result.ended = "cut"
                    else:
                        proc.stdin.write(b"go\n")
                        proc.stdin.flush()
            if result.ended == "cut":
                break
    finally:
        if proc.poll() is None and result.ended in ("cut", "timeout"):
            proc.kill()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read() if proc.stderr else b""
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
    result.seconds = time.monotonic() - started
    result.serial = bytes(serial)
    if result.ended == "running":
        last = result.said[-1] if result.said else ""
        result.ended = last if last in ("poweroff", "reboot") else "crashed"
        if result.ended == "crashed" and proc.returncode not in (0, None):
            result.said.append(f"qemu exited {proc.returncode}: {stderr.decode(errors='replace').strip()[-300:]}")
    if log is not None:
        log.write_bytes(result.serial)
    return result


@dataclass
class Machine:
    """A disk and its firmware variables, booted one boot at a time; each
    boot's serial console is kept as ``<work>/boot-N.serial``."""

    name: str
    work: Path
    disk: Path
    vars_fd: Path
    boots: list[Boot] = field(default_factory=list)
    logs_before: int = 0  # boot logs already in ``work`` (numbering goes on)

    @classmethod
    def copy_of(cls, name: str, work: Path, disk: Path, vars_fd: Path) -> Machine:
        work.mkdir(parents=True, exist_ok=True)
        d, v = work / "disk.img", work / "vars.fd"
        shutil.copy(disk, d)
        shutil.copy(vars_fd, v)
        return cls(name, work, d, v)

    def boot(self, *, medium: Path | None = None, cut_at: str | None = None) -> Boot:
        log = self.work / f"boot-{self.logs_before + len(self.boots) + 1}.serial"
        b = boot(self.disk, self.vars_fd, medium=medium, cut_at=cut_at, log=log)
        self.boots.append(b)
        if b.ended in ("timeout", "crashed"):
            raise BootFailed(f"{self.name}: boot {len(self.boots)} {b.ended} (serial console in {log}); "
                             f"the guest said: {b.said[-3:]}")
        return b

    def entries(self) -> list[str]:
        """The ESP's EFI/Linux file names now, as mtools reads them."""
        return esp_entries(self.disk)
