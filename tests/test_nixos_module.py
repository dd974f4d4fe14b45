"""modules/osiris.nix, the health gate and the image module evaluated with
nixpkgs' real lib (tools/eval-module.nix): what a host's settings make
writable in the sandbox, what a host may tune, the score of the units they
render, the image's partitions (from iso/layout.json), its UKI, data
partition and assertions. Needs NIXPKGS_LIB, a checkout of
nix-community/nixpkgs.lib that is never committed: skipped without it, like
stage (e) of tools/check-nix.sh."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIB = os.environ.get("NIXPKGS_LIB")
MAX_SCORE = 1.5  # systemd-analyze's exposure of the unit before ReadWritePaths were derived

pytestmark = [
    pytest.mark.nix,
    pytest.mark.skipif(not LIB or not shutil.which("nix-instantiate"),
                       reason="needs NIXPKGS_LIB (nix-community/nixpkgs.lib) and nix-instantiate"),
]


def evaluate(tmp_path: Path, services_osiris: str, extra: str = "") -> dict:
    """The module under a host that sets ``services.osiris`` (Nix text) and
    ``extra`` (more host config)."""
    host = tmp_path / "host.nix"
    host.write_text(f"{{ services.osiris = {{ enable = true; settings.site.id = \"test\"; {services_osiris} }}; "
                    f"{extra} }}\n")
    out = subprocess.run(
        ["nix-instantiate", "--store", "dummy://", "--eval", "--strict", "--json", str(REPO / "tools/eval-module.nix"),
         "--argstr", "nixpkgsLib", str(Path(LIB).resolve()), "--arg", "host", str(host)],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def directive(unit: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", unit, re.M)


def test_a_moved_evidence_directory_is_writable_created_and_mounted_first(tmp_path):
    default = evaluate(tmp_path, "")
    assert directive(default["unit"], "ReadWritePaths") == [] and default["tmpfiles"] == []
    moved = evaluate(tmp_path, 'settings.evidence.directory = "/data/osiris/evidence";')
    assert moved["failedAssertions"] == []
    assert directive(moved["unit"], "ReadWritePaths") == ["/data/osiris/evidence"]
    assert directive(moved["unit"], "RequiresMountsFor") == ["/data/osiris/evidence"]
    assert moved["tmpfiles"] == ["d /data/osiris/evidence 0700 osiris osiris - -"]


def test_every_path_the_settings_name_for_writing_is_writable(tmp_path):
    out = evaluate(tmp_path, '''
        settings.state_dir = "/srv/osiris";
        settings.evidence.directory = "/data/evidence-log";
        settings.plugins.evidence-local.path = "/data/evidence";
        settings.plugins.appliance-selfcheck.key_paths = [ "/etc/osiris/tls.key" ];
    ''')
    assert out["failedAssertions"] == []
    # evidence-local's store is a mount point the agent must not create: writable if present
    assert directive(out["unit"], "ReadWritePaths") == [
        "/srv/osiris", "/data/evidence-log", "-/data/evidence", "-/etc/osiris/tls.key"]
    assert out["tmpfiles"] == ["d /srv/osiris 0750 osiris osiris - -", "d /data/evidence-log 0700 osiris osiris - -"]
    created = evaluate(tmp_path, 'settings.plugins.evidence-local = { path = "/data/evidence"; create = true; };')
    assert directive(created["unit"], "ReadWritePaths") == ["/data/evidence"]
    assert created["tmpfiles"] == ["d /data/evidence 0750 osiris osiris - -"]


def test_the_endpoint_ports_open_only_when_asked(tmp_path):
    assert evaluate(tmp_path, "")["firewall"] == []
    opened = evaluate(tmp_path, "endpoints.openFirewall = true; settings.plugins.endpoints.enabled = true;")
    assert opened["firewall"] == [50051, 50052] and opened["warnings"] == []
    moved = evaluate(tmp_path, "endpoints.openFirewall = true; "
                               "settings.plugins.endpoints = { enabled = true; port = 6000; enrol_port = 6001; };")
    assert moved["firewall"] == [6000, 6001]
    forgot = evaluate(tmp_path, "endpoints.openFirewall = true;")
    assert any("the endpoints plugin is not" in w for w in forgot["warnings"])


def test_a_host_can_tune_restart_watchdog_and_open_files(tmp_path):
    default = evaluate(tmp_path, "")["unit"]
    assert [directive(default, k) for k in ("Restart", "RestartSec", "WatchdogSec", "LimitNOFILE")] == [
        ["on-failure"], ["5s"], ["60s"], ["65536"]]
    tuned = evaluate(tmp_path, "", extra='''systemd.services.osiris-agent.serviceConfig = {
        Restart = "always"; RestartSec = "30s"; WatchdogSec = "5min"; LimitNOFILE = 1048576; };''')["unit"]
    assert [directive(tuned, k) for k in ("Restart", "RestartSec", "WatchdogSec", "LimitNOFILE")] == [
        ["always"], ["30s"], ["5min"], ["1048576"]]


@pytest.mark.parametrize("value", ['"evidence"', '"/data/my evidence"', '"/nix/store/x-evidence"', "./evidence"])
def test_a_path_the_sandbox_cannot_make_writable_fails_naming_the_option(tmp_path, value):
    out = evaluate(tmp_path, f"settings.evidence.directory = {value};")
    assert len(out["failedAssertions"]) == 1
    message = out["failedAssertions"][0]
    assert message.startswith("services.osiris.settings.evidence.directory = ")
    assert "expected an absolute path outside the Nix store, without whitespace" in " ".join(message.split())


def test_the_rendered_unit_keeps_its_exposure_score(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: `make test` installs it (tools/ensure-system-tools.sh)"
    out = evaluate(tmp_path, 'settings.evidence.directory = "/data/evidence-log"; '
                             'settings.plugins.evidence-local.path = "/data/evidence";')
    unit = tmp_path / "osiris-agent.service"
    unit.write_text(out["unit"])
    result = subprocess.run([analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True)
    score = re.search(r"Overall exposure level for osiris-agent\.service: ([0-9.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= MAX_SCORE


def test_check_packs_become_the_baselines_setting_and_need_its_plugin(tmp_path):
    host = tmp_path / "packs.nix"

    def with_plugins(plugins: str) -> dict:
        host.write_text("{ pkgs, ... }: { services.osiris = { enable = true; settings.site.id = \"test\"; "
                        f"plugins = [ {plugins} ]; checkPacks = [ \"/etc/osiris/packs\" ]; }}; }}\n")
        out = subprocess.run(
            ["nix-instantiate", "--store", "dummy://", "--eval", "--strict", "--json",
             str(REPO / "tools/eval-module.nix"), "--argstr", "nixpkgsLib", str(Path(LIB).resolve()),
             "--arg", "host", str(host)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    baseline = ('(pkgs.osiris-agent // { name = "wb"; passthru = { osirisPlugin = true; '
                'osirisPluginName = "windows-baseline"; }; })')
    out = with_plugins(baseline)
    assert out["failedAssertions"] == []
    assert out["settings"]["plugins"]["windows-baseline"]["packs"] == ["/etc/osiris/packs"]
    missing = with_plugins("")
    assert missing["failedAssertions"] == [
        "services.osiris.checkPacks: the windows-baseline plugin, which loads them, is not in services.osiris.plugins."]


# -- the image and the health gate (modules/osiris-image.nix, modules/osiris-health-gate.nix) ---------


def image(tmp_path: Path, options: str = "", extra: str = "") -> dict:
    return evaluate(tmp_path, "", extra=f'osiris.image = {{ enable = true; version = "1.4.2"; {options} }}; {extra}')


def test_the_image_declares_the_partitions_of_iso_layout_json(tmp_path):
    layout = json.loads((REPO / "iso" / "layout.json").read_text())
    out = image(tmp_path)
    assert out["failedAssertions"] == []
    parts = out["image"]["repart"]["partitions"]
    # The same partitions as the boot lab builds, in GPT order (names sort as the table does).
    lab = [p for p in layout["partitions"] if not p.get("when")]
    assert [k.split("-", 1)[1] for k in sorted(parts)] == [p["id"] for p in lab]
    got = {k.split("-", 1)[1]: v["repartConfig"] for k, v in parts.items()}
    assert got["slot-a"]["Label"] == "osiris_1.4.2" and got["slot-b"]["Label"] == layout["emptyLabel"]
    assert got["slot-a"]["Type"] == got["slot-b"]["Type"] == "usr-x86-64"
    assert got["slot-a"]["SizeMinBytes"] == got["slot-b"]["SizeMaxBytes"] == f"{layout['partitions'][1]['sizeMiB']}M"
    assert got["slot-a"]["Format"] == "erofs" and "Format" not in got["slot-b"]
    assert got["esp"]["Type"] == "esp" and got["esp"]["Format"] == "vfat"
    esp = parts[min(parts)]["contents"]
    assert "/EFI/BOOT/BOOTX64.EFI" in esp and "/EFI/Linux/osiris_1.4.2+3.efi" in esp
    # The UKI is named as the lab's entries: entryPrefix, version, +tries.
    assert out["image"]["uki"]["file"] == f"{layout['entryPrefix']}1.4.2+{layout['tries']}.efi"
    assert out["image"]["osRelease"] == {"id": "osiris", "version": "1.4.2"}
    # Its own slot, read-only, on /usr; the store bound from it; / a tmpfs.
    assert "mount.usr=PARTLABEL=osiris_1.4.2" in out["image"]["kernelParams"]
    fs = out["image"]["fileSystems"]
    assert fs["/"]["fsType"] == "tmpfs" and fs["/nix/store"]["device"] == "/usr/nix/store"


def test_the_data_partition_is_created_at_first_boot_encrypted_for_the_tpm(tmp_path):
    out = image(tmp_path)
    [data] = out["image"]["dataPartitions"].values()
    assert data == {"Type": "linux-generic", "Label": "osiris-data", "Format": "ext4", "Encrypt": "tpm2",
                    "SizeMinBytes": "4096M"}
    assert out["image"]["initrdRepart"]["enable"] is True
    assert out["image"]["luks"]["osiris-data"] == {"device": "/dev/disk/by-partlabel/osiris-data",
                                                   "crypttabExtraOpts": ["tpm2-device=auto"]}
    assert out["image"]["fileSystems"]["/var"]["device"] == "/dev/mapper/osiris-data"
    clear = image(tmp_path, "encryptData = false;")
    [data] = clear["image"]["dataPartitions"].values()
    assert "Encrypt" not in data and clear["image"]["luks"] in (None, {})
    assert clear["image"]["fileSystems"]["/var"]["device"] == "/dev/disk/by-partlabel/osiris-data"


def test_verity_adds_hash_partitions_and_hands_the_store_to_nixpkgs_verity_store(tmp_path):
    out = image(tmp_path, "verity.enable = true;")
    parts = out["image"]["repart"]["partitions"]
    ids = [k.split("-", 1)[1] for k in sorted(parts)]
    assert ids == ["esp", "slot-a", "slot-a-verity", "slot-b", "slot-b-verity"]
    assert parts["20-slot-a-verity"]["repartConfig"]["Label"] == "osiris_1.4.2_verity"
    assert out["image"]["repart"]["verityStore"]["partitionIds"] == {
        "esp": "00-esp", "store": "10-slot-a", "store-verity": "20-slot-a-verity"}
    # The UKI names the store by its root hash (usrhash=), not by label.
    assert out["image"]["kernelParams"] == []


@pytest.mark.parametrize("options, option, expectation", [
    # osiris_ + 30 characters is 37; with dm-verity, osiris_ + 23 + _verity is 37 too.
    ('version = "1.4.2-aaaaaaaaaaaaaaaaaaaaaaaa";', 'osiris.image.version = "1.4.2-aaaaaaaaaaaaaaaaaaaaaaaa"',
     "has 37 characters, expected at most 36"),
    ('version = "1.4.2-bbbbbbbbbbbbbbbbb"; verity.enable = true;',
     "'osiris_1.4.2-bbbbbbbbbbbbbbbbb_verity' of partition slot-a-verity", "expected at most 36"),
    ('version = "1"; tries = 0;', "osiris.image.tries = 0", "expected at least 1"),
    ('version = "1"; slotSize = 256;', "osiris.image.slotSize = 256", "expected at least 1024 MiB"),
    ('version = "1"; dataLabel = "osiris-data-partition-of-the-appliance";', "osiris.image.dataLabel",
     "expected at most 36 characters"),
])
def test_image_assertions_name_the_option_and_the_expectation(tmp_path, options, option, expectation):
    out = evaluate(tmp_path, "", extra=f"osiris.image = {{ enable = true; {options} }};")
    assert len(out["failedAssertions"]) == 1, out
    message = " ".join(out["failedAssertions"][0].split())
    assert option in message and expectation in message, message


def test_the_gate_runs_after_the_agent_in_its_sandbox_before_boot_complete(tmp_path):
    out = image(tmp_path)
    gate, agent = out["units"]["osiris-health-gate"], out["unit"]
    assert directive(gate, "After") == ["osiris-agent.service"]
    assert directive(gate, "Before") == ["boot-complete.target"]
    assert directive(gate, "RequiredBy") == ["boot-complete.target"]
    assert directive(gate, "Type") == ["oneshot"] and directive(gate, "User") == ["osiris"]
    [start] = directive(gate, "ExecStart")
    assert start.endswith("/bin/osiris --config /etc/osiris/config.json health-gate --timeout 30 --boot-id %b")
    assert start.split()[0].rsplit("/bin/", 1)[0] == directive(agent, "ExecStart")[0].split()[0].rsplit("/bin/", 1)[0]
    # The agent's sandbox, directive for directive.
    for key in ("ProtectSystem", "PrivateUsers", "CapabilityBoundingSet", "SystemCallFilter", "RestrictAddressFamilies",
                "ReadWritePaths", "ProcSubset", "MemoryDenyWriteExecute"):
        assert directive(gate, key) == directive(agent, key), key
    # A failure reboots through a unit that checks the boot is still a trial.
    assert directive(gate, "OnFailure") == ["osiris-health-gate-failed.service"]
    failed = out["units"]["osiris-health-gate-failed"]
    assert directive(failed, "SuccessAction") == ["reboot"] and directive(failed, "PrivateNetwork") == ["true"]
    off = image(tmp_path, extra="osiris.healthGate.rebootOnFailure = false;")
    assert "osiris-health-gate-failed" not in off["units"]
    assert directive(off["units"]["osiris-health-gate"], "OnFailure") == []


def test_the_gate_needs_the_agent(tmp_path):
    host = tmp_path / "host.nix"
    host.write_text('{ osiris.healthGate.enable = true; }\n')
    out = subprocess.run(
        ["nix-instantiate", "--store", "dummy://", "--eval", "--strict", "--json", str(REPO / "tools/eval-module.nix"),
         "--argstr", "nixpkgsLib", str(Path(LIB).resolve()), "--arg", "host", str(host)],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["failedAssertions"] == [
        "osiris.healthGate.enable: expected services.osiris.enable = true (the gate asks the agent whether it runs)."]


@pytest.mark.parametrize("name", ["osiris-health-gate", "osiris-health-gate-failed"])
def test_the_gate_units_score_like_the_agent(tmp_path, name):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: `make test` installs it (tools/ensure-system-tools.sh)"
    unit = tmp_path / f"{name}.service"
    unit.write_text(image(tmp_path)["units"][name])
    result = subprocess.run([analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True)
    score = re.search(rf"Overall exposure level for {name}\.service: ([0-9.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= MAX_SCORE


def test_the_physical_appliance_host_is_an_image_with_the_gate(tmp_path):
    out = subprocess.run(
        ["nix-instantiate", "--store", "dummy://", "--eval", "--strict", "--json", str(REPO / "tools/eval-module.nix"),
         "--argstr", "nixpkgsLib", str(Path(LIB).resolve()),
         "--arg", "host", str(REPO / "hosts" / "appliance" / "configuration.nix")],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    host = json.loads(out.stdout)
    assert host["failedAssertions"] == []
    assert host["image"]["uki"]["file"] == "osiris_0.1.0+3.efi"
    assert {"osiris-agent", "osiris-health-gate", "osiris-health-gate-failed"} <= set(host["units"])
    assert host["image"]["luks"]["osiris-data"]["crypttabExtraOpts"] == ["tpm2-device=auto"]


UPDATE = {"enable": "true", "repositoryUrl": '"https://updates.example/osiris/"',
          "trustedRoot": '"/etc/osiris/root.json"', "hardware": '"hp-t640"'}


def update(tmp_path: Path, image_on: bool = True, **options: str) -> dict:
    """The modules with osiris.update set (Nix values by option name)."""
    body = " ".join(f"{k} = {v};" for k, v in {**UPDATE, **options}.items())
    extra = f"osiris.update = {{ {body} }};" + (' osiris.image = { enable = true; version = "1"; };' if image_on else "")
    return evaluate(tmp_path, "", extra=extra)


def test_the_update_unit_is_root_without_capabilities_writing_only_the_disk_and_the_esp(tmp_path):
    out = update(tmp_path, disk='"/dev/disk/by-path/pci-0000:00:11.0-ata-1"')
    assert out["failedAssertions"] == []
    unit = out["units"]["osiris-update"]
    assert directive(unit, "User") == [] and directive(unit, "CapabilityBoundingSet") == [""]
    assert directive(unit, "DeviceAllow") == ["/dev/disk/by-path/pci-0000:00:11.0-ata-1 rw"]
    assert directive(unit, "DevicePolicy") == ["closed"] and directive(unit, "ProtectSystem") == ["strict"]
    assert directive(unit, "ReadWritePaths") == ["/var/lib/osiris-update", "/boot"]
    assert directive(unit, "SocketBindDeny") == ["any"]
    assert directive(unit, "ExecStart")[0].endswith(
        "/bin/osiris-update-install --settings /etc/osiris/update.json request")
    # Without a named disk: internal disks of any kind, nothing else.
    assert directive(update(tmp_path)["units"]["osiris-update"], "DeviceAllow") == [
        "block-sd rw", "block-blkext rw", "block-virtblk rw", "block-mmc rw"]
    # The agent triggers it: its request directory is writable in its sandbox, and a .path unit watches it.
    assert "-/var/lib/osiris-update/request" in directive(out["unit"], "ReadWritePaths")
    assert "d /var/lib/osiris-update/request 0770 root osiris - -" in out["tmpfiles"]
    assert directive(out["pathUnits"]["osiris-update"], "PathExists") == [
        "/var/lib/osiris-update/request/request.json"]
    # The agent's backend gets the same settings, runner systemd, and the plugin is installed.
    settings = out["settings"]["plugins"]["update-ab"]
    assert settings["repository"] == "https://updates.example/osiris/" and settings["runner"] == "systemd"
    assert settings["check_interval"] == 21600
    assert settings["esp"] == "/boot" and settings["state_dir"] == "/var/lib/osiris-update"


def test_the_update_unit_scores_at_most_two(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: `make test` installs it (tools/ensure-system-tools.sh)"
    unit = tmp_path / "osiris-update.service"
    unit.write_text(update(tmp_path, disk='"/dev/sda"')["units"]["osiris-update"])
    result = subprocess.run([analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True)
    score = re.search(r"Overall exposure level for osiris-update\.service: ([0-9.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= 2.0


@pytest.mark.parametrize("options, image_on, expected", [
    ({"repositoryUrl": '"http://updates.example/"'}, True,
     'osiris.update.repositoryUrl = "http://updates.example/": expected an https:// URL'),
    ({"trustedRoot": "null"}, True, "osiris.update.trustedRoot: expected the path of the repository's root.json"),
    ({"hardware": '"HP T640"'}, True, 'osiris.update.hardware = "HP T640": expected the hardware model'),
    ({"rebootWindow": '"2am-4am"'}, True, 'osiris.update.rebootWindow = "2am-4am": expected HH:MM-HH:MM'),
    ({"checkInterval": "60"}, True, "osiris.update.checkInterval = 60: expected at least 300 seconds"),
    ({"disk": '"sda"'}, True, 'osiris.update.disk = "sda": expected a /dev path'),
    ({}, False, "osiris.update.enable: expected osiris.image.enable = true"),
])
def test_update_assertions_name_the_option(tmp_path, options, image_on, expected):
    out = update(tmp_path, image_on, **options)
    assert len(out["failedAssertions"]) == 1, out
    assert expected in " ".join(out["failedAssertions"][0].split())
