"""The boot lab (tools/bootlab, `make boot-lab`) in its reduced set: a real
GPT disk with Debian's systemd-boot booted in QEMU. What is asserted is what
the guest printed on its serial console and what mtools found on the ESP
afterwards. The full set (every power-cut point, the good update, the new
image) is `make boot-lab`."""

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
    assert f"osiris_2+0-{tries}.conf" in bad["entries_after"] and "osiris_1.conf" in bad["entries_after"]
    cut = by["power-cut@entry-written"]
    assert cut["ok"] and cut["boot_log"][0]["ended"] == "cut"
    assert cut["boot_log"][-1]["gate"] == "pass" and cut["versions"][-1] == "1"
    assert any(line.startswith("SCENARIO") and "VERSIONS SEEN" in line for line in res.stdout.splitlines())
