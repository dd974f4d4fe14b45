"""The runner's journal becomes signed `update` evidence, each line once,
across restarts and a torn last line; the boot state adds booted, blessed
and rolled-back (docs/updates.md, "For the auditor")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osiris.app import load
from osiris.evidence.log import EvidenceLog
from osiris.evidence.service import EvidenceService
from osiris.evidence.settings import EvidenceSettings
from osiris.evidence.verify import verify_log
from osiris.records import BootEntry, UpdateError, UpdateStatus
from osiris_update_ab.evidence import UpdateEvidence, same_boot

BOOT_1 = {"id": "boot-1", "started": 1000}
BOOT_2 = {"id": "boot-2", "started": 5000}


class World:
    """An agent's ctx with a real signed evidence log, the runner's journal
    and a boot state the test sets."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.journal = tmp_path / "update" / "journal.jsonl"
        self.journal.parent.mkdir()
        self.status = UpdateStatus("update-ab", configured=True, booted_version="1.0.0",
                                   entries=(BootEntry("1.0.0", "blessed", booted=True),))
        self.boot = BOOT_1
        self.seq = 0
        self.open()

    def open(self) -> None:
        """A fresh agent on the same state (a restart)."""
        self.loaded = load(config_data={"state_dir": str(self.tmp / "state")}, environ={"OSIRIS_PLUGINS": "none"})
        self.ctx = self.loaded.ctx
        self.ctx.evidence = EvidenceService.open(self.ctx, EvidenceSettings())

        async def status():
            if isinstance(self.status, Exception):
                raise self.status
            return self.status

        self.follower = UpdateEvidence(self.ctx, self.journal, status, boot=lambda: self.boot)

    async def restart(self) -> None:
        await self.ctx.evidence.close()
        self.ctx.close()
        self.open()

    def step(self, step: str, version: str = "1.1.0", **detail) -> None:
        self.seq += 1
        line = {"seq": self.seq, "at": "2026-12-05T03:00:00Z", "step": step, "version": version, "detail": detail}
        with open(self.journal, "a") as f:
            f.write(json.dumps(line) + "\n")

    def bundles(self) -> list[dict]:
        log = EvidenceLog(self.ctx.paths.evidence_log, create=False)
        try:
            return [b for b in (json.loads(e.body) for e in log.iter_entries()) if b["kind"] == "update"]
        finally:
            log.close()

    def steps(self, source: str | None = None) -> list[tuple]:
        return [(b["payload"]["step"], b["payload"].get("version")) for b in self.bundles()
                if source is None or b["payload"]["source"] == source]


@pytest.fixture
async def world(tmp_path):
    w = World(tmp_path)
    yield w
    await w.ctx.evidence.close()
    w.ctx.close()


async def test_each_journal_line_is_one_signed_bundle_once_across_restarts(world):
    await world.follower.once()
    assert world.steps() == [("booted", "1.0.0")]
    for step in ("found", "downloaded", "verified"):
        world.step(step, size=1024)
    await world.follower.once()
    await world.follower.once()  # nothing new: nothing recorded
    assert world.steps()[1:] == [("found", "1.1.0"), ("downloaded", "1.1.0"), ("verified", "1.1.0")]
    await world.restart()
    world.step("written")
    await world.follower.once()
    steps = world.steps()
    assert steps[1:] == [("found", "1.1.0"), ("downloaded", "1.1.0"), ("verified", "1.1.0"), ("written", "1.1.0")]
    assert [s for s, _ in steps].count("booted") == 1  # the same boot: booted is recorded once
    found = world.bundles()[1]["payload"]
    assert found == {"step": "found", "source": "journal", "version": "1.1.0", "seq": 1,
                     "at": "2026-12-05T03:00:00Z", "offset": 0, "detail": {"size": 1024}}
    # Signed and chained like every bundle: the log verifies.
    log = EvidenceLog(world.ctx.paths.evidence_log, create=False)
    try:
        report = verify_log(log, world.ctx.evidence.verify_key)
    finally:
        log.close()
    assert report.ok and not report.problems


async def test_a_torn_last_line_waits_and_a_broken_line_is_recorded_as_unreadable(world):
    world.step("found")
    with open(world.journal, "a") as f:
        f.write('{"seq": 2, "at": "2026-12-05T03:00:01Z", "step": "down')  # the runner is mid-write (or died)
    await world.follower.once()
    assert world.steps("journal") == [("found", "1.1.0")]
    with open(world.journal, "a") as f:
        f.write('loaded", "version": "1.1.0"}\n')  # completed
        f.write("not json at all\n")
        f.write('{"seq": "4", "step": "written"}\n')
    await world.follower.once()
    payloads = [b["payload"] for b in world.bundles() if b["payload"]["source"] == "journal"][1:]
    assert payloads[0]["step"] == "downloaded" and payloads[0]["seq"] == 2
    assert payloads[1]["step"] == "journal-unreadable" and payloads[1]["error"].startswith("not JSON")
    assert payloads[1]["offset"] == world.journal.read_bytes().index(b"not json")
    assert payloads[2] == {"step": "journal-unreadable", "source": "journal", "offset": payloads[1]["offset"] + 16,
                           "sha256": payloads[2]["sha256"], "error": "'seq' is not an integer"}


async def test_a_replaced_journal_is_read_from_its_start(world):
    for step in ("found", "downloaded", "verified"):
        world.step(step)
    await world.follower.once()
    world.journal.unlink()
    world.seq = 0
    world.step("found", version="1.2.0")
    await world.follower.once()
    assert world.steps("journal") == [("found", "1.1.0"), ("downloaded", "1.1.0"), ("verified", "1.1.0"),
                                      ("found", "1.2.0")]


async def test_an_installed_version_that_boots_and_is_blessed(world):
    world.step("installed")
    world.step("reboot-scheduled", at="2026-12-06T02:00:00Z")
    await world.follower.once()
    # Rebooted into 1.1.0 on trial: booted, not yet blessed.
    await world.restart()
    world.boot = BOOT_2
    world.status = UpdateStatus("update-ab", configured=True, booted_version="1.1.0", entries=(
        BootEntry("1.1.0", "trial", tries_left=2, tries_done=1, booted=True, file="osiris_1.1.0+2-1.efi"),
        BootEntry("1.0.0", "blessed")))
    await world.follower.once()
    assert world.steps()[-1] == ("booted", "1.1.0")
    assert world.bundles()[-1]["payload"]["entry"]["state"] == "trial"
    # The health gate passed: systemd-bless-boot renamed the entry.
    world.status = UpdateStatus("update-ab", configured=True, booted_version="1.1.0", entries=(
        BootEntry("1.1.0", "blessed", booted=True, file="osiris_1.1.0.efi"), BootEntry("1.0.0", "blessed")))
    await world.follower.once()
    await world.follower.once()
    assert [s for s, _ in world.steps()] == ["installed", "reboot-scheduled", "booted", "booted", "blessed"]
    blessed = world.bundles()[-1]["payload"]
    assert blessed["version"] == "1.1.0" and blessed["installed_seq"] == 1 and blessed["boot"] == BOOT_2


async def test_a_version_that_ran_out_of_tries_is_rolled_back(world):
    world.step("installed")
    await world.follower.once()
    world.boot = BOOT_2  # three failed tries later, 1.0.0 boots again
    world.status = UpdateStatus("update-ab", configured=True, booted_version="1.0.0", entries=(
        BootEntry("1.0.0", "blessed", booted=True), BootEntry("1.1.0", "bad", tries_left=0, tries_done=3,
                                                               file="osiris_1.1.0+0-3.efi")))
    await world.follower.once()
    await world.follower.once()
    assert world.steps()[-2:] == [("booted", "1.0.0"), ("rolled-back", "1.1.0")]
    rolled = world.bundles()[-1]["payload"]
    assert rolled["booted_version"] == "1.0.0" and rolled["entry"]["file"] == "osiris_1.1.0+0-3.efi"


async def test_not_rebooted_yet_or_unreadable_boot_state_decides_nothing(world):
    world.step("installed")
    world.status = UpdateStatus("update-ab", configured=True, booted_version="1.0.0", entries=(
        BootEntry("1.0.0", "blessed", booted=True), BootEntry("1.1.0", "trial", tries_left=3, tries_done=0)))
    await world.follower.once()
    assert [s for s, _ in world.steps()] == ["installed", "booted"]
    world.status = UpdateError("/sys/firmware/efi/efivars: not readable")
    world.step("failed", error="x")
    await world.follower.once()  # the journal is still followed
    assert world.steps()[-1] == ("failed", "1.1.0")


def test_same_boot_by_id_or_by_start_time():
    assert same_boot({"id": "a", "started": 1}, {"id": "a", "started": 99})
    assert not same_boot({"id": "a", "started": 1}, {"id": "b", "started": 1})
    assert same_boot({"started": 1000}, {"started": 1010}) and not same_boot({"started": 1000}, {"started": 1100})
    assert not same_boot(None, {"started": 1})
