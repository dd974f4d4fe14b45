"""The endpoint's durable queue (SQLite, WAL, synchronous=FULL): every
event is numbered (per queue, from 1) and kept until the appliance
acknowledges it; on reconnect everything after the appliance's
acknowledged sequence is sent again.

Bounded by age and size (default 14 days, 256 MiB): when a bound is
crossed the oldest events are dropped and their sequence numbers become a
gap, sent to the appliance like an event, so a loss is counted, never
silent. ``queue_id`` is random per queue file: a new file (reinstall, lost
disk) starts a new sequence the appliance can tell apart.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    check_id TEXT NOT NULL,
    observed_at_ms INTEGER NOT NULL,
    facts_json TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    duration_ms REAL NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    queued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS gaps (from_seq INTEGER PRIMARY KEY, to_seq INTEGER NOT NULL, reason TEXT NOT NULL);
"""

DAY = 86400.0


@dataclass(frozen=True)
class Event:
    seq: int
    check_id: str
    observed_at_ms: int
    facts_json: str
    error: str = ""
    duration_ms: float = 0.0


@dataclass(frozen=True)
class Gap:
    from_seq: int
    to_seq: int
    reason: str


class Queue:
    def __init__(self, path: Path | str, *, max_age: float = 14 * DAY, max_bytes: int = 256 * 1024 * 1024):
        self.path = Path(path)
        self.max_age, self.max_bytes = max_age, max_bytes
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self.lock = threading.RLock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        with self._tx() as db:
            if db.execute("SELECT v FROM meta WHERE k = 'queue_id'").fetchone() is None:
                db.execute("INSERT INTO meta VALUES ('queue_id', ?), ('next_seq', '1'), ('acked', '0'), "
                           "('dropped', '0')", (str(uuid.uuid4()),))
        self.queue_id = self._meta("queue_id")

    def _tx(self):
        queue = self

        class Tx:
            def __enter__(self):
                queue.lock.acquire()
                queue.db.execute("BEGIN IMMEDIATE")
                return queue.db

            def __exit__(self, exc_type, exc, tb):
                try:
                    queue.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
                finally:
                    queue.lock.release()
                return False

        return Tx()

    def _meta(self, key: str) -> str:
        with self.lock:
            return self.db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()[0]

    @property
    def acked(self) -> int:
        return int(self._meta("acked"))

    @property
    def dropped(self) -> int:
        """Events dropped by the bounds since the queue was created."""
        return int(self._meta("dropped"))

    def put(self, check_id: str, observed_at_ms: int, facts_json: str, error: str = "",
            duration_ms: float = 0.0) -> int:
        """Queue one event durably; its sequence number."""
        size = len(check_id) + len(facts_json) + len(error) + 64
        with self._tx() as db:
            seq = int(db.execute("SELECT v FROM meta WHERE k = 'next_seq'").fetchone()[0])
            db.execute("UPDATE meta SET v = ? WHERE k = 'next_seq'", (str(seq + 1),))
            db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (seq, check_id, observed_at_ms, facts_json, error, duration_ms, size, time.time()))
            self._bound(db)
        return seq

    def _bound(self, db: sqlite3.Connection) -> None:
        total = db.execute("SELECT coalesce(sum(size), 0) FROM events").fetchone()[0]
        old = time.time() - self.max_age
        drop_to = None
        for seq, size, queued_at in db.execute("SELECT seq, size, queued_at FROM events ORDER BY seq"):
            if total <= self.max_bytes and queued_at >= old:
                break
            total -= size
            drop_to = seq
        if drop_to is None:
            return
        first = db.execute("SELECT min(seq) FROM events").fetchone()[0]
        n = db.execute("SELECT count(*) FROM events WHERE seq <= ?", (drop_to,)).fetchone()[0]
        db.execute("DELETE FROM events WHERE seq <= ?", (drop_to,))
        reason = f"the endpoint's queue was full (at most {self.max_bytes} bytes, {self.max_age / DAY:g} days)"
        # One gap per run of dropped sequence numbers: extend the last one if it ends just before.
        prev = db.execute("SELECT from_seq, to_seq FROM gaps WHERE to_seq = ?", (first - 1,)).fetchone()
        if prev is not None:
            db.execute("UPDATE gaps SET to_seq = ? WHERE from_seq = ?", (drop_to, prev[0]))
        else:
            db.execute("INSERT INTO gaps VALUES (?, ?, ?)", (first, drop_to, reason))
        db.execute("UPDATE meta SET v = CAST(v AS INTEGER) + ? WHERE k = 'dropped'", (n,))

    def pending(self, after: int, limit: int) -> tuple[list[Event], list[Gap]]:
        """Up to ``limit`` events after sequence ``after``, oldest first, and
        the gaps among them."""
        with self.lock:
            events = [Event(*r) for r in self.db.execute(
                "SELECT seq, check_id, observed_at_ms, facts_json, error, duration_ms FROM events WHERE seq > ? "
                "ORDER BY seq LIMIT ?", (after, limit))]
            last = events[-1].seq if len(events) == limit else None
            sql, args = "SELECT from_seq, to_seq, reason FROM gaps WHERE to_seq > ?", [after]
            if last is not None:
                sql, args = sql + " AND from_seq <= ?", [after, last]
            gaps = [Gap(*r) for r in self.db.execute(sql + " ORDER BY from_seq", args)]
        return events, gaps

    def ack(self, through: int) -> None:
        """The appliance has everything up to ``through``: forget it."""
        with self._tx() as db:
            if through <= int(db.execute("SELECT v FROM meta WHERE k = 'acked'").fetchone()[0]):
                return
            db.execute("DELETE FROM events WHERE seq <= ?", (through,))
            db.execute("DELETE FROM gaps WHERE to_seq <= ?", (through,))
            db.execute("UPDATE meta SET v = ? WHERE k = 'acked'", (str(through),))

    def depth(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT count(*) FROM events").fetchone()[0])

    def last_seq(self) -> int:
        return int(self._meta("next_seq")) - 1

    def close(self) -> None:
        with self.lock:
            self.db.close()
