"""End to end: a config file with lab targets, `osiris check` on the
command line, chaos in the lab, the answer in the output."""

from __future__ import annotations

import json

from click.testing import CliRunner

from osiris.cli import cli


def run(config, *args):
    result = CliRunner(env={"OSIRIS_PLUGINS": "windows", "OSIRIS_CONFIG": None}).invoke(
        cli, ["-c", str(config), "check", *args], catch_exceptions=False)
    return result


def test_osiris_check_reports_the_lab_and_sees_chaos(lab, write_config):
    config = write_config(hosts={"dc01", "srv01", "ws01"})
    result = run(config, "--format", "json")
    assert result.exit_code == 0, result.output
    got = {(o["target"], o["check"]): o for o in json.loads(result.output)}
    common = ("windows.firewall.profiles_enabled", "windows.defender.realtime_protection", "windows.smb.v1_disabled")
    expected = {(h, c) for h in ("dc01", "srv01", "ws01") for c in common}
    expected |= {("srv01", "windows.bitlocker.os_volume_encrypted"), ("ws01", "windows.bitlocker.os_volume_encrypted"),
                 ("ws01", "windows.session.inactivity_lock")}
    assert set(got) == expected
    assert {o["status"] for o in got.values()} == {"pass"}
    assert got[("ws01", "windows.session.inactivity_lock")]["facts"] == {"inactivity_timeout_secs": 900}

    lab.break_setting("ws01", "bitlocker.os_volume.protection_status")
    result = run(config)
    assert result.exit_code == 1
    lines = [line.split() for line in result.output.splitlines()]
    # the per-host summary first (its header names FAIL and ERROR columns), then the results
    assert lines[0] == ["HOST", "PASS", "FAIL", "ERROR"] and lines[2][:3] == ["ws01", "4", "1"]
    failing = [line[:3] for line in lines[3:] if len(line) > 2 and line[2] in ("FAIL", "ERROR")]
    assert failing == [["ws01", "windows.bitlocker.os_volume_encrypted", "FAIL"]]
    assert "BitLocker protection is Off on C:" in result.output
    assert f"{len(expected) - 1} passed, 1 failed or erred" in result.output

    lab.inject_fault("srv01", "refused")
    result = run(config, "--format", "json", "--target", "srv01")
    assert result.exit_code == 1
    reasons = {o["reason"] for o in json.loads(result.output)}
    assert reasons == {f"WinRM {lab.host('srv01').endpoint('https')}: connection refused after 3 attempts"}


def test_osiris_config_check_names_the_bad_target_key(lab, write_config):
    targets = lab.targets()
    targets[1]["options"]["transport"] = "basic"
    config = write_config(targets=targets)
    result = CliRunner(env={"OSIRIS_PLUGINS": "windows"}).invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 2, result.output
    assert f"{config}: section 'targets[1]', target 'srv01': key 'options.transport'" in result.output
