"""The lab's scenarios: each starts from a copy of a disk, boots it as
often as it takes, and judges from what the guest printed on its serial
console and what mtools finds on the ESP afterwards, never from what the
lab meant to happen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import guest
from .kit import Disk, Kit
from .layout import Layout
from .qemu import Boot, Machine

#: Where the guest waits during an install; a power cut lands at each.
INSTALL_POINTS = ["begin", "entries-removed", "slot-emptied", "slot-half-written", "slot-written",
                  "slot-verified", "slot-labelled", "entry-written", "entry-installed"]


class ScenarioError(Exception):
    pass


@dataclass
class Outcome:
    scenario: str
    boots: list[Boot]
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
    kit: Kit
    work: Path
    fresh: Disk  # version 1 as the installer writes it: osiris_1+3.efi, never booted
    blessed: Disk  # version 1 as its first boot leaves it: osiris_1.efi
    built: dict[tuple, Path] = field(default_factory=dict)

    @classmethod
    def build(cls, kit: Kit, work: Path) -> Lab:
        return cls(kit, work, kit.disk("1", work / "image" / "fresh.img"),
                   kit.disk("1", work / "image" / "blessed.img", blessed=True))

    @property
    def layout(self) -> Layout:
        return self.kit.layout

    def slot(self, version: str, healthy: bool) -> Path:
        key = ("slot", version, healthy)
        if key not in self.built:
            self.built[key] = self.kit.slot(version, healthy,
                                            self.work / "slots" / f"{version}{'' if healthy else '-bad'}.squashfs")
        return self.built[key]

    def uki(self, version: str) -> Path:
        key = ("uki", version)
        if key not in self.built:
            self.built[key] = self.kit.uki(version, self.work / "ukis" / f"{self.kit.name(version)}.efi")
        return self.built[key]

    def medium(self, version: str, healthy: bool, *, pause: bool) -> Path:
        key = ("medium", version, healthy, pause)
        if key not in self.built:
            lay = self.layout
            where = self.work / "media" / f"{version}-{'good' if healthy else 'bad'}"
            where.mkdir(parents=True, exist_ok=True)
            self.built[key] = guest.medium(where, version=version, slot=self.slot(version, healthy),
                                           uki=self.uki(version), tries=lay.tries, prefix=lay.entry_prefix,
                                           empty_label=lay.empty_label, pause=pause)
        return self.built[key]

    def machine(self, name: str, start: Disk) -> Machine:
        return Machine.copy_of(name, self.work / name, start.path, start.vars_fd)


def _fail(why: str) -> tuple[bool, str]:
    return False, why


def new_image(lab: Lab) -> tuple[Machine, tuple[bool, str]]:
    """A freshly written image: its version is blessed on its first boot
    and keeps booting."""
    m = lab.machine("new-image", lab.fresh)
    first = m.boot()
    second = m.boot()
    p = lab.layout.entry_prefix
    if not (first.version == "1" and first.gate == "pass" and first.blessed):
        return m, _fail(f"first boot: version {first.version}, gate {first.gate}, blessed {first.blessed}")
    if not (second.version == "1" and second.already_blessed):
        return m, _fail(f"second boot: version {second.version}, {second.said[-3:]}")
    if m.entries() != [f"{p}1.efi"]:
        return m, _fail(f"ESP entries afterwards: {m.entries()}")
    return m, (True, "blessed on its first boot (+2-1 renamed), then booted blessed")


def update_good(lab: Lab, base: Disk) -> tuple[Machine, tuple[bool, str]]:
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
    if f"{p}2.efi" not in m.entries():
        return m, _fail(f"ESP entries afterwards: {m.entries()}")
    return m, (True, f"2 blessed on its first boot ({trial.entry} -> {p}2.efi) and kept")


def update_bad(lab: Lab, base: Disk) -> tuple[Machine, tuple[bool, str]]:
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
    left = f"{p}2+0-{tries}.efi"
    if left not in m.entries() or f"{p}1.efi" not in m.entries():
        return m, _fail(f"ESP entries afterwards: {m.entries()}")
    seen = ", ".join(c.split("counter=")[-1].rsplit("/", 1)[-1] for c in counters if c)
    return m, (True, f"2 tried {tries} times ({seen}), then 1 booted {len(after) - first_back} times")


def update_after_fallback(lab: Lab, base: Disk) -> tuple[Machine, tuple[bool, str]]:
    """After a bad version fell back, the next update goes into the slot the
    bad one had: its UKI (which names that slot) is removed first, the new
    version is installed there, boots on trial and is blessed."""
    tries = lab.layout.tries
    p = lab.layout.entry_prefix
    m = lab.machine("update-after-fallback", base)
    m.boot(medium=lab.medium("2", False, pause=False))
    for _ in range(tries + 2):  # until 1 is back (or clearly too many boots)
        if m.boot().version == "1":
            break
    if [b.version for b in m.boots] != ["1"] + ["2"] * tries + ["1"]:
        return m, _fail(f"before the second update: {' '.join(b.version or '?' for b in m.boots)}")
    install = m.boot(medium=lab.medium("3", True, pause=False))
    trial = m.boot()
    if install.value("install done") is None:
        return m, _fail(f"install of 3 did not finish: {install.said[-3:]}")
    removed = install.value("removed entry")
    if removed != f"{p}2+0-{tries}.efi":
        return m, _fail(f"the install of 3 removed {removed!r}, not the UKI of the slot it rewrote")
    if not (trial.version == "3" and trial.gate == "pass" and trial.blessed):
        return m, _fail(f"first boot after the update: version {trial.version}, gate {trial.gate}")
    if m.entries() != [f"{p}1.efi", f"{p}3.efi"]:
        return m, _fail(f"ESP entries afterwards: {m.entries()}")
    return m, (True, f"2 fell back after {tries} tries; 3 replaced it ({removed} removed), blessed on trial")


def power_cut(point: str) -> Callable[[Lab, Disk], tuple[Machine, tuple[bool, str]]]:
    def scenario(lab: Lab, base: Disk) -> tuple[Machine, tuple[bool, str]]:
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
