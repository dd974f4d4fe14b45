"""The append-only log: group commit, chain, tree, checkpoints, proofs,
tamper detection that names the first bad index, retention."""

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from osiris.evidence import merkle
from osiris.evidence.errors import EvidenceError
from osiris.evidence.keys import SigningKey
from osiris.evidence.log import ZERO_HASH, EvidenceLog
from osiris.evidence.verify import verify_entry_in_log, verify_log

from .helpers import ORIGIN, fill, new_log, statement


@pytest.fixture
def key():
    return SigningKey.generate()


@pytest.fixture
def log(tmp_path, key):
    lg = new_log(tmp_path, key)
    yield lg
    lg.close()


def test_a_batch_is_one_transaction_on_a_durable_wal(log, key):
    """Group commit: a batch of bundles is one BEGIN..COMMIT, and with
    journal_mode=WAL and synchronous=FULL one commit is one WAL fsync."""
    assert log._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert log._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    trace = []
    log._db.set_trace_callback(trace.append)
    out = log.append([statement(i) for i in range(100)], key)
    log._db.set_trace_callback(None)
    assert [s for s in trace if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
    assert [a.index for a in out] == list(range(100)) and log.size() == 100


def test_entries_chain_and_sign_what_is_stored(log, key):
    fill(log, key, 20, batch=6)
    prev = ZERO_HASH
    for e in log.iter_entries():
        st = json.loads(e.body)
        assert st["seq"] == e.index and st["prev"] == prev.hex() and st["log"] == ORIGIN
        assert st["id"] == e.bundle_id and st["kind"] == "sweep"
        assert key.verify_key.verify(e.sig, e.body)
        assert merkle.leaf_hash(e.body) == e.leaf
        prev = e.leaf
    assert log.root() == merkle.root_of_leaves(e.leaf for e in log.iter_entries())


def test_checkpoints_proofs_and_consistency(log, key):
    cps = []
    for n in (1, 3, 8, 13, 32, 33):
        fill(log, key, n - log.size())
        cps.append(log.checkpoint(key))
    assert log.checkpoint(key) is None  # nothing new
    assert log.checkpoint(key, force=True).size == 33
    assert [c.size for c in log.checkpoints()] == [1, 3, 8, 13, 32, 33]
    for cp in cps:
        assert cp.root == merkle.root_of_leaves(e.leaf for e in log.iter_entries(0, cp.size))
        for i in range(cp.size):
            proof = log.inclusion_proof(i, cp.size)
            assert merkle.verify_inclusion(log.entry(i).leaf, i, cp.size, proof, cp.root)
    for a in cps:
        for b in cps:
            if a.size <= b.size:
                assert merkle.verify_consistency(a.size, b.size, a.root, b.root, log.consistency_proof(a.size, b.size))
    assert log.checkpoint_covering(8).size == 13 and log.checkpoint_covering(33) is None
    report = verify_log(log)
    assert report.ok, report.summary()
    assert (report.entries, report.checkpoints, report.signatures, report.roots) == (33, 6, 33, 6)
    assert report.consistency == 5
    one = verify_entry_in_log(log, log.entry(9).bundle_id[:28])  # ids start with the time: a longer prefix
    assert one["index"] == 9 and one["checkpoint"]["size"] == 33


def test_the_log_refuses_another_key_and_is_append_only(tmp_path, log, key):
    fill(log, key, 3)
    other = SigningKey.generate()
    with pytest.raises(EvidenceError, match="not this log's"):
        log.append([statement()], other)
    log.close()
    with pytest.raises(EvidenceError, match="not by the appliance's key"):
        new_log(tmp_path, other)
    db = sqlite3.connect(tmp_path / "evidence" / "log.sqlite3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM entries WHERE idx = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE entries SET kind = 'other' WHERE idx = 1")
    db.close()


# -- tampering: verify names the first bad index ------------------------------------------

def _tampered_log(tmp_path, key, n=40, checkpoint_every=10):
    lg = new_log(tmp_path, key)
    fill(lg, key, n, checkpoint_every=checkpoint_every)
    lg.checkpoint(key)
    path = lg.path
    lg.close()
    return path


def _raw(path):
    db = sqlite3.connect(path, isolation_level=None)
    for trigger in ("entries_no_delete", "entries_no_update", "entries_retention", "tail_no_change", "tail_no_delete"):
        db.execute(f"DROP TRIGGER {trigger}")
    return db


def _body(db, idx):
    """An entry's signed bytes as stored (the tail holds signature + body)."""
    return bytes(db.execute("SELECT data FROM tail WHERE idx = ?", (idx,)).fetchone()[0])[64:]


def _put_body(db, idx, body):
    sig = bytes(db.execute("SELECT data FROM tail WHERE idx = ?", (idx,)).fetchone()[0])[:64]
    db.execute("UPDATE tail SET data = ? WHERE idx = ?", (sig + body, idx))


@pytest.mark.parametrize("signatures", [True, False], ids=["full", "fast"])
def test_a_flipped_byte_is_found_at_its_index(tmp_path, key, signatures):
    path = _tampered_log(tmp_path, key)
    data = bytearray(path.read_bytes())
    marker = b"all three profiles on (sweep 17)"
    at = data.find(marker)
    assert at > 0 and data.find(marker, at + 1) < 0
    data[at + 4] ^= 0x01  # "three" -> "t" ^ 1 on one byte, straight on disk
    path.write_bytes(bytes(data))
    report = verify_log(EvidenceLog(path, create=False), signatures=signatures)
    assert not report.ok and report.first_bad_index == 17, report.summary()
    assert "index 17" in report.summary()


@pytest.mark.parametrize("signatures", [True, False], ids=["full", "fast"])
def test_a_flipped_byte_with_a_matching_leaf_is_still_found(tmp_path, key, signatures):
    """Whoever alters an entry and recomputes its stored leaf still breaks
    the signature and the checkpoint roots."""
    path = _tampered_log(tmp_path, key)
    db = _raw(path)
    body = bytearray(_body(db, 23))
    body[body.find(b"three")] ^= 0x20
    _put_body(db, 23, bytes(body))
    db.execute("UPDATE entries SET leaf = ? WHERE idx = 23", (merkle.leaf_hash(bytes(body)),))
    db.close()
    report = verify_log(EvidenceLog(path, create=False), signatures=signatures)
    assert report.first_bad_index == 23, report.summary()
    assert "signature does not verify" in str(report.first_problem())
    assert any(p.checkpoint and p.checkpoint > 23 and "root does not match" in p.what for p in report.problems)


@pytest.mark.parametrize("signatures", [True, False], ids=["full", "fast"])
def test_a_deleted_entry_is_found_at_its_index(tmp_path, key, signatures):
    path = _tampered_log(tmp_path, key)
    db = _raw(path)
    db.execute("DELETE FROM entries WHERE idx = 12")
    db.close()
    report = verify_log(EvidenceLog(path, create=False), signatures=signatures)
    assert report.first_bad_index == 12 and "entry missing" in str(report.first_problem()), report.summary()
    # What follows names the gap, never an intact entry (it blamed 13, or 14, 21 and 28 "chain broken",
    # and said entries were removed from the end).
    assert {p.index for p in report.problems} == {12, None}, [str(p) for p in report.problems]
    roots = [p for p in report.problems if p.checkpoint is not None]
    assert roots and all(p.checkpoint > 12 and "entry 12 is missing" in p.what for p in roots), roots
    assert report.entries == 39


@pytest.mark.parametrize("signatures", [True, False], ids=["full", "fast"])
def test_two_swapped_entries_are_found_at_the_first(tmp_path, key, signatures):
    path = _tampered_log(tmp_path, key)
    db = _raw(path)
    a = db.execute("SELECT bundle_id, kind, recorded_at, leaf, (SELECT data FROM tail WHERE idx = 5) "
                   "FROM entries WHERE idx = 5").fetchone()
    b = db.execute("SELECT bundle_id, kind, recorded_at, leaf, (SELECT data FROM tail WHERE idx = 31) "
                   "FROM entries WHERE idx = 31").fetchone()
    db.execute("UPDATE entries SET bundle_id = 'tmp' WHERE idx = 5")
    for idx, row in ((31, a), (5, b)):
        db.execute("UPDATE entries SET bundle_id = ?, kind = ?, recorded_at = ?, leaf = ? WHERE idx = ?",
                   (*row[:4], idx))
        db.execute("UPDATE tail SET data = ? WHERE idx = ?", (row[4], idx))
    db.close()
    report = verify_log(EvidenceLog(path, create=False), signatures=signatures)
    assert report.first_bad_index == 5, report.summary()
    assert "signed seq is 31" in str(report.first_problem())


def test_entries_removed_from_the_end_are_caught_by_the_checkpoint(tmp_path, key):
    path = _tampered_log(tmp_path, key)
    db = _raw(path)
    db.execute("DELETE FROM entries WHERE idx >= 37")
    db.close()
    report = verify_log(EvidenceLog(path, create=False), signatures=False)
    assert report.first_bad_index == 37 and "the log holds 37" in report.summary()


def test_a_forged_checkpoint_is_named(tmp_path, key):
    path = _tampered_log(tmp_path, key)
    db = _raw(path)
    db.execute("DROP TRIGGER checkpoints_no_change")
    size, note = db.execute("SELECT size, note FROM checkpoints ORDER BY size LIMIT 1 OFFSET 1").fetchone()
    forged = bytes(note).replace(f"\n{size}\n".encode(), f"\n{size - 1}\n".encode())
    db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (forged, size))
    db.close()
    report = verify_log(EvidenceLog(path, create=False))
    assert any(p.checkpoint == size and "does not verify" in p.what for p in report.problems), report.summary()


# -- retention -------------------------------------------------------------------------------

def test_nothing_younger_than_the_retention_can_be_pruned(tmp_path, key):
    lg = new_log(tmp_path, key, retention_days=2192)
    old = datetime.now(timezone.utc) - timedelta(days=2200)
    fill(lg, key, 10, now=old)
    fill(lg, key, 5)  # recent
    lg.checkpoint(key)
    with pytest.raises(EvidenceError, match="younger than 2192 days"):
        lg.prune(datetime.now(timezone.utc) - timedelta(days=100))
    # Even around our own check, the database refuses to clear a young body.
    with pytest.raises(sqlite3.DatabaseError, match="retention"):
        lg._db.execute("UPDATE entries SET body = NULL, sig = NULL, seg = NULL WHERE idx = 12")
    assert lg.prune(datetime.now(timezone.utc) - timedelta(days=2192)) == 10
    assert lg.entry(3).pruned and not lg.entry(12).pruned
    report = verify_log(lg)
    assert report.ok and report.pruned == 10 and report.signatures == 5, report.summary()
    lg.close()


def test_prune_keeps_what_a_sink_has_not_received(tmp_path, key):
    lg = new_log(tmp_path, key, retention_days=1)
    fill(lg, key, 10, now=datetime.now(timezone.utc) - timedelta(days=30))
    lg.checkpoint(key)
    lg.cursor("nas", "bundle")
    lg.advance_cursor("nas", "bundle", 4)
    assert lg.prune(datetime.now(timezone.utc) - timedelta(days=2)) == 4
    assert [e.pruned for e in lg.iter_entries()] == [True] * 4 + [False] * 6
    lg.close()


def test_recorded_at_is_stamped_at_append_and_never_goes_back(log, key):
    from osiris.evidence.canonical import utc_text

    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    log.append([statement(0)], key, now=t0)
    log.append([statement(1)], key, now=t0 - timedelta(hours=1))  # the clock stepped back
    log.append([statement(2), statement(3)], key, now=t0 + timedelta(days=1))
    stamps = [e.recorded_at for e in log.iter_entries()]
    assert stamps == [utc_text(t0)] * 2 + [utc_text(t0 + timedelta(days=1))] * 2
    assert json.loads(log.entry(1).body)["recorded_at"] == stamps[1]  # what is signed
    assert log.index_range(utc_text(t0 + timedelta(hours=1)), None) == (2, 4)
    assert log.index_range(None, utc_text(t0 + timedelta(hours=1))) == (0, 2)
    assert log.index_range(utc_text(t0), utc_text(t0 + timedelta(days=1))) == (0, 2)
    assert log.index_range(utc_text(t0 + timedelta(days=2)), None) == (4, 4)


def test_what_is_signed_is_rfc8785_by_the_reference_library(log, key):
    """Bodies joined from parts canonicalised at build time, and bodies of
    plain statements, re-canonicalise to themselves with rfc8785."""
    from osiris.evidence.canonical import canonical_reference

    log.append([statement(i) for i in range(5)] + [dict(statement(9))], key)
    for e in log.iter_entries():
        assert canonical_reference(json.loads(e.body)) == e.body


def test_hashing_in_worker_processes_finds_the_same(tmp_path, key, monkeypatch):
    from osiris.evidence import verify as verify_mod

    monkeypatch.setattr(verify_mod, "_SPAN", 8)  # 40 entries: 5 spans over 2 processes
    path = _tampered_log(tmp_path, key)
    good = verify_log(EvidenceLog(path, create=False), signatures=False, jobs=2)
    assert good.ok and good.entries == 40 and good.roots == len(EvidenceLog(path, create=False).checkpoints())
    db = _raw(path)
    body = bytearray(_body(db, 19))
    body[body.find(b"three")] ^= 1
    _put_body(db, 19, bytes(body))
    db.execute("DELETE FROM entries WHERE idx IN (26, 27)")
    db.close()
    one = verify_log(EvidenceLog(path, create=False), signatures=False, jobs=1)
    two = verify_log(EvidenceLog(path, create=False), signatures=False, jobs=2)
    assert [str(p) for p in one.problems] == [str(p) for p in two.problems]
    assert two.first_bad_index == 19 and any(p.index == 26 and "missing" in p.what for p in two.problems)


def test_content_that_contains_a_placeholder_is_signed_as_it_is(log, key):
    from osiris.evidence.canonical import canonical_reference

    st = statement(0).replace(payload={"note": "\x00osiris-chain:seq\x00"})
    assert st.template is None  # the writer canonicalises the whole statement instead
    log.append([statement(1), st], key)
    st1 = json.loads(log.entry(1).body)
    assert st1["seq"] == 1 and st1["payload"] == {"note": "\x00osiris-chain:seq\x00"}
    assert canonical_reference(st1) == log.entry(1).body


def test_checkpoint_time_never_goes_back_after_a_clock_step(log, key):
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    log.append([statement(0)], key, now=t0)
    first = log.checkpoint(key, now=t0 + timedelta(minutes=5))
    # The clock steps back an hour: entries keep their stamps monotonic, and
    # so must checkpoints (both after the last checkpoint and the newest entry).
    log.append([statement(1)], key, now=t0 - timedelta(hours=1))
    second = log.checkpoint(key, now=t0 - timedelta(hours=1))
    assert second.time == first.time == "2024-05-01T12:05:00.000000Z"
    log.append([statement(2)], key, now=t0 + timedelta(minutes=10))
    third = log.checkpoint(key, now=t0 - timedelta(hours=2))
    assert third.time == log.entry(2).recorded_at == "2024-05-01T12:10:00.000000Z"
    report = verify_log(log)
    assert report.ok, report.summary()


def test_reopening_with_a_shorter_retention_still_cannot_prune(tmp_path, key):
    lg = new_log(tmp_path, key, retention_days=2192)
    fill(lg, key, 10, now=datetime.now(timezone.utc) - timedelta(days=100))
    lg.checkpoint(key)
    lg.close()
    lg = new_log(tmp_path, key, retention_days=1)  # a config asking for one day
    assert lg.meta["retention_days"] == "2192" and lg.retention.days == 2192
    with pytest.raises(EvidenceError, match="younger than 2192 days"):
        lg.prune(datetime.now(timezone.utc) - timedelta(days=2))
    with pytest.raises(sqlite3.DatabaseError, match="retention"):  # nor around our own check
        lg._db.execute("UPDATE entries SET body = NULL, sig = NULL, seg = NULL WHERE idx = 3")
    assert not any(e.pruned for e in lg.iter_entries())
    lg.close()
    lg = new_log(tmp_path, key, retention_days=3000)  # longer is kept
    assert lg.retention.days == 3000
    lg.close()
    assert new_log(tmp_path, key, retention_days=2192).retention.days == 3000


def test_settings_refuse_less_than_six_years_unless_a_lab_says_so():
    from pydantic import ValidationError

    from osiris.evidence.settings import EvidenceSettings

    with pytest.raises(ValidationError, match=r"retention_days\n.*at least 2192 days, the six years.*got 1; "
                                               r"a lab may set evidence.allow_short_retention_for_lab: true"):
        EvidenceSettings(retention_days=1)
    assert EvidenceSettings().retention_days == 2192
    assert EvidenceSettings(retention_days=1, allow_short_retention_for_lab=True).retention_days == 1


def test_checkpoint_signatures_checked_in_worker_processes_find_the_same(tmp_path, key, monkeypatch):
    from osiris.evidence import verify as verify_mod

    monkeypatch.setattr(verify_mod, "_NOTES_PER_JOB", 2)  # 4 checkpoints: 2 parts over 2 processes
    path = _tampered_log(tmp_path, key)
    db = _raw(path)
    db.execute("DROP TRIGGER checkpoints_no_change")
    size, note = db.execute("SELECT size, note FROM checkpoints ORDER BY size LIMIT 1 OFFSET 2").fetchone()
    db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (bytes(note).replace(b"time 2", b"time 1"), size))
    db.close()
    one = verify_log(EvidenceLog(path, create=False), signatures=False, jobs=1)
    two = verify_log(EvidenceLog(path, create=False), signatures=False, jobs=2)
    assert [str(p) for p in one.problems] == [str(p) for p in two.problems]
    assert any(p.checkpoint == size and "does not verify" in p.what for p in two.problems), two.summary()


def test_served_consistency_proofs_are_sampled_on_a_large_log_and_the_newest_always(tmp_path, key, monkeypatch):
    from osiris.evidence import verify as verify_mod

    monkeypatch.setattr(verify_mod, "_SERVED_PROOFS", 2)
    lg = new_log(tmp_path, key)
    fill(lg, key, 40, batch=2, checkpoint_every=2)  # 20 checkpoints
    report = verify_log(lg)
    assert report.ok and report.consistency == 4, report.summary()  # 2 spread + the newest 2
    lg.close()
    db = _raw(lg.path)
    db.execute("DROP TRIGGER nodes_no_change")
    db.execute("UPDATE nodes SET hash = zeroblob(32) WHERE level = 1 AND idx = 18")  # under the newest pair
    db.close()
    report = verify_log(EvidenceLog(lg.path, create=False))
    assert any("no valid consistency proof" in p.what for p in report.problems), report.summary()
