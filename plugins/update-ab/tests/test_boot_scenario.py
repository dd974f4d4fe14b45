"""The boot-lab scenario of issue 10: a version 1 disk (the boot lab's kit:
real UKIs, Debian's systemd-boot, squashfs slots), releases published with
`osiris-release` into a TUF repository served over HTTPS, installed by the
real runner, and the disk booted in QEMU (TCG, OVMF). A bad version 2 is
tried `tries` times and version 1 comes back; a good version 3 boots on
trial and is blessed. What is asserted is what the guest printed and what
is on the ESP afterwards (tools/bootlab, docs/image.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tools"))

from bootlab.__main__ import missing_tools  # noqa: E402

pytestmark = pytest.mark.slow


def test_an_update_installed_by_the_runner_boots_on_trial_and_a_bad_one_falls_back(tmp_path, make_appliance):
    need = missing_tools()
    if need:
        pytest.skip(f"the boot lab needs {', '.join(need)} (tools/ensure-system-tools.sh installs them on Debian)")
    from bootlab.kit import Kit, boot_disk

    kit = Kit.prepare(tmp_path / "kit")
    tries = kit.layout.tries
    disk = kit.disk("1", tmp_path / "disk.img", blessed=True).path
    app = make_appliance(disk=disk)
    bad = kit.release("2", tmp_path / "release-2", healthy=False)
    app.publish("2", uki=bad.uki, image=bad.slot_image)
    code, out, err = app.run("apply")
    assert code == 0 and json.loads(out)["installed"] == "2", err
    assert app.esp_names() == ["osiris_1.efi", f"osiris_2+{tries}.efi"]

    run = boot_disk(disk, until=lambda boots: boots[-1].version == "1", max_boots=tries + 2)
    assert run.condition_met and run.versions == ["2"] * tries + ["1"], run.as_dict()
    assert all(b.gate == "fail" and b.ended == "reboot" for b in run.boots[:tries])
    assert run.boots[-1].already_blessed and run.boots[-1].gate == "pass"
    assert run.entries_after == ["osiris_1.efi", f"osiris_2+0-{tries}.efi"]

    good = kit.release("3", tmp_path / "release-3")
    app.publish("3", uki=good.uki, image=good.slot_image)
    code, out, err = app.run("apply")
    assert code == 0 and json.loads(out)["installed"] == "3", err
    assert app.esp_names() == ["osiris_1.efi", f"osiris_3+{tries}.efi"]  # the bad 2 made way, 1 stays

    run = boot_disk(disk)
    trial = run.boots[0]
    assert (trial.version, trial.gate, trial.blessed) == ("3", "pass", True), run.as_dict()
    assert trial.value("boot").endswith(f"counter=/EFI/Linux/osiris_3+{tries - 1}-1.efi")
    assert run.entries_after == ["osiris_1.efi", "osiris_3.efi"]
