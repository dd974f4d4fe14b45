"""Storage for six years: bodies and signatures packed into compressed
segments (the signed bytes unchanged), a log from before segments migrated,
tampering inside a segment named at its entry, pruning that keeps proofs,
archiving before pruning."""

import json
import sqlite3
import zipfile
from datetime import datetime, timedelta, timezone

import pytest

from osiris import sqlitedb
from osiris.evidence import log as log_mod
from osiris.evidence.export import export
from osiris.evidence.keys import SigningKey
from osiris.evidence.log import EvidenceLog
from osiris.evidence.verify import verify_entry_in_log, verify_log

from .helpers import ORIGIN, fill, new_log, statement


@pytest.fixture
def key():
    return SigningKey.generate()


@pytest.fixture
def small_segments(monkeypatch):
    monkeypatch.setattr(log_mod, "SEGMENT_ENTRIES", 8)


def both(tmp_path, key, n, *, batch=7, checkpoint_every=10):
    """The same statements, appended alike, in a packed log and in one with
    a row per body (the layout before segments)."""
    packed = new_log(tmp_path / "packed", key)
    inline = new_log(tmp_path / "inline", key, pack=False)
    now = datetime(2024, 5, 1, tzinfo=timezone.utc)
    sts = [statement(i) for i in range(n)]
    for lg in (packed, inline):
        for j in range(0, n, batch):
            lg.append(sts[j:j + batch], key, now=now)
            if (j + batch) % checkpoint_every < batch:
                lg.checkpoint(key, now=now)
        lg.checkpoint(key, now=now)
    return packed, inline


def test_packed_bodies_are_the_signed_bytes_and_verify(tmp_path, key, small_segments):
    packed, inline = both(tmp_path, key, 60, checkpoint_every=10)
    st = packed.storage()
    assert st["segments"] >= 5 and st["packed_entries"] >= 40 and st["inline_entries"] < 8 + 7
    assert inline.storage()["segments"] == 0 and inline.storage()["inline_entries"] == 60
    for a, b in zip(packed.iter_entries(), inline.iter_entries()):
        assert (a.index, a.bundle_id, a.leaf) == (b.index, b.bundle_id, b.leaf)
        assert packed.verify_key.verify(a.sig, a.body) and a.leaf == b.leaf
    assert packed.entry(17).body == bytes(packed.entry(17).body) and json.loads(packed.entry(17).body)["seq"] == 17
    for signatures in (True, False):
        report = verify_log(packed, signatures=signatures, jobs=2)
        assert report.ok and report.entries == 60, report.summary()
    assert verify_entry_in_log(packed, "17")["index"] == 17
    out = export(packed, tmp_path / "a.zip", 3, 40)
    assert zipfile.ZipFile(out.path).read("bundles/000000000017.json") == inline.entry(17).body


def test_packing_makes_the_log_smaller(tmp_path, key):
    packed, inline = both(tmp_path, key, 3000, batch=64, checkpoint_every=300)
    a, b = packed.storage(), inline.storage()
    assert a["segments"] > 0 and a["inline_entries"] < log_mod.SEGMENT_ENTRIES
    assert a["file_bytes"] * 2 < b["file_bytes"], (a, b)  # small bundles: rows and tree nodes are much of it


@pytest.mark.parametrize("signatures", [True, False], ids=["full", "fast"])
def test_a_flipped_byte_in_a_segment_is_named_at_its_entry(tmp_path, key, small_segments, signatures):
    import zstandard

    lg = new_log(tmp_path, key)
    fill(lg, key, 40, checkpoint_every=10)
    lg.checkpoint(key)
    seg, first, count = lg._db.execute("SELECT id, first, count FROM segments ORDER BY id LIMIT 1 OFFSET 2").fetchone()
    target, off = lg._db.execute("SELECT idx, seg_off FROM entries WHERE seg = ? ORDER BY idx LIMIT 1 OFFSET 3",
                                 (seg,)).fetchone()
    path = lg.path
    lg.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TRIGGER segments_no_change")
    raw = bytearray(zstandard.ZstdDecompressor().decompress(
        db.execute("SELECT data FROM segments WHERE id = ?", (seg,)).fetchone()[0]))
    raw[raw.find(b"three", off + 64)] ^= 0x01  # in the body of the segment's fourth entry
    db.execute("UPDATE segments SET data = ? WHERE id = ?", (zstandard.ZstdCompressor().compress(bytes(raw)), seg))
    db.close()
    report = verify_log(EvidenceLog(path, create=False), signatures=signatures)
    assert not report.ok and report.first_bad_index == target == first + 3, report.summary()

    db = sqlite3.connect(path, isolation_level=None)  # a segment that no longer decompresses
    db.execute("UPDATE segments SET data = substr(data, 1, 20) WHERE id = ?", (seg,))
    db.close()
    report = verify_log(EvidenceLog(path, create=False), signatures=signatures)
    assert report.first_bad_index == first and "content unreadable" in str(report.first_problem())


def test_a_deleted_segment_is_named_and_cannot_be_deleted_by_mistake(tmp_path, key, small_segments):
    lg = new_log(tmp_path, key)
    fill(lg, key, 30, checkpoint_every=10)
    lg.checkpoint(key)
    seg, first = lg._db.execute("SELECT id, first FROM segments ORDER BY id LIMIT 1 OFFSET 1").fetchone()
    with pytest.raises(sqlite3.DatabaseError, match="still holds bodies"):
        lg._db.execute("DELETE FROM segments WHERE id = ?", (seg,))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):  # nor moved to another segment
        lg._db.execute("UPDATE entries SET seg = seg + 1 WHERE idx = ?", (first,))
    with pytest.raises(sqlite3.DatabaseError, match="retention"):  # nor cleared while young
        lg._db.execute("UPDATE entries SET seg = NULL, seg_off = NULL, seg_len = NULL WHERE idx = ?", (first,))
    path = lg.path
    lg.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TRIGGER segments_no_delete")
    db.execute("DELETE FROM segments WHERE id = ?", (seg,))
    db.close()
    report = verify_log(EvidenceLog(path, create=False))
    assert report.first_bad_index == first and "content unreadable: the segment" in str(report.first_problem())


def _v2_copy(src: EvidenceLog, dest):
    """The same log in the layout before segments: schema 2, as an agent
    of that version wrote it."""
    db = sqlite3.connect(dest, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    import threading

    sqlitedb.migrate(db, threading.RLock(), log_mod._MIGRATIONS[:2], too_new=RuntimeError, failed=RuntimeError)
    old = sqlite3.connect(src.path)
    db.execute("BEGIN")
    db.executemany("INSERT INTO meta VALUES (?, ?)", old.execute("SELECT key, value FROM meta"))
    db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                   old.execute("SELECT idx, bundle_id, kind, recorded_at, body, sig, leaf FROM entries"))
    db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", old.execute("SELECT level, idx, hash FROM nodes"))
    db.executemany("INSERT INTO checkpoints VALUES (?, ?, ?, ?)",
                   old.execute("SELECT size, root, created_at, note FROM checkpoints"))
    db.execute("COMMIT")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()


def test_a_log_from_before_segments_is_migrated_and_packed(tmp_path, key, small_segments):
    inline = new_log(tmp_path / "inline", key, pack=False)
    fill(inline, key, 100, checkpoint_every=10)
    inline.checkpoint(key)
    path = tmp_path / "v2" / "log.sqlite3"
    path.parent.mkdir()
    _v2_copy(inline, path)
    before = path.stat().st_size
    lg = EvidenceLog(path, create=False)  # migration 3
    assert lg.storage()["segments"] == 0 and verify_log(lg).ok
    fill(lg, key, 1)  # every append packs a few segments of the old rows
    assert lg.storage()["segments"] == log_mod.PACK_PER_APPEND
    made = lg.compact()
    st = lg.storage()
    assert made > 0 and st["inline_entries"] == 0 and st["packed_entries"] == 101
    assert [e.body for e in lg.iter_entries(0, 100)] == [e.body for e in inline.iter_entries()]
    report = verify_log(lg)
    assert report.ok and report.entries == 101, report.summary()
    assert st["file_bytes"] < before
    lg.close()


def test_pruning_packed_entries_drops_their_segments_and_keeps_the_proofs(tmp_path, key, small_segments):
    lg = new_log(tmp_path, key, retention_days=2192)
    old = datetime.now(timezone.utc) - timedelta(days=2200)
    fill(lg, key, 30, now=old, checkpoint_every=10)
    fill(lg, key, 10, checkpoint_every=10)
    lg.checkpoint(key)
    segs = lg.storage()["segments"]
    assert lg.prune(datetime.now(timezone.utc) - timedelta(days=2192)) == 30
    assert lg.storage()["segments"] < segs and lg.entry(5).pruned and not lg.entry(35).pruned
    report = verify_log(lg)
    assert report.ok and report.pruned == 30, report.summary()
    assert lg.inclusion_proof(5, 40)  # the tree (and every proof) is intact
    lg.close()


def test_prune_archives_the_range_first(tmp_path, key, write_config):
    """`osiris evidence prune --archive DIR` writes the range as an export
    (with verify.py) before clearing it; with no sink and no archive it
    refuses: nothing would hold those bundles any more."""
    from click.testing import CliRunner

    from osiris.cli import cli
    from osiris.evidence.keys import load_or_create

    cfg = write_config({"evidence": {"retention_days": 1, "allow_short_retention_for_lab": True}})
    state = tmp_path / "state"
    k = load_or_create(state / "keys")
    lg = EvidenceLog(state / "evidence" / "log.sqlite3", origin=ORIGIN, verify_key=k.verify_key, retention_days=1)
    fill(lg, k, 12, now=datetime.now(timezone.utc) - timedelta(days=10), checkpoint_every=4)
    fill(lg, k, 3)
    lg.checkpoint(k)
    lg.close()
    r = CliRunner()
    cut = (datetime.now(timezone.utc) - timedelta(days=5)).date().isoformat()
    refused = r.invoke(cli, ["-c", str(cfg), "evidence", "prune", "--before", cut, "--yes"])
    assert refused.exit_code == 1 and "no sink has received these bundles" in refused.output, refused.output
    arch = tmp_path / "archive"
    arch.mkdir()
    done = r.invoke(cli, ["-c", str(cfg), "evidence", "prune", "--before", cut, "--yes", "--archive", str(arch)])
    assert done.exit_code == 0 and "pruned 12 bundle bodies" in done.output, done.output
    [zipped] = arch.glob("*.zip")
    assert zipped.name.startswith("evidence-0-12")
    d = tmp_path / "unpacked"
    with zipfile.ZipFile(zipped) as z:
        z.extractall(d)
    from .test_standalone import auditor

    run = auditor(d)
    assert run.returncode == 0 and "bundles [0, 12)" in run.stdout, run.stdout + run.stderr
    ok = r.invoke(cli, ["-c", str(cfg), "evidence", "verify"])
    assert ok.exit_code == 0 and "12 pruned" in ok.output, ok.output


def test_segments_written_with_zlib_are_still_read(tmp_path, key, small_segments, monkeypatch):
    import zlib

    lg = new_log(tmp_path, key)
    codec, compress = log_mod._CODEC, log_mod._compress
    monkeypatch.setattr(log_mod, "_CODEC", "zlib")  # as the first version of segments wrote them
    monkeypatch.setattr(log_mod, "_compress", lambda data: zlib.compress(data, 6))
    fill(lg, key, 20, checkpoint_every=10)
    lg.checkpoint(key)
    monkeypatch.setattr(log_mod, "_CODEC", codec)
    monkeypatch.setattr(log_mod, "_compress", compress)
    lg.close()
    lg = EvidenceLog(lg.path, create=False)
    assert {c for (c,) in lg._db.execute("SELECT DISTINCT codec FROM segments")} == {"zlib"}
    fill(lg, key, 20)  # new segments are zstd, beside the old
    lg.checkpoint(key)
    assert {c for (c,) in lg._db.execute("SELECT DISTINCT codec FROM segments")} == {"zlib", "zstd"}
    assert verify_log(lg).ok and json.loads(lg.entry(3).body)["seq"] == 3
    lg.close()
