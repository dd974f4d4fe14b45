"""`osiris update status|check|apply`: the core speaks only the update
protocol (records.UpdateBackend), answers when no backend is configured,
follows an install's progress, and turns a backend's refusal or bug into
a clear message and exit status."""

from __future__ import annotations

import io
import json
import subprocess

import pytest
from click.testing import CliRunner

from osiris.cli import Plugins, cli
from osiris.records import UpdateProgress
from osiris.update_cli import ProgressView

from .conftest import OSIRIS

BACKEND = '''
from datetime import datetime, timezone
from osiris import hookimpl
from osiris.records import (BootEntry, Slot, UpdateCheck, UpdateError, UpdateProgress, UpdateResult,
                            UpdateStatus)

MODE = {mode!r}
CHECKED = datetime(2026, 12, 5, 3, 0, tzinfo=timezone.utc)

class Backend:
    name = "fake-ab"

    async def status(self):
        if MODE == "bad-status":
            return {{"booted": "1.0.0"}}
        if MODE == "unconfigured":
            return UpdateStatus(self.name, configured=False, detail="plugins.fake-ab.repository_url is not set")
        return UpdateStatus(self.name, configured=True, booted_version="1.0.0",
                            slots=[Slot("A", "1.0.0", booted=True, device="/dev/sda2"), Slot("B", "0.9.0")],
                            entries=[BootEntry("1.0.0", "blessed", booted=True, file="osiris_1.0.0.efi"),
                                     BootEntry("0.9.0", "bad", tries_left=0, tries_done=3,
                                               file="osiris_0.9.0+0-3.efi")],
                            last_check=CHECKED, available="1.1.0")

    async def check(self):
        if MODE == "refuse":
            raise UpdateError("timestamp.json expired at 2026-12-01T00:00:00Z (a freeze attack?)", refused=True)
        return UpdateCheck(current="1.0.0", available="1.1.0", checked_at=CHECKED)

    async def apply(self, *, reboot, progress=None):
        if MODE == "bug":
            raise KeyError("slot")
        total = 1000
        for done in range(0, total + 1, 50):
            progress(UpdateProgress("writing", "1.1.0", done, total, rate=100.0))
        progress(UpdateProgress("installing", "1.1.0", total, total))
        return UpdateResult("1.1.0", reboot_at=CHECKED if reboot else None)

@hookimpl
def osiris_update_backends(ctx):
    return None if MODE == "none" else Backend()
'''


@pytest.fixture
def osiris_update(write_config, plugin_module, monkeypatch):
    monkeypatch.setenv("OSIRIS_PLUGINS", "none")

    def run(mode: str, *args: str):
        mod = plugin_module(f"update_backend_{mode.replace('-', '_')}", BACKEND.format(mode=mode))
        cfg = write_config({"plugin_modules": [mod]})
        return CliRunner().invoke(cli, ["-c", str(cfg), "update", *args], obj=Plugins())

    return run


def test_status_without_a_backend_says_so(osiris_update):
    res = osiris_update("none", "status", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["configured"] is False and out["backend"] is None and out["booted_version"] is None
    assert "no update backend is configured" in out["detail"]
    res = osiris_update("none", "status")
    assert res.exit_code == 0 and res.stdout.startswith("no update backend is configured")


def test_status_json_without_any_plugin_in_a_subprocess(write_config, tmp_path):
    """As on an appliance whose image has no update plugin: the real CLI."""
    cfg = write_config({})
    proc = subprocess.run([str(OSIRIS), "-c", str(cfg), "update", "status", "--json"], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "OSIRIS_PLUGINS": "none", "HOME": str(tmp_path)},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["configured"] is False


def test_check_and_apply_without_a_backend_exit_2(osiris_update):
    for args in (("check",), ("apply", "--reboot")):
        res = osiris_update("none", *args)
        assert res.exit_code == 2
        assert f"update {args[0]}: no update backend is configured" in res.stderr
    res = osiris_update("unconfigured", "apply")
    assert res.exit_code == 2
    assert "backend 'fake-ab' is not configured: plugins.fake-ab.repository_url is not set" in res.stderr


def test_status_shows_slots_entries_and_tries(osiris_update):
    res = osiris_update("ok", "status")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert "booted version  1.0.0" in lines and "available       1.1.0" in lines
    assert any(line.split() == ["0.9.0", "bad", "0", "no", "osiris_0.9.0+0-3.efi"] for line in lines)
    assert any(line.split() == ["A", "1.0.0", "yes", "/dev/sda2"] for line in lines)
    out = json.loads(osiris_update("ok", "status", "--json").stdout)
    assert out["configured"] is True and out["last_check"] == "2026-12-05T03:00:00+00:00"
    assert [(e["version"], e["state"], e["tries_left"]) for e in out["entries"]] == [("1.0.0", "blessed", None),
                                                                                     ("0.9.0", "bad", 0)]


def test_apply_follows_progress_in_plain_lines_off_a_terminal(osiris_update):
    res = osiris_update("ok", "apply", "--reboot")
    assert res.exit_code == 0, res.output
    progress = res.stderr.splitlines()
    # One line per tenth of the bytes and per phase, not one per callback (21 writing callbacks).
    assert progress[0].startswith("writing 1.1.0, 0 B of 1000 B (0%)")
    assert "writing 1.1.0, 500 B of 1000 B (50%), 100 B/s, ETA 0:05" in progress
    assert progress[-1] == "installing 1.1.0, 1000 B of 1000 B (100%)"
    assert len(progress) == 12
    assert res.stdout.startswith("installed 1.1.0 on trial; reboot into it scheduled for 2026-12-05 03:00:00 UTC")
    out = json.loads(osiris_update("ok", "apply", "--json").stdout)
    assert out == {"installed": "1.1.0", "reboot_at": None, "detail": ""}


def test_a_refusal_exits_1_with_the_backends_message(osiris_update):
    res = osiris_update("refuse", "check")
    assert res.exit_code == 1
    assert res.stderr.strip() == ("osiris: update check refused: timestamp.json expired at 2026-12-01T00:00:00Z "
                                  "(a freeze attack?)")


def test_a_backend_bug_or_wrong_record_names_the_plugin_and_exits_3(osiris_update):
    res = osiris_update("bug", "apply")
    assert res.exit_code == 3
    assert "plugin 'update_backend_bug': update backend 'fake-ab': apply failed: KeyError" in res.stderr
    assert "Traceback" not in res.output
    res = osiris_update("bad-status", "status")
    assert res.exit_code == 3
    assert "update backend status returned dict, expected UpdateStatus (plugin API 2.2)" in res.stderr


def test_the_terminal_bar_shows_bytes_rate_and_eta_and_redraws_at_most_ten_times_a_second():
    now = [0.0]
    out = io.StringIO()
    view = ProgressView(out, tty=True, clock=lambda: now[0])
    view(UpdateProgress("downloading", "1.1.0", 0, 4 << 20))
    view(UpdateProgress("downloading", "1.1.0", 1 << 20, 4 << 20, rate=1 << 20))  # 0 s later: not drawn
    now[0] = 0.5
    view(UpdateProgress("downloading", "1.1.0", 2 << 20, 4 << 20, rate=1 << 20))
    view(UpdateProgress("read-back", "1.1.0", 0, 4 << 20))  # a new phase: drawn, on a new line
    view.close()
    frames = out.getvalue().split("\r\x1b[K")
    assert len(frames) == 4  # '' before the first, then three drawings
    assert frames[2].startswith("[" + "#" * 14 + "-" * 14 + "] downloading 1.1.0, 2.0 MiB of 4.0 MiB (50%), "
                                "1.0 MiB/s, ETA 0:02\n")
    assert frames[3].startswith("[" + "-" * 28 + "] read-back 1.1.0") and out.getvalue().endswith("\n")
