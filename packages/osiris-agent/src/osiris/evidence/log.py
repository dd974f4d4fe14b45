"""The evidence log: an append-only, hash-chained Merkle log in one SQLite file.

Storage is SQLite (``<state_dir>/evidence/log.sqlite3``, WAL mode,
``synchronous=FULL``), separate from the state database so that its
durability setting and its writer do not slow the engine's writes:

* ``entries``: one row per bundle, ``idx`` from 0. ``body`` holds the exact
  RFC 8785 bytes that were signed, ``sig`` the Ed25519 signature over them,
  ``leaf`` = SHA-256(0x00 || body). ``body`` and ``sig`` are cleared (and
  only they, and only for entries older than the retention period) by
  pruning; the leaf stays, so the tree still verifies.
* ``nodes``: the hash of every complete perfect subtree (level >= 1), written
  in the same transaction as the entries that complete it, so an inclusion
  or consistency proof costs O(log n) lookups.
* ``checkpoints``: signed C2SP checkpoints (:mod:`.note`), one per size.
* ``meta``: the log's identity and its retention period, which only ever
  grows (reopening with a shorter one keeps the longer).
* ``attestations``: proofs about checkpoints that sinks bring back (e.g. an
  OpenTimestamps proof), pending or complete.
* ``sink_cursors``: each sink's durable outbox position (:mod:`.outbox`).

Triggers make ``entries``, ``nodes`` and ``checkpoints`` append-only at the
database level (pruning may clear a body, and only past the retention
period recorded in ``meta``); they guard against our own bugs, verification
guards against everyone else.

Group commit: :meth:`EvidenceLog.append` writes a batch of bundles in one
transaction, so one WAL fsync makes all of them durable; a crash (SIGKILL,
power) leaves either the whole batch or none of it. Each bundle commits to
the previous entry's leaf hash (``prev``) and to its own index (``seq``)
inside what is signed, so entries cannot be reordered or dropped without
breaking signatures, and the Merkle tree over the leaves lets signed
checkpoints cover everything at hashing speed.

The writer re-reads the tail inside each write transaction, so two
processes appending (the agent and ``osiris evidence checkpoint``, say)
cannot fork the log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import zstandard

from .. import sqlitedb
from ..paths import EVIDENCE_LOG
from . import merkle
from .canonical import canonical, utc_text
from .errors import EvidenceError
from .keys import SigningKey, VerifyKey
from .note import Checkpoint, checkpoint_text, parse_checkpoint, sign_note

__all__ = ["EvidenceLog", "Entry", "Appended", "FORMAT", "LOG_NAME", "ZERO_HASH"]

_log = logging.getLogger(__name__)

FORMAT = "osiris-evidence-log/1"
LOG_NAME = EVIDENCE_LOG
ZERO_HASH = bytes(32)

_MIGRATIONS = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE entries (
        idx INTEGER PRIMARY KEY CHECK (idx >= 0),
        bundle_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        body BLOB,
        sig BLOB,
        leaf BLOB NOT NULL CHECK (length(leaf) = 32),
        CHECK ((body IS NULL) = (sig IS NULL))
    );
    CREATE INDEX entries_recorded_at ON entries (recorded_at);
    CREATE TABLE nodes (
        level INTEGER NOT NULL CHECK (level >= 1),
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID;
    CREATE TABLE checkpoints (
        size INTEGER PRIMARY KEY CHECK (size > 0),
        root BLOB NOT NULL,
        created_at TEXT NOT NULL,
        note BLOB NOT NULL
    );
    CREATE TABLE attestations (
        size INTEGER NOT NULL REFERENCES checkpoints (size),
        kind TEXT NOT NULL,
        complete INTEGER NOT NULL DEFAULT 0,
        data BLOB NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        updated_at TEXT NOT NULL,
        PRIMARY KEY (size, kind)
    );
    CREATE TABLE sink_cursors (
        sink TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('bundle', 'checkpoint')),
        delivered INTEGER NOT NULL DEFAULT 0,
        delivered_total INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        last_delivery_at TEXT,
        PRIMARY KEY (sink, kind)
    );
    CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'the evidence log is append-only'); END;
    CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
    WHEN NEW.idx IS NOT OLD.idx OR NEW.bundle_id IS NOT OLD.bundle_id OR NEW.kind IS NOT OLD.kind
         OR NEW.recorded_at IS NOT OLD.recorded_at OR NEW.leaf IS NOT OLD.leaf
         OR NEW.body IS NOT NULL OR NEW.sig IS NOT NULL
    BEGIN SELECT RAISE(ABORT, 'the evidence log is append-only (pruning may only clear a body)'); END;
    CREATE TRIGGER entries_retention BEFORE UPDATE OF body ON entries
    WHEN NEW.body IS NULL AND OLD.body IS NOT NULL AND OLD.recorded_at >
         strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || (SELECT value FROM meta WHERE key = 'retention_days') || ' days')
    BEGIN SELECT RAISE(ABORT, 'retention: entries younger than the retention period cannot be pruned'); END;
    CREATE TRIGGER nodes_no_change BEFORE UPDATE ON nodes
    BEGIN SELECT RAISE(ABORT, 'tree nodes are append-only'); END;
    CREATE TRIGGER nodes_no_delete BEFORE DELETE ON nodes
    BEGIN SELECT RAISE(ABORT, 'tree nodes are append-only'); END;
    CREATE TRIGGER checkpoints_no_change BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
    CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
    """,
    # 2: recorded_at is stamped by the log at append time and never goes
    # backwards, so a time range is a binary search over idx: one index
    # less to maintain on every append.
    """
    DROP INDEX IF EXISTS entries_recorded_at;
    """,
    # 3: bodies are packed into compressed segments (docs/evidence.md,
    # "Storage"): an entry's signature and signed bytes are appended to
    # ``tail`` (seg 0) and move, unchanged, into a segment (seg, seg_off,
    # seg_len say where) once a segment's worth has gathered, so entry rows
    # stay small. Existing logs keep their inline bodies until they are
    # packed (a few segments with every append, or all at once with
    # `osiris evidence compact`).
    """
    ALTER TABLE entries ADD COLUMN seg INTEGER;
    ALTER TABLE entries ADD COLUMN seg_off INTEGER;
    ALTER TABLE entries ADD COLUMN seg_len INTEGER;
    CREATE TABLE tail (
        idx INTEGER PRIMARY KEY,
        data BLOB NOT NULL
    );
    CREATE TRIGGER tail_no_change BEFORE UPDATE ON tail
    BEGIN SELECT RAISE(ABORT, 'the evidence log is append-only'); END;
    CREATE TRIGGER tail_no_delete BEFORE DELETE ON tail
    WHEN (SELECT seg FROM entries WHERE idx = OLD.idx) = 0
    BEGIN SELECT RAISE(ABORT, 'a body leaves the tail only into a segment'); END;
    CREATE TABLE segments (
        id INTEGER PRIMARY KEY CHECK (id > 0),
        first INTEGER NOT NULL,
        count INTEGER NOT NULL CHECK (count > 0),
        raw INTEGER NOT NULL,
        codec TEXT NOT NULL,
        data BLOB NOT NULL
    );
    DROP TRIGGER entries_no_update;
    CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
    WHEN NEW.idx IS NOT OLD.idx OR NEW.bundle_id IS NOT OLD.bundle_id OR NEW.kind IS NOT OLD.kind
         OR NEW.recorded_at IS NOT OLD.recorded_at OR NEW.leaf IS NOT OLD.leaf
         OR NEW.body IS NOT NULL OR NEW.sig IS NOT NULL
         OR (NEW.seg IS NOT NULL AND OLD.seg IS NULL AND OLD.body IS NULL)
         OR (NEW.seg IS NOT NULL AND OLD.seg IS NOT NULL AND OLD.seg != 0 AND (NEW.seg IS NOT OLD.seg
             OR NEW.seg_off IS NOT OLD.seg_off OR NEW.seg_len IS NOT OLD.seg_len))
         OR NEW.seg = 0 AND OLD.seg IS NOT 0
         OR (NEW.seg IS NULL AND (NEW.seg_off IS NOT NULL OR NEW.seg_len IS NOT NULL))
    BEGIN SELECT RAISE(ABORT, 'the evidence log is append-only (packing may move a body into a segment, pruning may clear it)'); END;
    DROP TRIGGER entries_retention;
    CREATE TRIGGER entries_retention BEFORE UPDATE ON entries
    WHEN NEW.body IS NULL AND NEW.seg IS NULL AND (OLD.body IS NOT NULL OR OLD.seg IS NOT NULL) AND OLD.recorded_at >
         strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || (SELECT value FROM meta WHERE key = 'retention_days') || ' days')
    BEGIN SELECT RAISE(ABORT, 'retention: entries younger than the retention period cannot be pruned'); END;
    CREATE TRIGGER segments_no_change BEFORE UPDATE ON segments
    BEGIN SELECT RAISE(ABORT, 'segments are append-only'); END;
    CREATE TRIGGER segments_no_delete BEFORE DELETE ON segments
    WHEN EXISTS (SELECT 1 FROM entries WHERE idx >= OLD.first AND idx < OLD.first + OLD.count AND seg = OLD.id)
    BEGIN SELECT RAISE(ABORT, 'a segment still holds bodies (prune them first)'); END;
    """,
]

#: A segment holds the signatures and bodies of consecutive entries, up to
#: this many raw bytes or entries, compressed as one Zstandard frame: bundles of
#: neighbouring sweeps repeat each other's policy and facts, which one
#: stream compresses away and a row per bundle cannot.
SEGMENT_BYTES = 1 << 20
SEGMENT_ENTRIES = 512
#: Segments packed at most per append: a log written before segments
#: existed is packed a little with every group commit (``compact`` packs it
#: all at once).
PACK_PER_APPEND = 4
#: How new segments are compressed: Zstandard at level 3 (about 16 x on
#: sweep bundles, and it decompresses at gigabytes a second: zlib at level
#: 6 compressed them 12 x and decompressing was most of verifying a year).
#: Segments record their codec; "zlib" ones are still read.
_CODEC = "zstd"
_ZSTD_LEVEL = 3


def _compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(data)


def _decompress(codec: str, data: bytes) -> bytes | None:
    try:
        if codec == "zstd":
            return zstandard.ZstdDecompressor().decompress(data)
        if codec == "zlib":
            return zlib.decompress(data)
    except (zstandard.ZstdError, zlib.error):
        return None
    return None
#: What a body and signature read back as when their segment is missing or
#: damaged: empty, so the leaf and signature checks fail at that entry
#: (None would mean "pruned", which verification must not be fooled into).
DAMAGED = b""


@dataclass(frozen=True)
class Entry:
    index: int
    bundle_id: str
    kind: str
    recorded_at: str
    body: bytes | None  # None once pruned
    sig: bytes | None
    leaf: bytes

    @property
    def pruned(self) -> bool:
        return self.body is None


@dataclass(frozen=True)
class Appended:
    index: int
    bundle_id: str
    leaf: bytes


def _now() -> datetime:
    return datetime.now(timezone.utc)


class EvidenceLog:
    """One evidence log file. Methods are thread-safe (one connection, one
    lock); the agent calls them from a single writer thread."""

    def __init__(self, path: Path | str, *, origin: str | None = None, verify_key: VerifyKey | None = None,
                 retention_days: int | None = None, create: bool = True, pack: bool = True):
        self.path = Path(path)
        #: Pack bodies into segments as the log grows (False: the layout of
        #: a log before segments, one row per body: what bench/evidence-growth
        #: compares with).
        self.pack = pack
        if not self.path.exists():
            if not create:
                raise EvidenceError(f"{self.path}: no evidence log here (has the agent recorded anything yet?)")
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise EvidenceError(f"{self.path.parent}: cannot create the evidence directory: {exc.strerror}") from None
        old = os.umask(0o077)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so an appended batch
            # survives power loss; one commit per batch is the group commit.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA journal_size_limit=8388608")  # the WAL does not keep its largest size
            self._db.execute("PRAGMA foreign_keys=ON")
            # Appends touch the right edge of each B-tree and reads go through
            # the mmap below: a small page cache does. 32 MiB filled as the log
            # grew and was most of the agent's RSS rise (bench/soak); appends
            # measured the same with 2, 4 and 32 MiB.
            self._db.execute("PRAGMA cache_size=-4096")
            self._db.execute("PRAGMA mmap_size=4294967296")  # reads (verification) without copying pages
        except sqlite3.DatabaseError as exc:
            raise EvidenceError(f"{self.path}: not a usable evidence log: {exc}") from None
        finally:
            os.umask(old)
        self._lock = threading.RLock()
        self._seg_cache: tuple[int | None, bytes | None] = (None, None)
        self._migrate()
        self.meta = self._init_meta(origin, verify_key, retention_days)
        self.origin: str = self.meta["origin"]
        self.verify_key = VerifyKey.from_raw(bytes.fromhex(self.meta["public_key"]))

    # -- schema and identity -------------------------------------------------------

    def _migrate(self) -> None:
        sqlitedb.migrate(
            self._db, self._lock, _MIGRATIONS,
            too_new=lambda current: EvidenceError(
                f"{self.path}: evidence log schema {current} is newer than this agent knows "
                f"({len(_MIGRATIONS)}); refusing to touch it"),
            failed=lambda version, exc: EvidenceError(f"{self.path}: evidence log migration {version} failed: {exc}"),
        )

    def _init_meta(self, origin: str | None, verify_key: VerifyKey | None,
                   retention_days: int | None) -> dict[str, str]:
        with self._tx():
            meta = {k: v for k, v in self._db.execute("SELECT key, value FROM meta")}
            if not meta:
                if origin is None or verify_key is None:
                    raise EvidenceError(f"{self.path}: empty evidence log and no origin/key to start it with")
                meta = {
                    "format": FORMAT,
                    "origin": origin,
                    "public_key": verify_key.raw.hex(),
                    "key_id": verify_key.key_id(origin).hex(),
                    "created_at": utc_text(_now()),
                    "retention_days": str(retention_days or 2192),
                }
                self._db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
                return meta
            if meta.get("format") != FORMAT:
                raise EvidenceError(f"{self.path}: format {meta.get('format')!r}, expected {FORMAT!r}")
            if verify_key is not None and verify_key.raw.hex() != meta["public_key"]:
                raise EvidenceError(
                    f"{self.path}: this log was signed by the key with fingerprint "
                    f"{hashlib.sha256(bytes.fromhex(meta['public_key'])).hexdigest()[:16]}..., not by the "
                    f"appliance's key ({verify_key.fingerprint[:16]}...). Refusing to append with another key."
                )
            # The retention recorded in the log only ever grows: a config
            # that asks for less later (a typo, a lab setting copied to a
            # clinic) cannot make younger entries prunable.
            stored = int(meta.get("retention_days") or 0)
            if retention_days is not None and retention_days > stored:
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('retention_days', ?)",
                                 (str(retention_days),))
                meta["retention_days"] = str(retention_days)
            elif retention_days is not None and retention_days < stored:
                _log.warning("evidence log %s: keeping its retention of %d days; the %d days configured now "
                             "would let younger entries be pruned (the retention of a log never shrinks)",
                             self.path, stored, retention_days)
            return meta

    @property
    def retention(self) -> timedelta:
        return timedelta(days=int(self.meta["retention_days"]))

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlitedb.transaction(self._db, self._lock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reading -------------------------------------------------------------------------

    def size(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT max(idx) FROM entries").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def _entry(self, row: Sequence[Any]) -> Entry:
        idx, bundle_id, kind, recorded_at, body, sig, leaf = self._resolve([row])[0]
        return Entry(int(idx), bundle_id, kind, recorded_at, None if body is None else bytes(body),
                     None if sig is None else bytes(sig), bytes(leaf))

    _COLS = "idx, bundle_id, kind, recorded_at, body, sig, leaf, seg, seg_off, seg_len"

    def _resolve(self, rows: list[tuple]) -> list[tuple]:
        """(idx, bundle_id, kind, recorded_at, body, sig, leaf) rows, packed
        bodies and signatures read from their segments."""
        return _resolve(rows, self._segment, self._tail)

    def _tail(self, first: int, last: int) -> dict[int, bytes]:
        with self._lock:
            return _load_tail(self._db, first, last)

    def _segment(self, seg: int) -> bytes | None:
        """A segment's decompressed bytes (the last one read is kept)."""
        with self._lock:
            if self._seg_cache[0] != seg:
                self._seg_cache = (seg, _load_segment(self._db, seg))
            return self._seg_cache[1]

    def entry(self, index: int) -> Entry:
        with self._lock:
            row = self._db.execute(f"SELECT {self._COLS} FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise EvidenceError(f"{self.path}: no entry {index} (the log has {self.size()})")
        return self._entry(row)

    def find(self, ref: str) -> Entry:
        """An entry by index (digits) or bundle id (or an unambiguous prefix of 8+ characters)."""
        ref = ref.strip()
        if ref.isdigit():
            return self.entry(int(ref))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._COLS} FROM entries WHERE bundle_id = ?", (ref,)
            ).fetchall()
            if not rows and len(ref) >= 8:
                rows = self._db.execute(
                    f"SELECT {self._COLS} FROM entries WHERE bundle_id >= ? AND bundle_id < ? LIMIT 2",
                    (ref, ref + "\uffff"),
                ).fetchall()
        if not rows:
            raise EvidenceError(f"no bundle {ref!r} in {self.path}")
        if len(rows) > 1:
            raise EvidenceError(f"bundle id prefix {ref!r} is ambiguous; give more characters")
        return self._entry(rows[0])

    def iter_entries(self, start: int = 0, end: int | None = None, *, batch: int = 4096) -> Iterator[Entry]:
        """Entries in index order, read in batches (what verification streams)."""
        for rows in self.chunks(start, self.size() if end is None else end, _FULL, size=batch):
            for idx, bundle_id, kind, recorded_at, body, sig, leaf in rows:
                yield Entry(int(idx), bundle_id, kind, recorded_at, None if body is None else bytes(body),
                            None if sig is None else bytes(sig), bytes(leaf))

    def chunks(self, start: int, end: int, cols: str, size: int = 16384) -> Iterator[list[tuple]]:
        """Rows [start, end) in index order, a chunk at a time, from one
        cursor (verification reads a million entries this way: one query,
        not one per batch). ``cols``: ``"idx, bundle_id, kind, recorded_at,
        body, sig, leaf"`` or ``"idx, body, leaf"``; bodies and signatures
        come from their segments where they were packed."""
        if cols not in (_FULL, _HASHING):
            raise ValueError(f"chunks: columns {cols!r}, expected {_FULL!r} or {_HASHING!r}")
        with self._lock:
            cur = self._db.execute(
                f"SELECT {self._COLS if cols == _FULL else _HASHING_ROW} FROM entries WHERE idx >= ? AND idx < ? "
                "ORDER BY idx", (start, end))
        while True:
            with self._lock:
                rows = cur.fetchmany(size)
            if not rows:
                return
            yield self._resolve(rows) if cols == _FULL else _bodies(rows, self._segment, self._tail)

    def kind_counts(self, start: int, end: int) -> dict[str, int]:
        """How many bundles of each kind in [start, end) (the report's appendix)."""
        with self._lock:
            rows = self._db.execute("SELECT kind, count(*) FROM entries WHERE idx >= ? AND idx < ? GROUP BY kind",
                                    (start, end)).fetchall()
        return {k: int(n) for k, n in rows}

    def checkpoint_notes(self) -> list[tuple[int, bytes]]:
        """Every stored checkpoint as (size, signed note), unparsed: what
        verification checks for itself."""
        with self._lock:
            return [(int(size), bytes(note))
                    for size, note in self._db.execute("SELECT size, note FROM checkpoints ORDER BY size")]

    def _first_recorded_at_or_after(self, when: str, size: int) -> int:
        lo, hi = 0, size
        while lo < hi:
            mid = (lo + hi) // 2
            with self._lock:
                row = self._db.execute("SELECT recorded_at FROM entries WHERE idx = ?", (mid,)).fetchone()
            if row is not None and row[0] < when:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def index_range(self, since: str | None, until: str | None) -> tuple[int, int]:
        """[first, end) of the entries recorded in [since, until) (RFC 3339
        UTC text). ``recorded_at`` never decreases along the log, so this is
        a binary search."""
        size = self.size()
        lo = self._first_recorded_at_or_after(since, size) if since else 0
        hi = self._first_recorded_at_or_after(until, size) if until else size
        return (lo, max(lo, hi))

    # -- the tree --------------------------------------------------------------------------

    def node(self, level: int, index: int) -> bytes:
        with self._lock:
            if level == 0:
                row = self._db.execute("SELECT leaf FROM entries WHERE idx = ?", (index,)).fetchone()
            else:
                row = self._db.execute("SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index)).fetchone()
        if row is None:
            raise EvidenceError(f"{self.path}: tree node ({level}, {index}) is missing")
        return bytes(row[0])

    def _frontier(self, size: int) -> list[tuple[int, bytes]]:
        out, offset = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                out.append((level, self.node(level, offset >> level)))
                offset += 1 << level
        return out

    def root(self, size: int | None = None) -> bytes:
        size = self.size() if size is None else size
        return merkle.root(size, self.node)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(index, size, self.node)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        return merkle.consistency_proof(first, second, self.node)

    # -- appending -------------------------------------------------------------------------

    def append(self, statements: Sequence[Mapping[str, Any]], key: SigningKey, *,
               now: datetime | None = None) -> list[Appended]:
        """Append a batch in one transaction (one fsync). Each statement is a
        bundle without its chain members: ``seq``, ``prev`` and ``log`` are
        added here, and ``recorded_at`` is set to the time of appending (never
        earlier than the previous entry's, whatever the clock does); then it
        is canonicalised and signed."""
        if not statements:
            return []
        if key.verify_key.raw != self.verify_key.raw:
            raise EvidenceError(f"{self.path}: refusing to append with a key that is not this log's")
        sha256 = hashlib.sha256
        node_hash = merkle.node_hash
        stamp = utc_text(now or _now())
        with self._tx() as db:
            row = db.execute("SELECT idx, leaf, recorded_at FROM entries ORDER BY idx DESC LIMIT 1").fetchone()
            size, prev = (0, ZERO_HASH) if row is None else (int(row[0]) + 1, bytes(row[1]))
            if row is not None and row[2] > stamp:
                stamp = row[2]  # the clock went back: keep recorded_at monotonic
            stack = self._frontier(size)
            rows, node_rows, out, tail = [], [], [], []
            stamp_part, origin_part = canonical(stamp), canonical(self.origin)
            for st in statements:
                bundle_id, kind = st.get("id"), st.get("kind")
                if not isinstance(bundle_id, str) or not isinstance(kind, str):
                    raise EvidenceError("bundle statement lacks a string 'id' or 'kind'")
                if getattr(st, "template", None) is not None:  # canonicalised when built
                    body = st.fill(recorded_at=stamp_part, seq=b"%d" % size,
                                   prev=b'"' + prev.hex().encode() + b'"', log=origin_part)
                else:
                    body = canonical({**st, "recorded_at": stamp, "seq": size, "prev": prev.hex(), "log": self.origin})
                sig = key.sign(body)
                leaf = sha256(b"\x00" + body).digest()
                rows.append((size, bundle_id, kind, stamp, body, sig, leaf) if not self.pack else
                            (size, bundle_id, kind, stamp, leaf))
                if self.pack:
                    tail.append((size, sig + body))
                out.append(Appended(size, bundle_id, leaf))
                size += 1
                stack.append((0, leaf))
                n, level = size, 0
                while not n & 1:
                    _, right = stack.pop()
                    _, left = stack.pop()
                    level += 1
                    h = node_hash(left, right)
                    stack.append((level, h))
                    node_rows.append((level, (size >> level) - 1, h))
                    n >>= 1
                prev = leaf
            if self.pack:
                db.executemany("INSERT INTO entries (idx, bundle_id, kind, recorded_at, leaf, seg) "
                               "VALUES (?, ?, ?, ?, ?, 0)", rows)
                db.executemany("INSERT INTO tail (idx, data) VALUES (?, ?)", tail)
            else:
                db.executemany("INSERT INTO entries (idx, bundle_id, kind, recorded_at, body, sig, leaf) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", node_rows)
            if self.pack:
                self._pack(db, limit=PACK_PER_APPEND)
        return out

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint(self, key: SigningKey, now: datetime | None = None, *, force: bool = False) -> Checkpoint | None:
        """Sign a checkpoint of the current tree if it grew since the last
        one (or always with ``force``, if the log is not empty). Before
        signing, the new root is proven consistent with the last checkpoint:
        a log must never sign two inconsistent checkpoints. The time it
        carries is never earlier than the last checkpoint's or the newest
        entry's ``recorded_at`` (a clock stepped back must not make an intact
        log fail verification)."""
        now = now or _now()
        with self._tx() as db:
            size = self.size()
            last = self._latest_checkpoint()
            if size == 0 or (last is not None and last.size == size):
                return last if force else None
            stamp = utc_text(now)
            newest = db.execute("SELECT recorded_at FROM entries ORDER BY idx DESC LIMIT 1").fetchone()[0]
            stamp = max(stamp, newest, (last.time or "") if last is not None else "")
            root = merkle.root(size, self.node)
            if last is not None:
                proof = merkle.consistency_proof(last.size, size, self.node)
                if not merkle.verify_consistency(last.size, size, last.root, root, proof):
                    raise EvidenceError(
                        f"{self.path}: the tree at size {size} is not consistent with checkpoint {last.size}; "
                        "refusing to sign (run `osiris evidence verify`)"
                    )
            note = sign_note(checkpoint_text(self.origin, size, root, stamp), self.origin, key)
            db.execute("INSERT INTO checkpoints (size, root, created_at, note) VALUES (?, ?, ?, ?)",
                       (size, root, stamp, note))
        return parse_checkpoint(note)

    def _latest_checkpoint(self) -> Checkpoint | None:
        row = self._db.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return parse_checkpoint(bytes(row[0])) if row else None

    def latest_checkpoint(self) -> Checkpoint | None:
        with self._lock:
            return self._latest_checkpoint()

    def checkpoints(self, since_size: int = 0, until_size: int | None = None) -> list[Checkpoint]:
        sql, args = "SELECT note FROM checkpoints WHERE size >= ?", [since_size]
        if until_size is not None:
            sql += " AND size <= ?"
            args.append(until_size)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY size", args).fetchall()
        return [parse_checkpoint(bytes(r[0])) for r in rows]

    def count_checkpoints(self, since_size: int = 0) -> int:
        """How many checkpoints of at least ``since_size`` (without reading their notes)."""
        with self._lock:
            return self._db.execute("SELECT count(*) FROM checkpoints WHERE size >= ?", (since_size,)).fetchone()[0]

    def checkpoint_at(self, size: int) -> Checkpoint | None:
        with self._lock:
            row = self._db.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
        return parse_checkpoint(bytes(row[0])) if row else None

    def checkpoint_covering(self, index: int) -> Checkpoint | None:
        """The first checkpoint that includes entry ``index``."""
        with self._lock:
            row = self._db.execute(
                "SELECT note FROM checkpoints WHERE size > ? ORDER BY size LIMIT 1", (index,)
            ).fetchone()
        return parse_checkpoint(bytes(row[0])) if row else None

    # -- attestations --------------------------------------------------------------------------

    def put_attestation(self, size: int, kind: str, data: bytes, *, complete: bool, detail: str = "") -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM checkpoints WHERE size = ?", (size,)).fetchone() is None:
                raise EvidenceError(f"no checkpoint of size {size} to attest")
            db.execute(
                """INSERT INTO attestations (size, kind, complete, data, detail, updated_at) VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (size, kind) DO UPDATE SET complete = excluded.complete, data = excluded.data,
                       detail = excluded.detail, updated_at = excluded.updated_at""",
                (size, kind, int(complete), data, detail, utc_text(_now())),
            )

    def attestations(self, kind: str | None = None, *, complete: bool | None = None,
                     sizes: tuple[int, int] | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT size, kind, complete, data, detail, updated_at FROM attestations WHERE 1=1", []
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        if complete is not None:
            sql += " AND complete = ?"
            args.append(int(complete))
        if sizes is not None:
            sql += " AND size >= ? AND size <= ?"
            args.extend(sizes)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY size, kind", args).fetchall()
        return [{"size": r[0], "kind": r[1], "complete": bool(r[2]), "data": bytes(r[3]), "detail": r[4],
                 "updated_at": r[5]} for r in rows]

    # -- sink cursors (the outbox's durable state) ----------------------------------------------

    def cursor(self, sink: str, kind: str) -> dict[str, Any]:
        """A sink's cursor, created on first use. A new bundle cursor starts
        at the first entry that still has its body: entries pruned before
        the sink was added cannot be delivered, and starting at 0 would
        stall it forever. Where it started is kept in ``meta``
        (``sink_start/<sink>``) and logged."""
        with self._tx() as db:
            new = db.execute("INSERT OR IGNORE INTO sink_cursors (sink, kind) VALUES (?, ?)",
                             (sink, kind)).rowcount
            if new and kind == "bundle":
                first = db.execute(
                    "SELECT min(idx) FROM entries WHERE body IS NOT NULL OR seg IS NOT NULL").fetchone()[0]
                if first is None:
                    first = db.execute("SELECT coalesce(max(idx) + 1, 0) FROM entries").fetchone()[0]
                if first:
                    db.execute("UPDATE sink_cursors SET delivered = ? WHERE sink = ? AND kind = ?",
                               (int(first), sink, kind))
                    note = (f"started at index {first}: entries [0, {first}) were pruned before this sink was added "
                            f"({utc_text(_now())})")
                    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"sink_start/{sink}", note))
                    _log.warning("evidence sink %s: %s", sink, note)
        with self._lock:
            row = self._db.execute(
                """SELECT delivered, delivered_total, attempts, next_attempt_at, last_error, last_delivery_at
                   FROM sink_cursors WHERE sink = ? AND kind = ?""", (sink, kind)).fetchone()
        return dict(zip(("delivered", "delivered_total", "attempts", "next_attempt_at", "last_error",
                         "last_delivery_at"), row))

    def cursors(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM sink_cursors ORDER BY sink, kind")
            names = [d[0] for d in rows.description]
            return [dict(zip(names, r)) for r in rows.fetchall()]

    def advance_cursor(self, sink: str, kind: str, delivered: int, now: datetime | None = None) -> None:
        with self._tx() as db:
            db.execute(
                """UPDATE sink_cursors SET delivered = ?, delivered_total = delivered_total + 1, attempts = 0,
                       next_attempt_at = 0, last_error = NULL, last_delivery_at = ?
                   WHERE sink = ? AND kind = ? AND delivered < ?""",
                (delivered, utc_text(now or _now()), sink, kind, delivered),
            )

    def fail_cursor(self, sink: str, kind: str, error: str, next_attempt_at: float) -> int:
        with self._tx() as db:
            db.execute(
                """UPDATE sink_cursors SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?
                   WHERE sink = ? AND kind = ?""",
                (error, next_attempt_at, sink, kind),
            )
            return int(db.execute("SELECT attempts FROM sink_cursors WHERE sink = ? AND kind = ?",
                                  (sink, kind)).fetchone()[0])

    # -- retention -------------------------------------------------------------------------------

    def prunable(self, before: datetime) -> tuple[int, int, bool]:
        """(first, end, delivered): the entries [first, end) that
        :meth:`prune` would clear now (first: the oldest that still has its
        body), and whether any sink has a bundle cursor (so they were
        delivered somewhere)."""
        with self._lock:
            last = self._latest_checkpoint()
            limit = last.size if last else 0
            row = self._db.execute("SELECT min(delivered) FROM sink_cursors WHERE kind = 'bundle'").fetchone()
            delivered = row[0] is not None
            if delivered:
                limit = min(limit, int(row[0]))
            first = self._db.execute("SELECT min(idx) FROM entries WHERE body IS NOT NULL OR seg IS NOT NULL"
                                     ).fetchone()[0]
        end = min(limit, self.index_range(None, utc_text(before))[1])
        first = end if first is None else min(int(first), end)
        return first, end, delivered

    def prune(self, before: datetime, now: datetime | None = None) -> int:
        """Clear the bodies of entries recorded before ``before``: only those
        older than the retention period, covered by a checkpoint and
        delivered to every sink that ever had a cursor. Leaves stay, so the
        tree, the chain and every checkpoint still verify."""
        now = now or _now()
        earliest = now - self.retention
        if before > earliest:
            raise EvidenceError(
                f"retention: entries younger than {self.retention.days} days cannot be pruned; the latest "
                f"allowed cutoff is {utc_text(earliest)}, got {utc_text(before)}"
            )
        with self._tx() as db:
            last = self._latest_checkpoint()
            limit = last.size if last else 0
            row = db.execute("SELECT min(delivered) FROM sink_cursors WHERE kind = 'bundle'").fetchone()
            if row[0] is not None:
                limit = min(limit, int(row[0]))
            cur = db.execute(
                "UPDATE entries SET body = NULL, sig = NULL, seg = NULL, seg_off = NULL, seg_len = NULL "
                "WHERE idx < ? AND recorded_at < ? AND (body IS NOT NULL OR seg IS NOT NULL)",
                (limit, utc_text(before)),
            )
            n = cur.rowcount
            db.execute("DELETE FROM tail WHERE idx < ? AND idx IN (SELECT idx FROM entries WHERE idx < ? "
                       "AND seg IS NULL)", (limit, limit))
            db.execute("""DELETE FROM segments WHERE first < ? AND NOT EXISTS (
                              SELECT 1 FROM entries WHERE idx >= segments.first
                              AND idx < segments.first + segments.count AND seg = segments.id)""", (limit,))
            self._seg_cache = (None, None)
            return n

    # -- storage ----------------------------------------------------------------------------------

    def _pack(self, db: sqlite3.Connection, *, limit: int | None, final: bool = False) -> int:
        """Move the bodies and signatures of the oldest inline entries into
        compressed segments, inside the caller's transaction: full segments
        only unless ``final``, at most ``limit`` of them. Returns how many."""
        start = int(db.execute("SELECT coalesce((SELECT value FROM meta WHERE key = 'packed_to'), 0)").fetchone()[0])
        made = 0
        while limit is None or made < limit:
            rows, raw = [], 0
            for idx, body, sig, data in db.execute(
                    "SELECT e.idx, e.body, e.sig, t.data FROM entries e LEFT JOIN tail t ON t.idx = e.idx "
                    "WHERE e.idx >= ? ORDER BY e.idx LIMIT ?", (start, SEGMENT_ENTRIES)):
                if data is not None:
                    sig, body = data[:64], data[64:]
                if raw and raw + len(body or b"") + 64 > SEGMENT_BYTES:
                    break
                rows.append((idx, body, sig))
                raw += len(body or b"") + 64
            full = len(rows) == SEGMENT_ENTRIES or raw >= SEGMENT_BYTES // 2 and rows and (
                db.execute("SELECT 1 FROM entries WHERE idx > ?", (rows[-1][0],)).fetchone() is not None)
            if not rows or not (full or final):
                break
            parts, where, off = [], [], 0
            for idx, body, sig in rows:
                if body is None:  # pruned before it was packed
                    continue
                parts.append(bytes(sig) + bytes(body))
                where.append((off, 64 + len(body), idx))
                off += 64 + len(body)
            end = rows[-1][0] + 1
            if parts:
                seg = db.execute("INSERT INTO segments (first, count, raw, codec, data) VALUES (?, ?, ?, ?, ?)",
                                 (rows[0][0], end - rows[0][0], off, _CODEC, _compress(b"".join(parts)))
                                 ).lastrowid
                db.executemany("UPDATE entries SET body = NULL, sig = NULL, seg = ?, seg_off = ?, seg_len = ? "
                               "WHERE idx = ?", [(seg, o, n, idx) for o, n, idx in where])
                db.execute("DELETE FROM tail WHERE idx >= ? AND idx < ?", (rows[0][0], end))
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('packed_to', ?)", (str(end),))
            start = end
            made += 1
        return made

    def note_archive(self, first: int, end: int, where: str) -> None:
        """Remember where entries [first, end) were archived before pruning."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"archive/{first}-{end}", where))

    def compact(self, *, vacuum: bool = True) -> int:
        """Pack every inline body (a log from before segments, or the tail),
        then give the freed pages back to the file system (VACUUM, which
        needs as much free space as the packed log takes). Returns the
        number of segments made."""
        made = 0
        while True:
            with self._tx() as db:
                n = self._pack(db, limit=64, final=True)
            made += n
            if n == 0:
                break
        if vacuum:
            with self._lock:
                self._db.execute("VACUUM")
        return made

    def storage(self) -> dict[str, int]:
        """Bytes on disk (the file, after a WAL checkpoint, and what is left
        of the WAL), of them free pages (reused by later appends), entries
        inline and packed, segments and their raw and compressed bytes."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0] * self._db.execute(
                "PRAGMA page_size").fetchone()[0]
            inline, inline_bytes = self._db.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM entries WHERE body IS NOT NULL").fetchone()
            tail, tail_bytes = self._db.execute(
                "SELECT count(*), coalesce(sum(length(data)) - 64 * count(*), 0) FROM tail").fetchone()
            inline, inline_bytes = inline + tail, inline_bytes + tail_bytes
            packed = self._db.execute("SELECT count(*) FROM entries WHERE seg > 0").fetchone()[0]
            segs, raw, stored = self._db.execute(
                "SELECT count(*), coalesce(sum(raw), 0), coalesce(sum(length(data)), 0) FROM segments").fetchone()
        wal = self.path.with_name(self.path.name + "-wal")
        return {"file_bytes": self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0),
                "free_bytes": free, "inline_entries": inline, "inline_bytes": inline_bytes, "packed_entries": packed,
                "segments": segs, "segment_raw_bytes": raw, "segment_bytes": stored}


_FULL = "idx, bundle_id, kind, recorded_at, body, sig, leaf"
_HASHING = "idx, body, leaf"
_HASHING_ROW = "idx, body, leaf, seg, seg_off, seg_len"


def _bodies(rows: list[tuple], segment: Any, tail: Any) -> list[tuple]:
    """(idx, body, leaf) of (idx, body, leaf, seg, seg_off, seg_len) rows:
    what verification hashes, read with as little per entry as can be."""
    waiting = [r[0] for r in rows if r[3] == 0]
    tails = tail(waiting[0], waiting[-1]) if waiting else {}
    out = []
    cur, data = None, None
    for idx, body, leaf, seg, off, n in rows:
        if seg:
            if seg != cur:
                cur, data = seg, segment(seg)
            body = data[off + 64:off + n] if data is not None and n >= 64 and off + n <= len(data) else DAMAGED
        elif seg == 0:
            got = tails.get(idx)
            body = got[64:] if got is not None and len(got) >= 64 else DAMAGED
        out.append((idx, body, leaf))
    return out


def _load_segment(db: sqlite3.Connection, seg: int) -> bytes | None:
    """A segment's bytes, or None if it is missing or does not decompress."""
    row = db.execute("SELECT codec, data FROM segments WHERE id = ?", (seg,)).fetchone()
    return None if row is None else _decompress(row[0], row[1])


def _load_tail(db: sqlite3.Connection, first: int, last: int) -> dict[int, bytes]:
    return {int(i): bytes(d) for i, d in db.execute("SELECT idx, data FROM tail WHERE idx >= ? AND idx <= ?",
                                                     (first, last))}


def _resolve(rows: list[tuple], segment: Any, tail: Any) -> list[tuple]:
    """Rows of :attr:`EvidenceLog._COLS` as (idx, bundle_id, kind,
    recorded_at, body, sig, leaf), bodies and signatures of packed entries
    read through ``segment(id)``, of entries in the tail through
    ``tail(first, last)`` ({idx: sig + body}); :data:`DAMAGED` where it
    cannot be."""
    out = []
    waiting = [r[0] for r in rows if r[7] == 0]
    tails = tail(waiting[0], waiting[-1]) if waiting else {}
    for idx, bundle_id, kind, recorded_at, body, sig, leaf, seg, off, n in rows:
        if seg == 0:
            data = tails.get(idx)
            sig, body = (data[:64], data[64:]) if data is not None and len(data) >= 64 else (DAMAGED, DAMAGED)
        elif seg is not None:
            data = segment(seg)
            if data is None or off is None or n is None or n < 64 or off + n > len(data):
                sig = body = DAMAGED
            else:
                sig, body = data[off:off + 64], data[off + 64:off + n]
        out.append((idx, bundle_id, kind, recorded_at, body, sig, leaf))
    return out


def span_chunks(path: str | Path, start: int, end: int, size: int = 16384) -> Iterator[list[tuple]]:
    """(idx, body, leaf) rows [start, end) of the log file at ``path``, a
    chunk at a time, on a connection of their own: verification's worker
    processes read spans of the log in parallel this way."""
    db = sqlite3.connect(str(path), timeout=30)
    cache: dict[int, bytes | None] = {}

    def segment(seg: int) -> bytes | None:
        if seg not in cache:
            cache.clear()
            cache[seg] = _load_segment(db, seg)
        return cache[seg]

    try:
        db.execute("PRAGMA mmap_size=4294967296")
        cur = db.execute(f"SELECT {_HASHING_ROW} FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                         (start, end))
        while rows := cur.fetchmany(size):
            yield _bodies(rows, segment, lambda a, b: _load_tail(db, a, b))
    finally:
        db.close()
