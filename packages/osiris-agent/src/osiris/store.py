"""The state store: one SQLite database in WAL mode under the state directory.

Migrations are an ordered list of SQL scripts; ``PRAGMA user_version``
records how many have run, so a newer agent upgrades an older database in
place and an older agent refuses a database from the future rather than
corrupting it. Later features add tables by appending migrations, never by
editing old ones.

Calls are synchronous and short (indexed single-row writes on a local
file); the engine calls them from the event loop. SQLite serialises writers,
and WAL lets the CLI read while the agent writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace as _replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import sqlitedb
from .paths import DataPaths
from .records import Observation, Status

MIGRATIONS: list[str] = [
    # 1: targets, observations, incidents
    """
    CREATE TABLE targets (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT '',
        first_seen TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE observations (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        check_id TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'error')),
        reason TEXT NOT NULL,
        facts TEXT NOT NULL,
        observed_at TEXT NOT NULL,
        duration_ms REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX observations_target_check ON observations (target, check_id, id);
    -- Latest status per target and check: what the scheduler and /status read.
    CREATE TABLE check_state (
        target TEXT NOT NULL,
        check_id TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        observation_id INTEGER NOT NULL REFERENCES observations (id),
        observed_at TEXT NOT NULL,
        PRIMARY KEY (target, check_id)
    );
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        check_id TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'resolved')),
        opened_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        resolved_at TEXT,
        outcome TEXT,
        tier TEXT CHECK (tier IS NULL OR tier IN ('L1', 'L2', 'L3', 'none')),
        detail TEXT NOT NULL DEFAULT '',
        occurrences INTEGER NOT NULL DEFAULT 1,
        first_observation_id INTEGER NOT NULL REFERENCES observations (id),
        last_observation_id INTEGER NOT NULL REFERENCES observations (id),
        CHECK ((state = 'open') = (outcome IS NULL))
    );
    -- One open incident per target and check, enforced by the database.
    CREATE UNIQUE INDEX incidents_one_open ON incidents (target, check_id) WHERE state = 'open';
    CREATE INDEX incidents_state ON incidents (state, id);
    """,
    # 2: healing. A drift episode that ended without a fix (escalated,
    # dry-run, dismissed...) is "parked" until the check passes again, so
    # the same drift does not open, heal or notify again every sweep.
    """
    ALTER TABLE check_state ADD COLUMN parked_incident INTEGER REFERENCES incidents (id);
    CREATE TABLE heal_attempts (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        tier TEXT NOT NULL CHECK (tier IN ('L1', 'L2')),
        rule_id TEXT,
        runbook TEXT NOT NULL,
        params TEXT NOT NULL,
        dry_run INTEGER NOT NULL DEFAULT 0,
        ok INTEGER,
        detail TEXT NOT NULL DEFAULT '',
        dispatched_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE INDEX heal_attempts_incident ON heal_attempts (incident_id);
    -- Learning: outcomes per (check, role, runbook, tier).
    CREATE TABLE pattern_stats (
        check_id TEXT NOT NULL,
        role TEXT NOT NULL,
        runbook TEXT NOT NULL,
        tier TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        successes INTEGER NOT NULL DEFAULT 0,
        heal_seconds_total REAL NOT NULL DEFAULT 0,
        last_params TEXT NOT NULL DEFAULT '{}',
        updated_at TEXT NOT NULL,
        PRIMARY KEY (check_id, role, runbook, tier)
    );
    CREATE TABLE rule_candidates (
        id INTEGER PRIMARY KEY,
        check_id TEXT NOT NULL,
        role TEXT NOT NULL,
        runbook TEXT NOT NULL,
        params TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        successes INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('candidate', 'approved', 'rejected')),
        created_at TEXT NOT NULL,
        decided_by TEXT,
        decided_at TEXT,
        rule_file TEXT,
        UNIQUE (check_id, role, runbook)
    );
    """,
    # 3: the flap guard counts recent heals per target and check.
    """
    CREATE INDEX incidents_target_check ON incidents (target, check_id, resolved_at);
    """,
    # 4: promotion needs the successes of a pattern to have used one set of
    # parameters: count the distinct ones.
    """
    ALTER TABLE pattern_stats ADD COLUMN param_sets INTEGER NOT NULL DEFAULT 1;
    """,
    # 5: an attempt the agent died in the middle of is closed at the next
    # start as interrupted; the flap guard counts it like a heal.
    """
    ALTER TABLE heal_attempts ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: sources that deliver at least once (endpoint agents) name each
    # report; a name is recorded once. Plugins keep small durable state
    # (enrolled endpoints, token digests) by namespace and key (ctx.state).
    """
    ALTER TABLE observations ADD COLUMN report_id TEXT;
    CREATE UNIQUE INDEX observations_report_id ON observations (report_id) WHERE report_id IS NOT NULL;
    CREATE TABLE plugin_state (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (namespace, key)
    );
    """,
    # 7: what people see. check_history keeps one row per change of a
    # check's status on a target (observations are pruned after weeks; the
    # changes are few and are what the status page's history and the
    # report's time-compliant figures need). coverage counts each target's
    # results per hour (evidence gaps: a host or the agent not reporting).
    # exceptions: accepted risks. users and sessions: the status page's
    # local accounts (argon2 hashes; a session is kept by its token's hash).
    """
    CREATE TABLE check_history (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        check_id TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        since TEXT NOT NULL
    );
    CREATE INDEX check_history_target ON check_history (target, check_id, since);
    CREATE INDEX check_history_since ON check_history (since);
    INSERT INTO check_history (target, check_id, status, reason, since)
        SELECT target, check_id, status, reason, observed_at FROM check_state;
    CREATE TABLE coverage (
        target TEXT NOT NULL,
        hour TEXT NOT NULL,
        observations INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        PRIMARY KEY (target, hour)
    ) WITHOUT ROWID;
    CREATE INDEX coverage_hour ON coverage (hour);
    CREATE TABLE exceptions (
        id INTEGER PRIMARY KEY,
        check_id TEXT NOT NULL,
        target TEXT,
        reason TEXT NOT NULL,
        approved_by TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        removed_at TEXT,
        removed_by TEXT,
        removed_reason TEXT
    );
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('viewer', 'operator')),
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        locked_until TEXT
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    """,
]

OUTCOMES = ("healed", "recovered", "escalated", "failed", "suppressed", "dismissed", "dry-run", "held", "timeout", "error",
            "accepted")
# Outcomes that end a drift episode: the check was seen passing.
EPISODE_ENDS = ("healed", "recovered")
# Outcomes after which the same drift is tried again at the next failing
# sweep instead of being set aside: nobody was told and nothing was decided.
RETRY_OUTCOMES = ("error", "timeout")
TIERS = ("L1", "L2", "L3", "none")


class StoreError(Exception):
    pass


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


def iso(dt: datetime) -> str:
    """A time as the store writes it (UTC, microseconds): compare times with
    the store's only in this form."""
    return _iso(dt)


def _now() -> str:
    return _iso(datetime.now(timezone.utc))


@dataclass(frozen=True)
class Incident:
    id: int
    target: str
    check_id: str
    state: str
    opened_at: str
    updated_at: str
    resolved_at: str | None
    outcome: str | None
    tier: str | None
    detail: str
    occurrences: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PatternSample:
    """One real heal attempt, counted in the pattern statistics of
    (check, role, runbook, tier) that the learning loop promotes from."""

    check_id: str
    role: str
    runbook: str
    tier: str
    ok: bool
    heal_seconds: float
    params: dict[str, Any]


_INCIDENT_COLUMNS = (
    "id, target, check_id, state, opened_at, updated_at, resolved_at, outcome, tier, detail, occurrences"
)


# The WAL file is cut back to this size whenever SQLite restarts it, and
# truncated to nothing by the periodic TRUNCATE checkpoint: without a limit
# it keeps the size of its largest burst for ever.
JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024


@dataclass(frozen=True)
class Retention:
    """How long observations are kept, and how often old ones are deleted."""

    days: float
    interval: float = 3600.0


def _prune(db: sqlite3.Connection, before: str, batch: int, pause: Callable[[], bool] | None = None) -> int:
    """Delete observations recorded before ``before`` (ISO time) that
    nothing refers to (the latest status per check, any incident), in
    transactions of at most ``batch`` rows so the agent's writes wait for a
    few milliseconds at most. ``pause()`` between batches: False stops."""
    # Ids grow with time: the old rows are the ones below the first row
    # at or after the cut-off. Finding it scans only what is to be pruned
    # (and the few rows kept for their references), not the whole table.
    row = db.execute("SELECT id FROM observations WHERE observed_at >= ? ORDER BY id LIMIT 1", (before,)).fetchone()
    bound = int(row[0]) if row else None
    if bound is None:
        top = db.execute("SELECT max(id) FROM observations").fetchone()[0]
        if top is None:
            return 0
        bound = int(top) + 1
    deleted, after = 0, 0
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM observations WHERE id > ? AND id < ? ORDER BY id LIMIT ?", (after, bound, batch))]
            if ids:
                cur = db.execute(
                    """DELETE FROM observations WHERE id BETWEEN ? AND ?
                           AND id NOT IN (SELECT observation_id FROM check_state)
                           AND id NOT IN (SELECT first_observation_id FROM incidents)
                           AND id NOT IN (SELECT last_observation_id FROM incidents)""", (ids[0], ids[-1]))
                deleted += cur.rowcount
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if len(ids) < batch or (pause is not None and not pause()):
            return deleted
        after = ids[-1]


class _Checkpointer(threading.Thread):
    """The database's upkeep, on a connection of its own so the event loop
    never waits for it (SQLite releases the GIL while it works): a passive
    WAL checkpoint every ``interval`` seconds, a TRUNCATE checkpoint every
    ``truncate_interval`` (the WAL file back to zero bytes), and, with a
    :class:`Retention`, old observations deleted every ``retention.interval``."""

    def __init__(self, path: Path, interval: float = 1.0, truncate_interval: float = 60.0,
                 retention: Retention | None = None):
        super().__init__(name="osiris-wal-checkpoint", daemon=True)
        self.path, self.interval, self.truncate_interval = path, interval, truncate_interval
        self.retention = retention
        self.pruned = 0
        self.last_error: str | None = None
        self._stop_event = threading.Event()
        self.start()

    def run(self) -> None:
        db = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
        now = time.monotonic()
        next_truncate = now + self.truncate_interval
        next_prune = now + (self.retention.interval if self.retention else 0.0)
        try:
            db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            db.execute("PRAGMA foreign_keys=ON")
            while not self._stop_event.wait(self.interval):
                now = time.monotonic()
                try:
                    if self.retention is not None and now >= next_prune:
                        next_prune = now + self.retention.interval
                        self.prune(db)
                    if now >= next_truncate:
                        next_truncate = now + self.truncate_interval
                        self.truncate(db)
                    else:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    self.last_error = f"state database upkeep: {exc}"  # busy or locked: the next round catches up
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass
        finally:
            db.close()

    def prune(self, db: sqlite3.Connection) -> None:
        assert self.retention is not None
        before = _iso(datetime.now(timezone.utc) - timedelta(days=self.retention.days))
        self.pruned += _prune(db, before, 2000, pause=lambda: not self._stop_event.wait(0.01))

    @staticmethod
    def truncate(db: sqlite3.Connection) -> None:
        # TRUNCATE holds new writers while it waits for readers: wait briefly
        # and try again next time rather than stall the agent's commits.
        db.execute("PRAGMA busy_timeout=200")
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            db.execute("PRAGMA busy_timeout=5000")

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)


class Store:
    """``retention``: delete observations older than it, in the background
    (the agent passes ``store.retention_days``); None keeps everything (the
    CLI, which only reads and decides)."""

    def __init__(self, state_dir: Path | str, *, retention: Retention | None = None):
        self.state_dir = Path(state_dir)
        self.path = DataPaths.of(self.state_dir).state_db
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            raise StoreError(f"state directory {self.state_dir}: cannot create: {exc.strerror}") from exc
        # The database holds hostnames and facts about the estate: owner and
        # group only. umask covers the WAL and SHM files SQLite creates.
        old = os.umask(0o027)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        except sqlite3.Error as exc:
            raise StoreError(f"state database {self.path}: {exc}") from exc
        finally:
            os.umask(old)
        self.db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints (copying the WAL back into the database, with an fsync)
        # run in a thread of their own instead of inside whichever commit
        # crosses the threshold: the event loop never waits for one.
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.migrate()
        self._checkpointer = _Checkpointer(self.path, retention=retention)

    # -- schema --------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return sqlitedb.schema_version(self.db)

    def migrate(self, migrations: Sequence[str] = MIGRATIONS) -> None:
        sqlitedb.migrate(
            self.db, self._lock, migrations,
            too_new=lambda current: StoreError(
                f"state database {self.path} has schema version {current}, newer than this agent "
                f"knows ({len(migrations)}); refusing to touch it"),
            failed=lambda version, exc: StoreError(f"state database {self.path}: migration {version} failed: {exc}"),
        )

    def integrity(self) -> list[str]:
        """SQLite's ``quick_check``: an empty list when the file is sound
        (the health gate's look at the state database)."""
        with self._lock:
            rows = [r[0] for r in self.db.execute("PRAGMA quick_check")]
        return [] if rows == ["ok"] else rows

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlitedb.transaction(self.db, self._lock)

    def close(self) -> None:
        self._checkpointer.stop()
        self.db.close()

    # -- upkeep ----------------------------------------------------------------

    def prune_observations(self, before: datetime, batch: int = 2000) -> int:
        """Delete observations recorded before ``before`` except those the
        latest status or an incident refers to; how many were deleted. The
        agent does this in the background (``retention``)."""
        with self._lock:
            return _prune(self.db, _iso(before), batch)

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (the background
        thread does this every minute)."""
        with self._lock:
            _Checkpointer.truncate(self.db)

    def upkeep(self) -> dict[str, Any]:
        """Observations pruned since start and the last upkeep error, if any."""
        return {"pruned": self._checkpointer.pruned, "last_error": self._checkpointer.last_error}

    # -- observations ------------------------------------------------------------

    def record_many(self, observations: Sequence[Observation]) -> list[tuple[int, Incident | None, bool] | None]:
        """Record observations (one target's sweep) and apply each to
        incidents, in order, in one transaction: a commit per observation
        was most of the store's cost, and this is the sweep's hot path.

        Returns ``(observation id, incident, new)`` per observation: for a
        failure, the incident opened (``new``) or counted again, or ``None``
        when the drift episode is parked; for a pass or an error, the open
        incident if any. An observation whose ``report_id`` is already
        stored (a source delivering again) is not recorded: ``None`` in its
        place.
        """
        now = _now()
        hours: dict[tuple[str, str], list[int]] = {}  # (target, hour): results, errors
        # (target, check) -> (status, open incident) after its last
        # observation in this transaction: what the database would answer
        # for the next one of the same check (an endpoint's replayed queue
        # holds many), without asking it again.
        known: dict[tuple[str, str], tuple[Status, Incident | None]] = {}
        with self.transaction() as db:
            out: list[tuple[int, Incident | None, bool] | None] = []
            for obs in observations:
                at = _iso(obs.observed_at)  # once: it is written three times
                out.append(self._record(db, obs, now, at, known))
                counts = hours.setdefault((obs.target, at[:13]), [0, 0])
                counts[0] += 1
                counts[1] += obs.status is Status.ERROR
            db.executemany(
                """INSERT INTO coverage (target, hour, observations, errors) VALUES (?, ?, ?, ?)
                   ON CONFLICT (target, hour) DO UPDATE SET observations = observations + excluded.observations,
                       errors = errors + excluded.errors""",
                [(t, h, n, e) for (t, h), (n, e) in hours.items()])
            return out

    def has_report(self, report_id: str) -> bool:
        """Whether an observation with this ``report_id`` is stored."""
        with self._lock:
            return self.db.execute("SELECT 1 FROM observations WHERE report_id = ?",
                                   (report_id,)).fetchone() is not None

    def _record(self, db: sqlite3.Connection, obs: Observation, now: str, at: str | None = None,
                known: dict[tuple[str, str], tuple[Status, Incident | None]] | None = None,
                ) -> tuple[int, Incident | None, bool] | None:
        key = (obs.target, obs.check)
        before = known.get(key) if known is not None else None
        oid = self._insert_observation(db, obs, at, same_status=before is not None and before[0] is obs.status)
        if oid is None:
            return None  # its report_id is stored already
        result = self._apply(db, obs, now, oid, before)
        if known is not None:
            known[key] = (obs.status, result[1])
        return result

    def _apply(self, db: sqlite3.Connection, obs: Observation, now: str, oid: int,
               before: tuple[Status, Incident | None] | None) -> tuple[int, Incident | None, bool]:
        if before is not None:
            open_ = before[1]  # the open incident (or none) after this check's previous observation
        else:
            row = db.execute(
                f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE target = ? AND check_id = ? AND state = 'open'",
                (obs.target, obs.check),
            ).fetchone()
            open_ = Incident(**dict(row)) if row else None
        if obs.status is not Status.FAIL:
            return oid, open_, False
        if open_ is not None:
            db.execute(
                "UPDATE incidents SET occurrences = occurrences + 1, updated_at = ?, last_observation_id = ? "
                "WHERE id = ?", (now, oid, open_.id))
            return oid, _replace(open_, occurrences=open_.occurrences + 1, updated_at=now), False
        parked = db.execute(
            "SELECT parked_incident FROM check_state WHERE target = ? AND check_id = ?", (obs.target, obs.check)
        ).fetchone()
        if parked is not None and parked[0] is not None:
            return oid, None, False
        cur = db.execute(
            """INSERT INTO incidents (target, check_id, state, opened_at, updated_at,
                   first_observation_id, last_observation_id)
               VALUES (?, ?, 'open', ?, ?, ?, ?)""",
            (obs.target, obs.check, now, now, oid, oid),
        )
        inc = Incident(int(cur.lastrowid), obs.target, obs.check, "open", now, now, None, None, None, "", 1)
        return oid, inc, True

    @staticmethod
    def _insert_observation(db: sqlite3.Connection, obs: Observation, at: str | None = None,
                            same_status: bool = False) -> int | None:
        """The new observation's id; None when its report_id is stored already
        (``at``: its time as the store writes it, if already made;
        ``same_status``: the check's state already has this status, so its
        history goes on without a new stretch)."""
        at = at or _iso(obs.observed_at)
        cur = db.execute(
            """INSERT INTO observations (target, check_id, status, reason, facts, observed_at, duration_ms,
                   report_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (report_id) WHERE report_id IS NOT NULL DO NOTHING""",
            (
                obs.target,
                obs.check,
                obs.status.value,
                obs.reason,
                json.dumps(obs.facts, sort_keys=True, default=str),
                at,
                obs.duration_ms,
                obs.report_id,
            ),
        )
        if cur.rowcount == 0:
            return None
        oid = int(cur.lastrowid)
        # A change of status (or a first result) starts a new stretch of history.
        if not same_status:
            db.execute(
                """INSERT INTO check_history (target, check_id, status, reason, since)
                   SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (
                       SELECT 1 FROM check_state WHERE target = ? AND check_id = ? AND status = ?)""",
                (obs.target, obs.check, obs.status.value, obs.reason, at,
                 obs.target, obs.check, obs.status.value),
            )
        db.execute(
            """INSERT INTO check_state (target, check_id, status, reason, observation_id, observed_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (target, check_id) DO UPDATE SET status = excluded.status,
                   reason = excluded.reason, observation_id = excluded.observation_id,
                   observed_at = excluded.observed_at,
                   parked_incident = CASE WHEN excluded.status = 'pass' THEN NULL
                                          ELSE check_state.parked_incident END""",
            (obs.target, obs.check, obs.status.value, obs.reason, oid, at),
        )
        return oid

    def latest(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM check_state ORDER BY target, check_id")]

    def count_status(self, status: str) -> int:
        """How many (target, check) pairs last observed with ``status``."""
        return int(self.db.execute("SELECT count(*) FROM check_state WHERE status = ?", (status,)).fetchone()[0])

    def last_observed(self) -> dict[tuple[str, str], datetime]:
        return {
            (r["target"], r["check_id"]): datetime.fromisoformat(r["observed_at"])
            for r in self.db.execute("SELECT target, check_id, observed_at FROM check_state")
        }

    # -- incidents -----------------------------------------------------------------

    def resolve_incident(self, incident_id: int, outcome: str, tier: str = "none", detail: str = "") -> Incident:
        if outcome not in OUTCOMES:
            raise StoreError(f"outcome {outcome!r}: expected one of {', '.join(OUTCOMES)}")
        if tier not in TIERS:
            raise StoreError(f"tier {tier!r}: expected one of {', '.join(TIERS)}")
        now = _now()
        with self.transaction() as db:
            cur = db.execute(
                """UPDATE incidents SET state = 'resolved', outcome = ?, tier = ?, detail = ?,
                       resolved_at = ?, updated_at = ? WHERE id = ? AND state = 'open'""",
                (outcome, tier, detail, now, now, incident_id),
            )
            if cur.rowcount != 1:
                exists = db.execute("SELECT state FROM incidents WHERE id = ?", (incident_id,)).fetchone()
                if exists is None:
                    raise StoreError(f"incident {incident_id}: no such incident")
                raise StoreError(f"incident {incident_id}: already {exists['state']}")
            if outcome not in EPISODE_ENDS and outcome not in RETRY_OUTCOMES:
                db.execute(
                    """UPDATE check_state SET parked_incident = ? WHERE status != 'pass' AND
                           (target, check_id) = (SELECT target, check_id FROM incidents WHERE id = ?)""",
                    (incident_id, incident_id),
                )
        return self.incident(incident_id)

    def incident(self, incident_id: int) -> Incident:
        row = self.db.execute(f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None:
            raise StoreError(f"incident {incident_id}: no such incident")
        return Incident(**dict(row))

    def observation(self, observation_id: int) -> dict[str, Any]:
        row = self.db.execute("SELECT * FROM observations WHERE id = ?", (observation_id,)).fetchone()
        if row is None:
            raise StoreError(f"observation {observation_id}: no such observation")
        out = dict(row)
        out["facts"] = json.loads(out["facts"])
        return out

    def last_observation_of(self, incident_id: int) -> dict[str, Any]:
        row = self.db.execute("SELECT last_observation_id FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None:
            raise StoreError(f"incident {incident_id}: no such incident")
        return self.observation(int(row[0]))

    def incidents(self, state: str | None = "open", limit: int = 1000) -> list[Incident]:
        sql = f"SELECT {_INCIDENT_COLUMNS} FROM incidents"
        args: list[Any] = []
        if state:
            sql += " WHERE state = ?"
            args.append(state)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [Incident(**dict(r)) for r in self.db.execute(sql, args)]

    def count_incidents(self) -> dict[str, int]:
        out = {"open": 0, "resolved": 0}
        for r in self.db.execute("SELECT state, count(*) AS n FROM incidents GROUP BY state"):
            out[r["state"]] = int(r["n"])
        return out

    # -- healing -------------------------------------------------------------------

    def count_heals(self, target: str, check_id: str, since: datetime) -> int:
        """Incidents of ``check_id`` on ``target`` healed since ``since``,
        plus attempts interrupted since then (their runbooks may have
        changed the host): what the flap guard counts."""
        at = _iso(since)
        row = self.db.execute(
            """SELECT (SELECT count(*) FROM incidents WHERE target = ? AND check_id = ? AND state = 'resolved'
                           AND outcome = 'healed' AND resolved_at >= ?)
                    + (SELECT count(*) FROM heal_attempts a JOIN incidents i ON i.id = a.incident_id
                       WHERE i.target = ? AND i.check_id = ? AND a.interrupted = 1 AND a.dispatched_at >= ?)""",
            (target, check_id, at, target, check_id, at)).fetchone()
        return int(row[0])

    def unfinished_attempts(self) -> list[dict[str, Any]]:
        """Attempts dispatched and never finished (the agent died mid-heal)."""
        rows = self.db.execute(
            """SELECT a.id, a.incident_id, a.tier, a.rule_id, a.runbook, a.params, a.dry_run, a.dispatched_at,
                      i.target, i.check_id
               FROM heal_attempts a JOIN incidents i ON i.id = a.incident_id
               WHERE a.finished_at IS NULL ORDER BY a.id""").fetchall()
        return [{**dict(r), "params": json.loads(r["params"])} for r in rows]

    def attempts(self) -> list[dict[str, Any]]:
        """Every heal attempt, oldest first (tests, reports)."""
        return [{**dict(r), "params": json.loads(r["params"])}
                for r in self.db.execute("SELECT * FROM heal_attempts ORDER BY id")]

    def begin_attempt(self, incident_id: int, tier: str, rule_id: str | None, runbook: str,
                      params: dict[str, Any], dry_run: bool) -> int:
        """Record a heal attempt as dispatched (before anything reaches the host)."""
        with self.transaction() as db:
            cur = db.execute(
                """INSERT INTO heal_attempts (incident_id, tier, rule_id, runbook, params, dry_run, dispatched_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (incident_id, tier, rule_id, runbook, json.dumps(params, sort_keys=True), int(dry_run), _now()))
            return int(cur.lastrowid)

    def finish_attempt(self, attempt_id: int, ok: bool | None, detail: str, sample: PatternSample | None,
                       *, interrupted: bool = False) -> None:
        """Close an attempt and count it in its pattern's statistics, in one transaction."""
        with self.transaction() as db:
            if sample is not None:
                self._count_pattern(db, sample)
            db.execute("UPDATE heal_attempts SET ok = ?, detail = ?, finished_at = ?, interrupted = ? WHERE id = ?",
                       (None if ok is None else int(ok), detail, _now(), int(interrupted), attempt_id))

    def count_pattern(self, sample: PatternSample) -> None:
        """Count one attempt in its pattern's statistics."""
        with self.transaction() as db:
            self._count_pattern(db, sample)

    @staticmethod
    def _count_pattern(db: sqlite3.Connection, s: PatternSample) -> None:
        db.execute(
            """INSERT INTO pattern_stats (check_id, role, runbook, tier, attempts, successes,
                   heal_seconds_total, last_params, updated_at)
               VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)
               ON CONFLICT (check_id, role, runbook, tier) DO UPDATE SET
                   attempts = attempts + 1, successes = successes + excluded.successes,
                   heal_seconds_total = heal_seconds_total + excluded.heal_seconds_total,
                   param_sets = param_sets + CASE WHEN excluded.successes = 1 AND successes > 0
                                                   AND last_params != excluded.last_params THEN 1 ELSE 0 END,
                   last_params = CASE WHEN excluded.successes = 1 THEN excluded.last_params
                                      ELSE last_params END,
                   updated_at = excluded.updated_at""",
            (s.check_id, s.role, s.runbook, s.tier, int(s.ok), s.heal_seconds if s.ok else 0.0,
             json.dumps(s.params, sort_keys=True), _now()),
        )

    # -- learning ------------------------------------------------------------------

    def patterns(self) -> list[dict[str, Any]]:
        """Pattern statistics, with each pattern's last healing parameters."""
        rows = [dict(r) for r in self.db.execute("SELECT * FROM pattern_stats ORDER BY check_id, role, runbook, tier")]
        for r in rows:
            r["last_params"] = json.loads(r["last_params"])
        return rows

    def refresh_candidate(self, check_id: str, role: str, runbook: str,
                          eligible: Callable[[int, int, int], bool]) -> None:
        """Make the L2 pattern (check, role, runbook) a promotion candidate
        when ``eligible(attempts, successes, param_sets)``, withdraw an
        undecided one that no longer is, in one transaction."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT attempts, successes, last_params, param_sets FROM pattern_stats WHERE check_id = ? "
                "AND role = ? AND runbook = ? AND tier = 'L2'", (check_id, role, runbook)).fetchone()
            if row is None:
                return
            attempts, successes = int(row["attempts"]), int(row["successes"])
            ok = eligible(attempts, successes, int(row["param_sets"]))
            existing = db.execute(
                "SELECT id, state FROM rule_candidates WHERE check_id = ? AND role = ? AND runbook = ?",
                (check_id, role, runbook)).fetchone()
            if existing is None:
                if ok:
                    db.execute(
                        """INSERT INTO rule_candidates (check_id, role, runbook, params, attempts, successes,
                               state, created_at) VALUES (?, ?, ?, ?, ?, ?, 'candidate', ?)""",
                        (check_id, role, runbook, row["last_params"], attempts, successes, _now()))
            elif existing["state"] == "candidate" and not ok:
                # It slipped below the bar: withdraw it until it earns it again.
                db.execute("DELETE FROM rule_candidates WHERE id = ?", (existing["id"],))
            elif existing["state"] == "candidate":
                db.execute("UPDATE rule_candidates SET attempts = ?, successes = ?, params = ? WHERE id = ?",
                           (attempts, successes, row["last_params"], existing["id"]))

    def candidates(self, state: str | None = "candidate", cid: int | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM rule_candidates WHERE 1 = 1", []
        if state:
            sql, args = sql + " AND state = ?", [*args, state]
        if cid is not None:
            sql, args = sql + " AND id = ?", [*args, cid]
        out = []
        for r in self.db.execute(sql + " ORDER BY id", args):
            d = dict(r)
            d["params"] = json.loads(d["params"])
            out.append(d)
        return out

    def decide_candidate(self, cid: int, state: str, by: str, rule_file: str | None,
                         then: Callable[[str], None] | None = None) -> None:
        """Record a decision on an undecided candidate; ``then(decided_at)``
        runs inside the same transaction (approval writes its rule file
        there), so of two decisions at once exactly one succeeds, and a
        failed ``then`` leaves the candidate undecided."""
        when = _now()
        with self.transaction() as db:
            cur = db.execute("UPDATE rule_candidates SET state = ?, decided_by = ?, decided_at = ?, rule_file = ? "
                             "WHERE id = ? AND state = 'candidate'", (state, by, when, rule_file, cid))
            if cur.rowcount != 1:
                row = db.execute("SELECT state FROM rule_candidates WHERE id = ?", (cid,)).fetchone()
                if row is None:
                    raise StoreError(f"rule candidate {cid}: no such candidate")
                raise StoreError(f"rule candidate {cid}: already {row['state']}")
            if then is not None:
                then(when)

    # -- plugin state ----------------------------------------------------------------
    # Small durable values by (namespace, key), JSON: what a plugin must keep
    # across restarts and share with its commands (ctx.state, KeyedState).

    def state_get(self, namespace: str, key: str) -> Any:
        with self._lock:
            row = self.db.execute("SELECT value FROM plugin_state WHERE namespace = ? AND key = ?",
                                  (namespace, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def state_items(self, namespace: str, prefix: str = "") -> list[tuple[str, Any]]:
        """Every (key, value) of ``namespace`` whose key starts with ``prefix``, by key."""
        with self._lock:
            rows = self.db.execute(
                "SELECT key, value FROM plugin_state WHERE namespace = ? AND substr(key, 1, ?) = ? ORDER BY key",
                (namespace, len(prefix), prefix)).fetchall()
        return [(r[0], json.loads(r[1])) for r in rows]

    def state_update(self, namespace: str, key: str, change: Callable[[Any], Any]) -> Any:
        """Read, change and write one value in one transaction (another
        process's change waits): ``change(old)`` gets the value or None and
        returns the new one (None deletes it); an exception it raises
        leaves the value as it was. Returns the new value."""
        with self.transaction() as db:
            row = db.execute("SELECT value FROM plugin_state WHERE namespace = ? AND key = ?",
                             (namespace, key)).fetchone()
            new = change(None if row is None else json.loads(row[0]))
            if new is None:
                db.execute("DELETE FROM plugin_state WHERE namespace = ? AND key = ?", (namespace, key))
            else:
                db.execute(
                    """INSERT INTO plugin_state (namespace, key, value, updated_at) VALUES (?, ?, ?, ?)
                       ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,
                           updated_at = excluded.updated_at""",
                    (namespace, key, json.dumps(new, sort_keys=True, allow_nan=False), _now()))
        return new


    # -- what people see: history, coverage, drift ------------------------------------

    def history(self, target: str, check_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The latest changes of status on ``target`` (one check, or all), newest first."""
        sql, args = "SELECT * FROM check_history WHERE target = ?", [target]
        if check_id is not None:
            sql, args = sql + " AND check_id = ?", [*args, check_id]
        return [dict(r) for r in self.db.execute(sql + " ORDER BY since DESC, id DESC LIMIT ?", [*args, limit])]

    def history_until(self, until: str) -> list[dict[str, Any]]:
        """Every change of status before ``until`` (ISO time), by target,
        check and time: what the report turns into time compliant."""
        return [dict(r) for r in self.db.execute(
            "SELECT target, check_id, status, reason, since FROM check_history WHERE since < ? "
            "ORDER BY target, check_id, since, id", (until,))]

    def coverage(self, since: str, until: str) -> list[dict[str, Any]]:
        """Hours (``YYYY-MM-DDTHH``) in [since, until) with each target's
        number of results and errors."""
        return [dict(r) for r in self.db.execute(
            "SELECT target, hour, observations, errors FROM coverage WHERE hour >= ? AND hour < ? ORDER BY hour",
            (since[:13], until[:13]))]

    def coverage_of(self, target: str, since: str, until: str) -> list[tuple[str, int, int]]:
        """One target's hours in [since, until): (hour, results, errors)."""
        return [(r[0], int(r[1]), int(r[2])) for r in self.db.execute(
            "SELECT hour, observations, errors FROM coverage WHERE target = ? AND hour >= ? AND hour < ? ORDER BY hour",
            (target, since[:13], until[:13]))]

    def covered_hours(self, since: str, until: str) -> list[str]:
        """Hours in [since, until) in which any target had a result."""
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT hour FROM coverage WHERE hour >= ? AND hour < ? ORDER BY hour", (since[:13], until[:13]))]

    def drift(self) -> list[dict[str, Any]]:
        """Every check failing now, with when it started failing and the
        incident that drift belongs to (open, or ended without a fix and
        parked): drift stays here until the check passes."""
        rows = self.db.execute(
            """SELECT s.target, s.check_id, s.reason, s.observed_at,
                      (SELECT since FROM check_history h WHERE h.target = s.target AND h.check_id = s.check_id
                       ORDER BY since DESC, id DESC LIMIT 1) AS since,
                      i.id AS incident_id, i.state AS incident_state, i.outcome, i.tier, i.detail
               FROM check_state s
               LEFT JOIN incidents i ON i.id = COALESCE(s.parked_incident,
                   (SELECT o.id FROM incidents o WHERE o.target = s.target AND o.check_id = s.check_id
                    AND o.state = 'open'))
               WHERE s.status = 'fail' ORDER BY since, s.target, s.check_id""")
        return [dict(r) for r in rows]

    def incidents_between(self, since: str, until: str) -> list[Incident]:
        """Incidents open at any time in [since, until), oldest first."""
        return [Incident(**dict(r)) for r in self.db.execute(
            f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE opened_at < ? AND (resolved_at IS NULL OR resolved_at >= ?) "
            "ORDER BY opened_at, id", (until, since))]

    # -- exceptions (accepted risks) ---------------------------------------------------

    def add_exception(self, check_id: str, target: str | None, reason: str, approved_by: str, created_by: str,
                      expires_at: str) -> dict[str, Any]:
        with self.transaction() as db:
            cur = db.execute(
                """INSERT INTO exceptions (check_id, target, reason, approved_by, created_by, created_at, expires_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (check_id, target, reason, approved_by, created_by, _now(), expires_at))
            eid = int(cur.lastrowid)
        return self.exception(eid)

    def exception(self, eid: int) -> dict[str, Any]:
        row = self.db.execute("SELECT * FROM exceptions WHERE id = ?", (eid,)).fetchone()
        if row is None:
            raise StoreError(f"exception {eid}: no such exception")
        return dict(row)

    def exceptions(self, active_at: str | None = None) -> list[dict[str, Any]]:
        """Every exception ever made, or those in force at ``active_at``."""
        if active_at is None:
            rows = self.db.execute("SELECT * FROM exceptions ORDER BY id")
        else:
            rows = self.db.execute(
                "SELECT * FROM exceptions WHERE created_at <= ? AND expires_at > ? "
                "AND (removed_at IS NULL OR removed_at > ?) ORDER BY id", (active_at, active_at, active_at))
        return [dict(r) for r in rows]

    def remove_exception(self, eid: int, by: str, reason: str) -> dict[str, Any]:
        with self.transaction() as db:
            cur = db.execute("UPDATE exceptions SET removed_at = ?, removed_by = ?, removed_reason = ? "
                             "WHERE id = ? AND removed_at IS NULL", (_now(), by, reason, eid))
            if cur.rowcount != 1:
                if db.execute("SELECT 1 FROM exceptions WHERE id = ?", (eid,)).fetchone() is None:
                    raise StoreError(f"exception {eid}: no such exception")
                raise StoreError(f"exception {eid}: already removed")
        return self.exception(eid)

    def unpark_uncovered(self, accepted_outcome: str, active_at: str) -> list[tuple[str, str]]:
        """Drift set aside as an accepted risk whose exception has ended
        (expired or removed) is drift again: the next failing result opens
        a new incident. Returns the (target, check) pairs released."""
        with self.transaction() as db:
            rows = db.execute(
                """SELECT s.target, s.check_id FROM check_state s JOIN incidents i ON i.id = s.parked_incident
                   WHERE i.outcome = ? AND NOT EXISTS (
                       SELECT 1 FROM exceptions e WHERE e.check_id = s.check_id
                       AND (e.target IS NULL OR e.target = s.target) AND e.created_at <= ? AND e.expires_at > ?
                       AND (e.removed_at IS NULL OR e.removed_at > ?))""",
                (accepted_outcome, active_at, active_at, active_at)).fetchall()
            pairs = [(r["target"], r["check_id"]) for r in rows]
            db.executemany("UPDATE check_state SET parked_incident = NULL WHERE target = ? AND check_id = ?", pairs)
        return pairs

    # -- accounts and sessions (the status page off loopback) -------------------------

    def add_user(self, name: str, role: str, password_hash: str) -> None:
        now = _now()
        try:
            with self.transaction() as db:
                db.execute("INSERT INTO users (name, role, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                           (name, role, password_hash, now, now))
        except sqlite3.IntegrityError:
            raise StoreError(f"user {name!r}: already exists") from None

    def user(self, name: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        return dict(row) if row else None

    def users(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(
            "SELECT name, role, created_at, updated_at, failures, locked_until FROM users ORDER BY name")]

    def remove_user(self, name: str) -> None:
        with self.transaction() as db:
            if db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount != 1:
                raise StoreError(f"user {name!r}: no such user")

    def set_password(self, name: str, password_hash: str) -> None:
        """A new password: failures and lockout cleared, every session of the user ended."""
        with self.transaction() as db:
            cur = db.execute("UPDATE users SET password_hash = ?, updated_at = ?, failures = 0, locked_until = NULL "
                             "WHERE name = ?", (password_hash, _now(), name))
            if cur.rowcount != 1:
                raise StoreError(f"user {name!r}: no such user")
            db.execute("DELETE FROM sessions WHERE user = ?", (name,))

    def login_failed(self, name: str, lock_after: int, lock_until: str) -> dict[str, Any] | None:
        """Count a failed login; at ``lock_after`` failures in a row the
        account is locked until ``lock_until``. Returns the user row."""
        with self.transaction() as db:
            db.execute("UPDATE users SET failures = failures + 1, locked_until = CASE WHEN failures + 1 >= ? "
                       "THEN ? ELSE locked_until END WHERE name = ?", (lock_after, lock_until, name))
        return self.user(name)

    def login_succeeded(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE users SET failures = 0, locked_until = NULL WHERE name = ?", (name,))

    def create_session(self, token_hash: str, user: str, expires_at: str) -> None:
        now = _now()
        with self.transaction() as db:
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            db.execute("INSERT INTO sessions (token_hash, user, created_at, expires_at) VALUES (?, ?, ?, ?)",
                       (token_hash, user, now, expires_at))

    def session(self, token_hash: str, now: str) -> dict[str, Any] | None:
        """The session's user (name, role), if the session is current."""
        row = self.db.execute(
            "SELECT u.name, u.role, s.expires_at FROM sessions s JOIN users u ON u.name = s.user "
            "WHERE s.token_hash = ? AND s.expires_at > ?", (token_hash, now)).fetchone()
        return dict(row) if row else None

    def end_session(self, token_hash: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))


class KeyedState:
    """One plugin's durable values (``ctx.state(namespace)``): JSON values
    by key in the state database, shared by the running agent and the
    plugin's commands. Meant for small records (enrolled endpoints,
    digests of one-time tokens), not for streams of data."""

    def __init__(self, store: Store, namespace: str):
        self.store, self.namespace = store, namespace

    def get(self, key: str) -> Any:
        return self.store.state_get(self.namespace, key)

    def items(self, prefix: str = "") -> list[tuple[str, Any]]:
        return self.store.state_items(self.namespace, prefix)

    def put(self, key: str, value: Any) -> None:
        self.store.state_update(self.namespace, key, lambda _old: value)

    def delete(self, key: str) -> None:
        self.store.state_update(self.namespace, key, lambda _old: None)

    def update(self, key: str, change: Callable[[Any], Any]) -> Any:
        return self.store.state_update(self.namespace, key, change)
