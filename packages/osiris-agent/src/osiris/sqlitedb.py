"""The two SQLite disciplines the state store and the evidence log share:
immediate transactions that never hide the real error, and versioned
migrations that a second osiris process may race."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def transaction(db: sqlite3.Connection, lock: threading.RLock) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back by itself (disk full, I/O
            # error): a second ROLLBACK would hide the real error.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(
    db: sqlite3.Connection,
    lock: threading.RLock,
    migrations: Sequence[str],
    too_new: Callable[[int], Exception],
    failed: Callable[[int, sqlite3.Error], Exception],
) -> None:
    """Run the migrations the database has not had yet. ``PRAGMA
    user_version`` counts them; each runs with its version bump in one
    transaction, so a crash leaves the old version or the new one. A
    database from a newer agent is refused (``too_new(current)``)."""
    with lock:
        current = schema_version(db)
        if current > len(migrations):
            raise too_new(current)
        for version in range(current + 1, len(migrations) + 1):
            script = f"BEGIN IMMEDIATE;\n{migrations[version - 1]}\nPRAGMA user_version = {version};\nCOMMIT;"
            try:
                db.executescript(script)
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if schema_version(db) >= version:
                    continue  # another osiris process migrated it meanwhile
                raise failed(version, exc) from exc
