"""modules/osiris.nix evaluated with nixpkgs' real lib (tools/eval-module.nix):
what a host's settings make writable in the sandbox, what a host may tune,
and the score of the unit it renders. Needs NIXPKGS_LIB, a checkout of
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
