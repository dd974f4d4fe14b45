"""The lab's scenarios: each starts from a copy of a disk, boots it as
often as it takes, and judges from what the guest printed on its serial
console and what mtools finds on the ESP afterwards, never from what the
lab meant to happen."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import disk as disks
from . import guest, qemu
from .layout import Layout

#: Where the guest waits during an install; a power cut lands at each.
INSTALL_POINTS = ["begin", "entries-removed", "slot-emptied", "slot-half-written", "slot-written",
                  "slot-verified", "slot-labelled", "entry-written", "entry-installed"]


class ScenarioError(Exception):
    pass


@dataclass
class Machine:
    """A disk and its firmware variables, booted one boot at a time."""

    name: str
    work: Path
    disk: Path
    vars_fd: Path
    boots: list[qemu.Boot] = field(default_factory=list)

    @classmethod
    def copy_of(cls, name: str, work: Path, disk: Path, vars_fd: Path) -> Machine:
        work.mkdir(parents=True, exist_ok=True)
        d, v = work / "disk.img", work / "vars.fd"
        shutil.copy(disk, d)
        shutil.copy(vars_fd, v)
        return cls(name, work, d, v)

    def boot(self, *, medium: Path | None = None, cut_at: str | None = None) -> qemu.Boot:
        b = qemu.boot(self.disk, self.vars_fd, medium=medium, cut_at=cut_at,
                      log=self.work / f"boot-{len(self.boots) + 1}.serial")
        self.boots.append(b)
        if b.ended in ("timeout", "crashed"):
            raise ScenarioError(f"{self.name}: boot {len(self.boots)} {b.ended} "
                                f"(serial console in {self.work / f'boot-{len(self.boots)}.serial'}); "
                                f"the guest said: {b.said[-3:]}")
        return b

    def entries(self) -> list[str]:
        return disks.esp_entries(self.disk)


@dataclass
class Outcome:
    scenario: str
    boots: list[qemu.Boot]
    entries: list[str]
    ok: bool
    verdict: str

    def versions(self) -> str:
        return " ".join(b.version or "?" for b in self.boots)

    def as_dict(self) -> dict:
        return {
            "scenario": self.scenario, "boots": len(self.boots), "ok": self.ok, "verdict": self.verdict,
            "versions": [b.version for b in self.boots], "entries_after": self.entries,
            "boot_log": [{"version": b.version, "entry": b.entry, "gate": b.gate, "blessed": b.blessed,
                          "ended": b.ended, "seconds": round(b.seconds, 1)} for b in self.boots],
        }


@dataclass
class Lab:
    layout: Layout
    work: Path
    initrd: Path
    base_disk: Path  # a fresh image: version 1 installed, not yet booted
    base_vars: Path
    slots: dict[tuple[str, bool], Path] = field(default_factory=dict)

    def slot(self, version: str, healthy: bool) -> Path:
        key = (version, healthy)
        if key not in self.slots:
            name = version if healthy else f"{version}-bad"
            self.slots[key] = guest.slot_image(version, healthy, self.work / "slots" / name)
        return self.slots[key]

    def medium(self, version: str, healthy: bool, *, pause: bool) -> Path:
        lay = self.layout
        slot = self.slot(version, healthy)
        text = guest.entry(lay.entry_prefix, version, lay.slot_label(version))
        where = self.work / "media" / f"{version}-{'good' if healthy else 'bad'}"
        where.mkdir(parents=True, exist_ok=True)
        return guest.medium(where, version=version, slot=slot, entry_text=text, tries=lay.tries,
                            prefix=lay.entry_prefix, empty_label=lay.empty_label, pause=pause)

    def machine(self, name: str, start: tuple[Path, Path] | None = None) -> Machine:
        d, v = start or (self.base_disk, self.base_vars)
        return Machine.copy_of(name, self.work / name, d, v)


def _fail(why: str) -> tuple[bool, str]:
    return False, why


def new_image(lab: Lab) -> tuple[Machine, tuple[bool, str]]:
    """A freshly written image: its version is blessed on its first boot
    and keeps booting."""
    m = lab.machine("new-image")
    first = m.boot()
    second = m.boot()
    p = lab.layout.entry_prefix
    if not (first.version == "1" and first.gate == "pass" and first.blessed):
        return m, _fail(f"first boot: version {first.version}, gate {first.gate}, blessed {first.blessed}")
    if not (second.version == "1" and second.already_blessed):
        return m, _fail(f"second boot: version {second.version}, {second.said[-3:]}")
    if m.entries() != [f"{p}1.conf"]:
        return m, _fail(f"ESP entries afterwards: {m.entries()}")
    return m, (True, "blessed on its first boot (+2-1 renamed), then booted blessed")


def blessed_base(lab: Lab) -> tuple[Path, Path]:
    """The disk after new-image's first boot: version 1 installed and blessed."""
    m = lab.machine("base")
    b = m.boot()
    if not b.blessed:
        raise ScenarioError(f"base: the first boot of version 1 was not blessed: {b.said}")
    return m.disk, m.vars_fd


def update_good(lab: Lab, base: tuple[Path, Path]) -> tuple[Machine, tuple[bool, str]]:
    """An update whose health gate passes: blessed on its first boot, kept."""
    m = lab.machine("update-good", base)
    m.boot(medium=lab.medium("2", True, pause=False))
    trial = m.boot()
    after = m.boot()
    p = lab.layout.entry_prefix
    if m.boots[0].value("install done") is None:
        return m, _fail(f"install did not finish: {m.boots[0].said[-3:]}")
    if not (trial.version == "2" and trial.gate == "pass" and trial.blessed):
        return m, _fail(f"first boot after the update: version {trial.version}, gate {trial.gate}")
    if not (after.version == "2" and after.already_blessed):
        return m, _fail(f"second boot after the update: version {after.version}")
    if f"{p}2.conf" not in m.entries():
        return m, _fail(f"ESP entries afterwards: {m.entries()}")
    return m, (True, f"2 blessed on its first boot ({trial.entry} -> {p}2.conf) and kept")


def update_bad(lab: Lab, base: tuple[Path, Path]) -> tuple[Machine, tuple[bool, str]]:
    """An update whose health gate fails: tried exactly ``tries`` times,
    then the previous blessed version boots, and keeps booting."""
    tries = lab.layout.tries
    m = lab.machine("update-bad", base)
    m.boot(medium=lab.medium("2", False, pause=False))
    # Boot until the old version has come back twice (or clearly too many boots).
    while len(m.boots) < tries + 5:
        m.boot()
        if [b.version for b in m.boots[-2:]] == ["1", "1"] and len(m.boots) > 2:
            break
    p = lab.layout.entry_prefix
    after = m.boots[1:]
    trials = [b for b in after if b.version == "2"]
    first_back = next((i for i, b in enumerate(after) if b.version == "1"), None)
    if m.boots[0].value("install done") is None:
        return m, _fail(f"install did not finish: {m.boots[0].said[-3:]}")
    if len(trials) != tries or first_back != tries:
        return m, _fail(f"version 2 booted {len(trials)} times before version 1 came back "
                        f"(expected exactly {tries}): {' '.join(b.version or '?' for b in after)}")
    if any(b.gate != "fail" or b.ended != "reboot" for b in trials):
        return m, _fail("a trial boot of version 2 did not fail its gate and reboot")
    if not all(b.version == "1" and b.gate == "pass" and b.already_blessed for b in after[first_back:]):
        return m, _fail("after the fallback, not every boot was blessed version 1")
    counters = [b.value("boot") for b in trials]
    left = f"{p}2+0-{tries}.conf"
    if left not in m.entries() or f"{p}1.conf" not in m.entries():
        return m, _fail(f"ESP entries afterwards: {m.entries()}")
    seen = ", ".join(c.split("counter=")[-1].rsplit("/", 1)[-1] for c in counters if c)
    return m, (True, f"2 tried {tries} times ({seen}), then 1 booted {len(after) - first_back} times")


def power_cut(point: str) -> Callable[[Lab, tuple[Path, Path]], tuple[Machine, tuple[bool, str]]]:
    def scenario(lab: Lab, base: tuple[Path, Path]) -> tuple[Machine, tuple[bool, str]]:
        m = lab.machine(f"power-cut@{point}", base)
        first = m.boot(medium=lab.medium("2", True, pause=True), cut_at=point)
        if first.ended != "cut":
            return m, _fail(f"the install never reached {point}: {first.said[-3:]}")
        # The disk must boot a version whose gate passes and whose entry is (or becomes) blessed.
        while len(m.boots) < lab.layout.tries + 3:
            b = m.boot()
            if b.gate == "pass" and (b.blessed or b.already_blessed):
                return m, (True, f"cut at {point}; then booted {b.version} "
                                 f"({'blessed now' if b.blessed else 'already blessed'})")
        return m, _fail(f"cut at {point}; no boot of a blessed version in {len(m.boots) - 1} boots")

    scenario.__name__ = f"power_cut_{point}"
    return scenario
