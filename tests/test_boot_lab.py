"""The boot lab (tools/bootlab, `make boot-lab`) in its reduced set: a real
GPT disk with Debian's systemd-boot and a UKI per version booted in QEMU,
and its library (bootlab.kit) booting a disk updated from release
artefacts. What is asserted is what the guest printed on its serial console
and what mtools found on the ESP afterwards. The full set (every power-cut
point, the good update, the new image) is `make boot-lab`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from bootlab.__main__ import QUICK, missing_tools, scenario_table  # noqa: E402
from bootlab.layout import load  # noqa: E402

pytestmark = pytest.mark.slow


def test_the_lab_reads_its_layout_from_iso_layout_json():
    layout = load()
    assert [p.id for p in layout.lab_partitions()] == ["esp", "slot-a", "slot-b"]
    assert layout.slot_label("1.2.3") == "osiris_1.2.3"
    # ... and so does the image module (tests/test_nixos_module.py evaluates it against the same file).
    assert "builtins.fromJSON (builtins.readFile ../iso/layout.json)" in (
        REPO / "modules" / "osiris-image.nix").read_text()


def test_every_install_point_has_a_power_cut_scenario():
    init = (REPO / "tools" / "bootlab" / "init.sh").read_text()
    points = [line.split("point ", 1)[1].strip() for line in init.splitlines() if line.startswith("point ")]
    assert points and all(f"power-cut@{p}" in scenario_table() for p in points), points


def test_the_guest_finds_the_uki_that_names_a_slot(tmp_path):
    """init.sh's names_slot, run by busybox on real UKIs: an install removes
    the UKIs whose command line names the slot it rewrites, and only those."""
    from bootlab import uki

    if not (uki.STUB.exists() and Path("/bin/busybox").exists()):
        pytest.skip("needs Debian's systemd-boot-efi stub and busybox")
    blob = tmp_path / "blob"
    blob.write_bytes(b"\0\n" * 5000)  # objcopy does not look inside .linux and .initrd
    for v in ("1", "10"):
        uki.build(tmp_path / f"osiris_{v}.efi", vmlinuz=blob, initrd=blob, cmdline_text=uki.cmdline(f"osiris_{v}"),
                  osrel_text=uki.os_release(v))
    init = (REPO / "tools" / "bootlab" / "init.sh").read_text()
    func = next(line for line in init.splitlines() if line.startswith("names_slot()"))

    def names(efi: str, label: str) -> bool:
        res = subprocess.run(["/bin/busybox", "sh", "-c", f'{func}\nnames_slot "$1" "$2"', "sh",
                              str(tmp_path / efi), label], env={"PATH": str(tmp_path / "bin")}, capture_output=True)
        return res.returncode == 0

    (tmp_path / "bin").mkdir()
    for applet in ("tr", "grep"):
        (tmp_path / "bin" / applet).symlink_to("/bin/busybox")
    assert names("osiris_1.efi", "osiris_1") and names("osiris_10.efi", "osiris_10")
    assert not names("osiris_10.efi", "osiris_1") and not names("osiris_1.efi", "osiris_10")


def test_a_bad_update_is_tried_tries_times_then_the_blessed_version_comes_back(tmp_path):
    need = missing_tools()
    if need:
        pytest.skip(f"the boot lab needs {', '.join(need)} (tools/ensure-system-tools.sh installs them on Debian)")
    res = subprocess.run([sys.executable, "-m", "bootlab", "--scenarios", "quick", "--work", str(tmp_path)],
                         cwd=REPO / "tools", capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    tries = out["tries"]
    by = {s["scenario"]: s for s in out["scenarios"]}
    assert set(by) == set(QUICK)
    bad = by["update-bad"]
    # One boot installs 2; 2 is tried exactly `tries` times; 1 (blessed) comes back and stays.
    assert bad["versions"] == ["1"] + ["2"] * tries + ["1", "1"], bad
    assert [b["gate"] for b in bad["boot_log"][1:tries + 1]] == ["fail"] * tries
    assert all(b["ended"] == "reboot" for b in bad["boot_log"][1:tries + 1])
    assert f"osiris_2+0-{tries}.efi" in bad["entries_after"] and "osiris_1.efi" in bad["entries_after"]
    cut = by["power-cut@entry-written"]
    assert cut["ok"] and cut["boot_log"][0]["ended"] == "cut"
    assert cut["boot_log"][-1]["gate"] == "pass" and cut["versions"][-1] == "1"
    assert any(line.startswith("SCENARIO") and "VERSIONS SEEN" in line for line in res.stdout.splitlines())


USR_TYPE = "8484680C-9521-48C6-9C11-B0720656F69E"


def _install_stand_in(disk: Path, release, tries: int) -> None:
    """This test's stand-in for the update backend (plugins/update-ab's test
    runs the real one on the same artefacts): the release's slot image into
    the slot the blessed UKI does not boot, relabelled, then its UKI on the
    ESP with the tries counter, last."""
    from bootlab.disk import ESP_TYPE, esp_entries, partitions, run

    parts = partitions(disk)
    esp = next(p for p in parts if p.type == ESP_TYPE)
    blessed = [e.removesuffix(".efi") for e in esp_entries(disk) if e.endswith(".efi") and "+" not in e]
    target = next(p for p in parts if p.type == USR_TYPE and p.name not in blessed)
    img = f"{disk}@@{esp.start}"
    for e in esp_entries(disk):  # no UKI may name the slot that is rewritten
        if e.split("+")[0].removesuffix(".efi") == target.name:
            run(["mdel", "-i", img, f"::/EFI/Linux/{e}"])
    data = release.slot_image.read_bytes()
    assert len(data) <= target.size
    with open(disk, "r+b") as f:
        f.seek(target.start)
        f.write(data)
    run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", "--part-label", str(disk), str(target.number),
         f"osiris_{release.version}"])
    run(["mcopy", "-i", img, str(release.uki), f"::/EFI/Linux/osiris_{release.version}+{tries}.efi"])


def test_boot_disk_boots_a_disk_updated_from_release_artefacts(tmp_path):
    """A bad release is tried `tries` times (+2-1, +1-2, +0-3) and version 1
    comes back; the next, good release boots on trial and is blessed."""
    need = missing_tools()
    if need:
        pytest.skip(f"the boot lab needs {', '.join(need)} (tools/ensure-system-tools.sh installs them on Debian)")
    from bootlab import uki
    from bootlab.kit import Kit, boot_disk

    kit = Kit.prepare(tmp_path / "kit")
    tries = kit.layout.tries
    disk = kit.disk("1", tmp_path / "disk.img", blessed=True).path
    bad = kit.release("2", tmp_path / "release-2", healthy=False)
    good = kit.release("3", tmp_path / "release-3")
    assert (bad.slot_image.name, bad.uki.name) == ("osiris_2.squashfs", "osiris_2.efi")
    manifest = json.loads(good.manifest.read_text())
    assert manifest["install_uki_as"] == f"EFI/Linux/osiris_3+{tries}.efi" and manifest["uki"]["file"] == "osiris_3.efi"
    assert b"mount.usr=PARTLABEL=osiris_3 " in uki.sections(good.uki)[".cmdline"]

    _install_stand_in(disk, bad, tries)
    run = boot_disk(disk, until=lambda boots: boots[-1].version == "1", max_boots=tries + 2)
    assert run.condition_met and run.versions == ["2"] * tries + ["1"], run.as_dict()
    counters = [b.value("boot").rsplit("/", 1)[-1] for b in run.boots[:tries]]
    assert counters == [f"osiris_2+{tries - i}-{i}.efi" for i in range(1, tries + 1)]
    assert all(b.gate == "fail" and b.ended == "reboot" for b in run.boots[:tries])
    assert run.boots[-1].already_blessed and run.boots[-1].gate == "pass"
    assert run.entries_after == ["osiris_1.efi", f"osiris_2+0-{tries}.efi"]

    _install_stand_in(disk, good, tries)
    run = boot_disk(disk)
    trial = run.boots[0]
    assert (trial.version, trial.gate, trial.blessed) == ("3", "pass", True), run.as_dict()
    assert trial.value("boot").endswith(f"counter=/EFI/Linux/osiris_3+{tries - 1}-1.efi")
    assert run.entries_after == ["osiris_1.efi", "osiris_3.efi"]
