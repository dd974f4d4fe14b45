import sqlite3

import pytest

from osiris.records import Observation, Status
from osiris.store import MIGRATIONS, Store, StoreError


def obs(status="fail", target="h1", check="a.b"):
    return Observation(target, check, Status(status), "reason", {"k": 1})


def test_wal_mode_and_schema_version(tmp_path):
    store = Store(tmp_path / "state")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    # Reopening does not re-run migrations.
    assert Store(tmp_path / "state").schema_version == len(MIGRATIONS)


def test_database_from_the_future_is_refused(tmp_path):
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "osiris.sqlite3")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this agent"):
        Store(tmp_path)


def test_failed_migration_leaves_the_old_version(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(StoreError, match="migration"):
        store.migrate([*MIGRATIONS, "CREATE TABLE ok_table (x); CREATE TABLE broken ("])
    assert store.schema_version == len(MIGRATIONS)
    names = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master")}
    assert "ok_table" not in names


def test_one_open_incident_per_target_and_check(tmp_path):
    store = Store(tmp_path)
    o1 = store.add_observation(obs())
    inc, new = store.open_incident("h1", "a.b", o1)
    assert new
    o2 = store.add_observation(obs())
    again, new2 = store.open_incident("h1", "a.b", o2)
    assert not new2 and again.id == inc.id and again.occurrences == 2
    # The database itself refuses a second open incident.
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute(
            "INSERT INTO incidents (target, check_id, state, opened_at, updated_at, first_observation_id, "
            "last_observation_id) VALUES ('h1', 'a.b', 'open', 'x', 'x', ?, ?)", (o1, o1))


def test_resolve_stores_outcome_and_refuses_twice(tmp_path):
    store = Store(tmp_path)
    inc, _ = store.open_incident("h1", "a.b", store.add_observation(obs()))
    done = store.resolve_incident(inc.id, "healed", "L1", "runbook x")
    assert (done.state, done.outcome, done.tier, done.detail) == ("resolved", "healed", "L1", "runbook x")
    assert done.resolved_at
    with pytest.raises(StoreError, match="already resolved"):
        store.resolve_incident(inc.id, "healed", "L1")
    with pytest.raises(StoreError, match="outcome 'fixed'"):
        store.resolve_incident(inc.id, "fixed")
    with pytest.raises(StoreError, match="no such incident"):
        store.resolve_incident(999, "healed")
    # A new failure after resolution opens a new incident.
    inc2, new = store.open_incident("h1", "a.b", store.add_observation(obs()))
    assert new and inc2.id != inc.id


def test_state_files_are_not_world_readable(tmp_path):
    store = Store(tmp_path / "s")
    store.add_observation(obs())
    for p in (tmp_path / "s").iterdir():
        assert p.stat().st_mode & 0o007 == 0, p
