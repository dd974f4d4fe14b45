"""`osiris-install` (iso/installer.nix), the installer ISO's command, run
here with bash: the script is taken out of the module as Nix would write it.
Writing a real disk is tests/nixos/installer.nix's job (needs KVM); these
are the refusals that must hold before anything is written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "iso" / "installer.nix"


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    text = MODULE.read_text()
    body = re.search(r"\n    text = ''\n(.*?)\n    '';\n", text, re.S)
    assert body, f"{MODULE}: no writeShellApplication text found"
    # Nix's indented string: ''${ is a literal ${; the common indentation goes.
    lines = body.group(1).replace("''${", "${").splitlines()
    out = tmp_path_factory.mktemp("installer") / "osiris-install"
    out.write_text("#!/usr/bin/env bash\nset -o errexit -o nounset -o pipefail\n"
                   + "\n".join(line[6:] if line.startswith("      ") else line for line in lines) + "\n")
    out.chmod(0o755)
    return out


def run(script: Path, *args: str, image: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OSIRIS_IMAGE": image})


def test_the_script_parses_and_the_iso_path_is_where_the_module_puts_the_image(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = MODULE.read_text()
    target = re.search(r'onIso = "([^"]+)";', text).group(1)
    assert "/iso${onIso}" in text and target == "/osiris/osiris.raw"


def test_no_image_is_refused_naming_the_path(script, tmp_path):
    res = run(script, "--yes", str(tmp_path / "disk"), image=str(tmp_path / "missing.raw"))
    assert res.returncode == 1 and f"{tmp_path / 'missing.raw'}: no appliance image here" in res.stderr


def test_a_target_that_is_not_a_block_device_is_refused(script, tmp_path):
    image = tmp_path / "osiris_1.raw"
    image.write_bytes(b"\0" * 4096)
    target = tmp_path / "not-a-disk"
    target.write_bytes(b"")
    res = run(script, "--yes", str(target), image=str(image))
    assert res.returncode == 2 and f"{target}: not a block device" in res.stderr
    assert target.read_bytes() == b""  # nothing written


def test_an_unknown_option_is_refused_with_the_usage(script, tmp_path):
    res = run(script, "--force", image=str(tmp_path / "x"))
    assert res.returncode == 2 and "unknown option --force" in res.stderr and "usage: osiris-install" in res.stderr


@pytest.mark.skipif(shutil.which("lsblk") is None, reason="lsblk (util-linux) not found")
def test_without_a_disk_named_it_wants_exactly_one_internal_disk_or_names_them(script, tmp_path):
    disks = subprocess.run(["lsblk", "-dnpo", "NAME,TYPE,RM,RO"], capture_output=True, text=True).stdout
    internal = [ln.split()[0] for ln in disks.splitlines()
                if ln.split()[1:] == ["disk", "0", "0"] and "zram" not in ln.split()[0]]
    if len(internal) == 1:
        # Decided before running: the script would go on to ask about this machine's own disk.
        pytest.skip("this machine has exactly one internal disk")
    image = tmp_path / "osiris_1.raw"
    image.write_bytes(b"\0" * 4096)
    res = run(script, "--yes", image=str(image))
    assert res.returncode == 2 and f"expected exactly one internal disk, found {len(internal)}" in res.stderr
