"""The root-side runner end to end: a v1 disk image file, a release made
by `osiris-release` into a TUF repository served over HTTPS on loopback,
the runner (`python -m osiris_update_ab.runner`) as its own process.

The kill test stops the runner at each install stage (the documented,
test-only OSIRIS_UPDATE_TEST_PAUSE hook), SIGKILLs it there, and checks
that the booted slot and the blessed entry are byte-identical, that no
entry names a half-installed version, and that the next apply succeeds.
The attack tests check that each attack is refused, named, and that
nothing was written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from osiris_update_ab.install import STAGES
from osiris_update_ab.runner import reboot_time

pytestmark = pytest.mark.slow
HW = "t640"


def installed(app, version: str) -> None:
    a = app.releases[version]
    b = app.slots()[1]
    assert b.partition.label == f"osiris_{version}"
    assert app.region(b.partition.start, a.image.size) == a.image.image_sha256
    assert f"osiris_{version}+3.efi" in app.esp_names()
    assert app.esp_sha(f"osiris_{version}+3.efi") == a.uki.sha256
    assert not [n for n in app.esp_names() if n.endswith(".partial")]


def test_the_runner_installs_the_newest_release_and_journals_each_step(appliance):
    app = appliance
    a_before = app.slots()[0].partition
    slot_a = app.region(a_before.start, a_before.size)
    app.publish("2")
    code, out, err = app.run("check")
    assert code == 0, err
    assert json.loads(out) == {"current": "1", "available": "2"}
    assert app.slots()[1].partition.label == "_empty"  # a check writes nothing
    code, out, err = app.run("apply")
    assert code == 0, err
    assert json.loads(out)["installed"] == "2"
    installed(app, "2")
    assert app.region(a_before.start, a_before.size) == slot_a
    steps = [(r["step"], r["version"]) for r in app.journal()]
    assert steps == [("found", "2"), ("found", "2"), ("downloaded", "2"), ("verified", "2"), ("written", "2"),
                     ("read-back", "2"), ("installed", "2")]
    assert [r["seq"] for r in app.journal()] == list(range(1, 8))
    st = app.status()
    assert st["phase"] == "installed" and st["version"] == "2" and st["bytes_done"] == app.releases["2"].image.size
    assert st["rate"] > 0 and st["error"] is None


@pytest.mark.parametrize("stage", STAGES)
def test_a_kill_at_any_stage_leaves_the_booted_version_and_the_next_apply_succeeds(appliance, stage):
    app = appliance
    a = app.slots()[0].partition
    slot_a, uki_1 = app.region(a.start, a.size), app.esp_sha("osiris_1.efi")
    app.publish("2")
    proc = app.start("apply", pause=stage)
    marker = app.state / "paused"
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"the runner never reached {stage}: {proc.communicate()}"
    assert marker.read_text() == stage
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    marker.unlink()
    # The booted version is untouched and blessed, whatever the stage.
    assert app.slots()[0].partition.label == "osiris_1" and app.region(a.start, a.size) == slot_a
    assert app.esp_sha("osiris_1.efi") == uki_1
    entries = [n for n in app.esp_names() if not n.endswith(".partial")]
    if stage == "installed":
        installed(app, "2")  # the rename was the last step: 2 is complete, on trial
    else:
        assert entries == ["osiris_1.efi"], entries  # nothing boots the half-installed version
    # The next apply notes the interruption and succeeds.
    code, out, err = app.run("apply")
    assert code == 0, err
    installed(app, "2")
    assert app.region(a.start, a.size) == slot_a and app.esp_sha("osiris_1.efi") == uki_1
    assert sorted(app.esp_names()) == ["osiris_1.efi", "osiris_2+3.efi"]
    steps = [r["step"] for r in app.journal()]
    assert "interrupted" in steps and steps[-1] == "installed"


def _unchanged(app):
    b = app.slots()[1].partition
    return app.outside(b), app.esp_names(), app.esp_sha("osiris_1.efi"), b.label


def refused(app, match: str, before) -> dict:
    code, _out, err = app.run("apply")
    assert code == 1 and match in err, err
    assert "Traceback" not in err
    assert _unchanged(app) == before  # nothing outside the inactive slot, ESP as it was, slot still _empty
    last = app.journal()[-1]
    assert last["step"] == "refused" and match in last["detail"]["error"]
    assert app.status()["phase"] == "refused"
    return last


def test_a_tampered_image_is_refused_and_nothing_is_written(appliance):
    app = appliance
    app.publish("2")
    before = _unchanged(app)
    [served] = list((app.repo / "targets" / HW / "2").glob("*.slot.img*"))
    data = bytearray(served.read_bytes())
    data[len(data) // 3] ^= 0x40
    served.write_bytes(bytes(data))
    refused(app, "tampered target", before)


def test_tampered_metadata_is_refused(appliance):
    app = appliance
    app.publish("2")
    before = _unchanged(app)
    # The timestamp role's metadata changed without its key: its signature no longer holds.
    meta = app.repo / "metadata" / "timestamp.json"
    doc = json.loads(meta.read_text())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
    meta.write_text(json.dumps(doc))
    refused(app, "tampered metadata", before)


def test_an_expired_timestamp_is_refused(make_appliance):
    app = make_appliance(timestamp_expiry="2s")
    app.publish("2")
    before = _unchanged(app)
    time.sleep(3)
    refused(app, "expired", before)


def test_an_older_version_is_never_installed(appliance):
    app = appliance
    app.publish("2")
    old_metadata = {p.name: p.read_bytes() for p in (app.repo / "metadata").iterdir()}
    app.publish("3")
    assert app.run("check")[0] == 0  # the appliance has seen the repository with 3
    before = _unchanged(app)
    # A rollback: the repository serves the metadata from before 3 again.
    for p in (app.repo / "metadata").iterdir():
        if p.name not in old_metadata:
            p.unlink()
    for name, data in old_metadata.items():
        (app.repo / "metadata" / name).write_bytes(data)
    refused(app, "rollback", before)


def test_an_older_release_than_the_booted_one_is_not_installed(appliance):
    app = appliance
    app.publish("0.9")
    before = _unchanged(app)
    code, out, err = app.run("apply")
    assert code == 0 and json.loads(out)["installed"] is None, err
    assert _unchanged(app) == before and app.status()["phase"] == "up-to-date"


def test_a_release_for_other_hardware_is_refused(appliance):
    app = appliance
    app.publish("2", hardware="other-model")
    before = _unchanged(app)
    refused(app, "another hardware model", before)


def test_bad_settings_are_named_without_a_traceback(tmp_path):
    s = tmp_path / "settings.json"
    s.write_text(json.dumps({"plugins": {"update-ab": {"tries": 0, "state_dir": str(tmp_path / "st")}}}))
    res = subprocess.run([sys.executable, "-m", "osiris_update_ab.runner", "--settings", str(s), "apply"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "plugins.update-ab.tries" in res.stderr and "Traceback" not in res.stderr


def test_the_reboot_falls_in_the_window():
    import datetime as dt

    tz = dt.timezone.utc
    at = dt.datetime(2026, 12, 5, 14, 30, tzinfo=tz)
    assert reboot_time(None, at) == at
    assert reboot_time("02:00-04:00", at) == dt.datetime(2026, 12, 6, 2, 0, tzinfo=tz)
    assert reboot_time("14:00-15:00", at) == at
    assert reboot_time("22:00-03:00", dt.datetime(2026, 12, 5, 1, 0, tzinfo=tz)).hour == 1  # inside, past midnight
    assert reboot_time("22:00-03:00", at) == dt.datetime(2026, 12, 5, 22, 0, tzinfo=tz)


def test_apply_with_reboot_schedules_it_in_the_window(appliance):
    app = appliance
    app.publish("2")
    settings = json.loads(app.settings.read_text())
    out = app.tmp / "reboot-at"
    settings["plugins"]["update-ab"].update(reboot_window="00:00-23:59",
                                            reboot_command=["sh", "-c", f'echo "$0" > {out}', "{at}"])
    app.settings.write_text(json.dumps(settings))
    p = subprocess.run([sys.executable, "-m", "osiris_update_ab.runner", "--settings", str(app.settings), "--reboot",
                        "apply"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["reboot_at"] is not None
    last = app.journal()[-1]
    assert last["step"] == "reboot-scheduled" and last["detail"]["window"] == "00:00-23:59"
    assert out.read_text().strip()[:10] == last["detail"]["at"][:10]
    assert app.status()["phase"] == "reboot-scheduled"
