"""Truncation: a log cut short together with the checkpoints over its end
verifies on its own; only a checkpoint held elsewhere can tell. Verify
compares the log with every one it can find: what the outbox says each sink
acknowledged, attested checkpoints, a sink's own copy, a note an auditor
kept; exports carry the newest checkpoint and its anchoring, and pins."""

import json
import sqlite3
import zipfile

import pytest

from osiris.evidence.export import export
from osiris.evidence.errors import EvidenceError
from osiris.evidence.keys import SigningKey
from osiris.evidence.log import EvidenceLog
from osiris.evidence.outbox import Outbox
from osiris.evidence.verify import Witness, log_witnesses, verify_log

from .helpers import fill, new_log
from .test_standalone import auditor


class Store:
    """A sink that keeps what it receives and can say its newest checkpoint."""

    name = "nas"
    kinds = ("bundle", "checkpoint")

    def __init__(self):
        self.notes: dict[int, bytes] = {}

    async def deliver(self, item_id, payload):
        if item_id.startswith("checkpoint-"):
            self.notes[int(item_id.rsplit("-", 1)[1])] = payload

    async def latest_checkpoint(self, origin, key_id):
        return self.notes[max(self.notes)] if self.notes else None


@pytest.fixture
def key():
    return SigningKey.generate()


def truncate(path, keep, *, cursors=False):
    """What anyone who can write the file can do: cut entries [keep, ...)
    with their tree nodes, checkpoints and attestations (and, thoroughly,
    the outbox's cursors)."""
    db = sqlite3.connect(path, isolation_level=None)
    for t in ("entries_no_delete", "nodes_no_delete", "checkpoints_no_delete", "tail_no_delete"):
        db.execute(f"DROP TRIGGER IF EXISTS {t}")
    db.execute("DELETE FROM entries WHERE idx >= ?", (keep,))
    db.execute("DELETE FROM tail WHERE idx >= ?", (keep,))
    db.execute("DELETE FROM nodes WHERE (idx + 1) << level > ?", (keep,))
    db.execute("DELETE FROM attestations WHERE size > ?", (keep,))
    db.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))
    if cursors:
        db.execute("DELETE FROM sink_cursors")
    db.close()


async def test_a_log_cut_short_with_its_checkpoints_fails_when_a_sink_holds_a_later_one(tmp_path, key):
    """Before: after `truncate(path, 30)` (entries 30..39 and checkpoint 40
    gone) `osiris evidence verify` said "ok: 30 entries (0 pruned), 3
    checkpoints, ..." -- the first assertion below. Now the outbox's record of
    what the sink acknowledged fails it, and so does the sink's own copy
    when the cursors were wiped too."""
    log = new_log(tmp_path, key)
    store = Store()
    outbox = Outbox(log, [store])
    fill(log, key, 40, checkpoint_every=10)
    await outbox.drain()
    assert max(store.notes) == 40
    path = log.path
    log.close()
    truncate(path, 30)
    log = EvidenceLog(path, create=False)
    alone = verify_log(log)
    assert alone.ok and alone.entries == 30, alone.summary()  # what verify said before

    report = verify_log(log, witnesses=log_witnesses(log))
    assert not report.ok
    whats = [str(p) for p in report.problems]
    assert "index 30: sink nas (acknowledged checkpoint 40, says the outbox) holds checkpoint 40, but the log " \
           "holds 30 entries: the newest entries were removed (the log was truncated)" in whats, whats
    assert any("sink nas (received entries [0, 40), says the outbox) received entries [0, 40)" in w for w in whats)
    log.close()

    truncate(path, 30, cursors=True)  # the outbox's records wiped as well
    log = EvidenceLog(path, create=False)
    assert verify_log(log, witnesses=log_witnesses(log)).ok
    own = Witness("sink nas (its own copy)", 0, await store.latest_checkpoint(log.origin, "x"))
    report = verify_log(log, witnesses=[own])
    assert not report.ok and report.first_bad_index == 30
    assert "sink nas (its own copy) holds checkpoint 40, but the log holds 30 entries" in report.summary()
    log.close()


def test_a_rewritten_log_of_the_same_length_fails_against_a_kept_checkpoint(tmp_path, key):
    """Cut to 25, then append 15 other bundles: the log is as long as the
    kept checkpoint 40 and verifies on its own, but not against it."""
    log = new_log(tmp_path, key)
    fill(log, key, 40, checkpoint_every=10)
    kept = log.latest_checkpoint()
    path = log.path
    log.close()
    truncate(path, 25)
    log = EvidenceLog(path, create=False)
    fill(log, key, 15, checkpoint_every=5)
    assert verify_log(log).ok and log.size() == 40
    report = verify_log(log, witnesses=[Witness("checkpoint file kept.note", 40, kept.note)])
    assert not report.ok
    assert "checkpoint file kept.note: its checkpoint 40 is signed for another root than the log's entries " \
           "[0, 40) have (the log was rewritten or forked)" in report.summary()
    forged = kept.note.replace(b"\n40\n", b"\n41\n")
    report = verify_log(log, witnesses=[Witness("checkpoint file forged.note", 41, forged)])
    assert "checkpoint file forged.note: its checkpoint does not verify" in report.summary()
    log.close()


def test_attested_checkpoints_count_as_held_outside(tmp_path, key):
    log = new_log(tmp_path, key)
    fill(log, key, 20, checkpoint_every=10)
    log.put_attestation(20, "ots", b"proof", complete=False)
    path = log.path
    log.close()
    db = sqlite3.connect(path, isolation_level=None)  # an editor who forgets foreign keys
    for t in ("entries_no_delete", "checkpoints_no_delete"):
        db.execute(f"DROP TRIGGER {t}")
    db.execute("DELETE FROM entries WHERE idx >= 10")
    db.execute("DELETE FROM checkpoints WHERE size > 10")
    db.close()
    log = EvidenceLog(path, create=False)
    report = verify_log(log, witnesses=log_witnesses(log))
    assert "ots attestation of checkpoint 20 (pending) holds checkpoint 20, but the log holds 10 entries" \
        in report.summary()
    log.close()


@pytest.fixture
def grown(tmp_path, key):
    """A log exported at 20 (the auditor keeps the anchor), then grown to 40."""
    log = new_log(tmp_path, key)
    fill(log, key, 20, batch=5, checkpoint_every=10)
    log.put_attestation(10, "ots", b"\x00OpenTimestamps stand-in", complete=True)
    first = export(log, tmp_path / "first.zip", 0, 20, signing_key=key)
    kept = tmp_path / "kept.note"
    kept.write_bytes(zipfile.ZipFile(tmp_path / "first.zip").read(f"checkpoints/{first.anchor}.note"))
    fill(log, key, 20, checkpoint_every=7)
    log.checkpoint(key)
    yield log, kept
    log.close()


def unpack(zpath, d):
    with zipfile.ZipFile(zpath) as z:
        z.extractall(d)
    return d


def test_an_export_pins_a_kept_checkpoint_and_carries_the_anchoring(tmp_path, key, grown):
    log, kept = grown
    summary = export(log, tmp_path / "second.zip", 30, 40, signing_key=key, pins=[kept.read_bytes()])
    d = unpack(tmp_path / "second.zip", tmp_path / "second")
    manifest = json.loads((d / "manifest.json").read_text())
    # The newest checkpoint is the anchor; the newest attested one (10) is there with its proof, far
    # before the range; the pinned 20 with a consistency proof on to the anchor.
    assert manifest["anchor_checkpoint"] == log.latest_checkpoint().size == 40
    assert manifest["attested"] == [10] and (d / "checkpoints/10.note.ots").is_file()
    assert manifest["pinned"] == [20] and {10, 20, 40} <= set(summary.checkpoints)
    run = auditor(d, "--checkpoint", str(kept))
    assert run.returncode == 0 and f"ok: {kept}: the log extends the checkpoint you kept (size 20)" in run.stdout, \
        run.stdout
    # Without the pin, the export cannot show it, and says how to get one that can.
    export(log, tmp_path / "plain.zip", 30, 40, signing_key=key)
    run = auditor(unpack(tmp_path / "plain.zip", tmp_path / "plain"), "--checkpoint", str(kept))
    assert run.returncode == 1 and "osiris evidence export --pin kept.note" in run.stdout


def test_a_truncated_log_cannot_be_exported_against_a_pin_and_fails_the_kept_checkpoint(tmp_path, key, grown):
    log, kept = grown
    path = log.path
    log.close()
    truncate(path, 15)
    log = EvidenceLog(path, create=False)
    with pytest.raises(EvidenceError, match="covers only 10 entries: the log was truncated"):
        export(log, tmp_path / "x.zip", 0, 10, signing_key=key, pins=[kept.read_bytes()])
    fill(log, key, 10)
    log.checkpoint(key)
    with pytest.raises(EvidenceError, match="pinned checkpoint 20: the log does not extend it"):
        export(log, tmp_path / "y.zip", 0, 25, signing_key=key, pins=[kept.read_bytes()])
    # Exported without the pin, the auditor's verify.py says the log is shorter than what they kept.
    truncate(path, 15)
    log.close()
    log = EvidenceLog(path, create=False)
    export(log, tmp_path / "z.zip", 0, 10, signing_key=key)
    run = auditor(unpack(tmp_path / "z.zip", tmp_path / "z"), "--checkpoint", str(kept))
    assert run.returncode == 1
    assert f"{kept}: the checkpoint you kept covers 20 entries, but this export's log is signed only up to 10" \
        in run.stdout
    log.close()
