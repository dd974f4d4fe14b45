"""The one-pass install on a real disk image file (GPT by systemd-repart,
vfat ESP through mtools, squashfs slots), streamed over HTTPS on loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import pytest

from osiris_update_ab import disk as gpt
from osiris_update_ab.esp import ImageEsp, parse
from osiris_update_ab.install import InstallRefused, install, plan


def region(path, start, size):
    with open(path, "rb") as f:
        f.seek(start)
        return hashlib.sha256(f.read(size)).hexdigest()


def outside(path, part):
    """sha256 of the disk's bytes before and after one partition."""
    data = path.read_bytes()
    return hashlib.sha256(data[:part.start] + data[part.start + part.size:]).hexdigest()


def esp_file(disk, name):
    esp = gpt.esp_partition(disk)
    import subprocess

    return subprocess.run(["mcopy", "-i", f"{disk}@@{esp.start}", f"::/EFI/Linux/{name}", "-"], check=True,
                          capture_output=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}).stdout


def serve(server, a):
    for f in (a.served_image, a.uki_file):
        shutil.copy(f, server.root / f.name)


def test_entries_are_parsed_as_systemd_boot_counts_them():
    assert parse("osiris_1.4.2.efi").state == "blessed"
    e = parse("osiris_1.4.2+2-1.efi")
    assert (e.version, e.state, e.tries_left, e.tries_done) == ("1.4.2", "trial", 2, 1)
    assert parse("osiris_2+3.efi").tries_done == 0 and parse("osiris_2+3.efi").state == "trial"
    assert parse("osiris_2+0-3.efi").state == "bad"
    assert parse("osiris_2+3.efi.partial") is None and parse("BOOTX64.EFI") is None


def test_the_booted_version_comes_from_os_release_or_the_command_line(tmp_path):
    osr, cmd = tmp_path / "os-release", tmp_path / "cmdline"
    osr.write_text('NAME=NixOS\nIMAGE_VERSION="1.4.2"\n')
    cmd.write_text("initrd=x mount.usr=PARTLABEL=osiris_1.4.1 quiet\n")
    assert gpt.booted_version(None, os_release=osr, cmdline=cmd) == "1.4.2"
    osr.write_text("NAME=NixOS\n")
    assert gpt.booted_version(None, os_release=osr, cmdline=cmd) == "1.4.1"
    assert gpt.booted_version("3", os_release=osr, cmdline=cmd) == "3"
    cmd.write_text("quiet\n")
    with pytest.raises(gpt.DiskError, match="booted version is unknown"):
        gpt.booted_version(None, os_release=osr, cmdline=cmd)


def test_v2_is_installed_into_the_other_slot_and_its_entry_is_on_trial(v1_disk, server, lab, tmp_path):
    disk, v1 = v1_disk
    a, b = gpt.slots(disk)
    assert (a.version, b.version) == ("1", None) and b.partition.label == "_empty"
    slot_a, uki_1 = region(disk, a.partition.start, a.partition.size), esp_file(disk, "osiris_1.efi")
    v2 = lab.release(tmp_path / "v2", "2")
    serve(server, v2)
    seen = []
    esp = ImageEsp(disk)
    r = install(disk, esp, booted="1", version="2", tries=3, image=v2.image,
                image_chunks=server.chunks(v2.image.path), uki=v2.uki, uki_chunks=server.chunks(v2.uki.path),
                progress=lambda phase, done, total: seen.append(phase))
    assert r.slot == b.number and r.entry == "osiris_2+3.efi" and r.image_bytes == v2.image.size
    a2, b2 = gpt.slots(disk)
    assert (a2.version, b2.version) == ("1", "2")
    assert region(disk, b.partition.start, v2.image.size) == v2.image.image_sha256
    assert region(disk, a.partition.start, a.partition.size) == slot_a
    assert sorted(esp.names()) == ["osiris_1.efi", "osiris_2+3.efi"]
    assert esp_file(disk, "osiris_2+3.efi") == v2.uki_file.read_bytes()
    assert esp_file(disk, "osiris_1.efi") == uki_1
    assert {"writing", "read-back", "installing"} <= set(seen)
    # v3 next, from v1 still booted: v2's slot and entry go, at most two versions stay.
    v3 = lab.release(tmp_path / "v3", "3")
    serve(server, v3)
    install(disk, esp, booted="1", version="3", tries=2, image=v3.image, image_chunks=server.chunks(v3.image.path),
            uki=v3.uki, uki_chunks=server.chunks(v3.uki.path))
    assert [s.version for s in gpt.slots(disk)] == ["1", "3"]
    assert sorted(esp.names()) == ["osiris_1.efi", "osiris_3+2.efi"]


def test_a_tampered_image_is_refused_and_nothing_is_named(v1_disk, server, lab, tmp_path):
    disk, _ = v1_disk
    _, b = gpt.slots(disk)
    before, esp_before = outside(disk, b.partition), ImageEsp(disk).names()
    v2 = lab.release(tmp_path / "v2", "2")
    serve(server, v2)
    data = bytearray(v2.served_image.read_bytes())
    data[len(data) // 2] ^= 0x01
    (server.root / v2.image.path).write_bytes(bytes(data))
    with pytest.raises(InstallRefused, match=f"image {v2.image.path}: "):
        install(disk, ImageEsp(disk), booted="1", version="2", tries=3, image=v2.image,
                image_chunks=server.chunks(v2.image.path), uki=v2.uki, uki_chunks=server.chunks(v2.uki.path))
    assert gpt.slots(disk)[1].partition.label == "_empty"
    assert outside(disk, b.partition) == before and ImageEsp(disk).names() == esp_before


def test_a_longer_stream_or_a_wrong_uki_is_refused(v1_disk, server, lab, tmp_path):
    disk, _ = v1_disk
    v2 = lab.release(tmp_path / "v2", "2")
    serve(server, v2)
    short = dataclasses.replace(v2.image, length=v2.image.length - 1)
    with pytest.raises(InstallRefused, match=f"more than the release's {short.length} bytes"):
        install(disk, ImageEsp(disk), booted="1", version="2", tries=3, image=short,
                image_chunks=server.chunks(v2.image.path), uki=v2.uki, uki_chunks=server.chunks(v2.uki.path))
    assert gpt.slots(disk)[1].partition.label == "_empty"
    (server.root / v2.uki.path).write_bytes(b"MZ" + b"\0" * (v2.uki.length - 2))
    with pytest.raises(InstallRefused, match=f"UKI {v2.uki.path}: .* the release says"):
        install(disk, ImageEsp(disk), booted="1", version="2", tries=3, image=v2.image,
                image_chunks=server.chunks(v2.image.path), uki=v2.uki, uki_chunks=server.chunks(v2.uki.path))
    # The slot was written and verified, but is not left named: no entry, no label.
    assert gpt.slots(disk)[1].partition.label == "_empty"
    assert ImageEsp(disk).names() == ["osiris_1.efi"]


def test_the_only_blessed_entry_and_the_booted_slot_are_never_touched(v1_disk, lab, tmp_path):
    disk, _ = v1_disk
    esp = ImageEsp(disk)
    # The booted version is 1: installing 1 again is refused (it is the booted slot).
    with pytest.raises(InstallRefused, match="it is the booted version"):
        plan(disk, esp, booted="1", version="1")
    # 2 booted on trial from slot B, 1 the only blessed entry in slot A: slot A must not be written.
    b = gpt.slots(disk)[1]
    gpt.set_label(disk, b.number, "osiris_2")
    uki = tmp_path / "u.efi"
    uki.write_bytes(b"MZ")
    esp.write("osiris_2+2-1.efi", [uki.read_bytes()])
    with pytest.raises(InstallRefused, match=r"the only blessed entry \(osiris_1.efi\)"):
        plan(disk, esp, booted="2", version="3")
    # Once 2 is blessed, 1's entry may go and its slot be written.
    esp.rename("osiris_2+2-1.efi", "osiris_2.efi")
    p = plan(disk, esp, booted="2", version="3")
    assert p.target.version == "1" and p.remove == ("osiris_1.efi",)


def test_a_booted_version_without_a_slot_is_refused(v1_disk):
    disk, _ = v1_disk
    with pytest.raises(gpt.DiskError, match="booted version '7' is in 0 slots"):
        plan(disk, ImageEsp(disk), booted="7", version="8")
