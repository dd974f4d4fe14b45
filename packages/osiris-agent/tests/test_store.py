import sqlite3

import pytest

from osiris.records import Observation, Status
from osiris.store import MIGRATIONS, Store, StoreError


def obs(status="fail", target="h1", check="a.b"):
    return Observation(target, check, Status(status), "reason", {"k": 1})


def record(store, observation):
    """One observation through the sweep's path (a batch of one)."""
    [result] = store.record_many([observation])
    return result


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
    o1, inc, new = record(store, obs())
    assert new and inc.occurrences == 1
    _o2, again, new2 = record(store, obs())
    assert not new2 and again.id == inc.id and again.occurrences == 2
    assert store.incident(inc.id).occurrences == 2
    # A pass returns the open incident (the engine decides who resolves it).
    _o3, open_, new3 = record(store, obs("pass"))
    assert open_.id == inc.id and not new3
    # The database itself refuses a second open incident.
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute(
            "INSERT INTO incidents (target, check_id, state, opened_at, updated_at, first_observation_id, "
            "last_observation_id) VALUES ('h1', 'a.b', 'open', 'x', 'x', ?, ?)", (o1, o1))


def test_count_status_counts_the_latest_state_per_target_and_check(tmp_path):
    store = Store(tmp_path)
    for o in (obs("fail", "h1", "a"), obs("fail", "h2", "a"), obs("fail", "h1", "b"), obs("pass", "h1", "b"),
              obs("error", "h3", "a")):
        record(store, o)
    assert [store.count_status(s) for s in ("fail", "pass", "error")] == [2, 1, 1]
    assert store.count_status("fail") == sum(1 for r in store.latest() if r["status"] == "fail")


def test_resolve_stores_outcome_and_refuses_twice(tmp_path):
    store = Store(tmp_path)
    _oid, inc, _ = record(store, obs())
    done = store.resolve_incident(inc.id, "healed", "L1", "runbook x")
    assert (done.state, done.outcome, done.tier, done.detail) == ("resolved", "healed", "L1", "runbook x")
    assert done.resolved_at
    with pytest.raises(StoreError, match="already resolved"):
        store.resolve_incident(inc.id, "healed", "L1")
    with pytest.raises(StoreError, match="outcome 'fixed'"):
        store.resolve_incident(inc.id, "fixed")
    with pytest.raises(StoreError, match="no such incident"):
        store.resolve_incident(999, "healed")
    # A new failure after a fix opens a new incident.
    _oid, inc2, new = record(store, obs())
    assert new and inc2.id != inc.id


def test_drift_episode_set_aside_opens_nothing_until_a_pass(tmp_path):
    store = Store(tmp_path)
    _oid, inc, _ = record(store, obs())
    store.resolve_incident(inc.id, "escalated", "L3", "told the MSP")
    assert record(store, obs())[1:] == (None, False), "same episode: parked"
    _oid, err, new = record(store, obs("error"))
    assert err is None and not new
    record(store, obs("pass"))
    _oid, inc2, new = record(store, obs())
    assert new and inc2.id != inc.id, "a pass ends the episode"
    store.resolve_incident(inc2.id, "error", "none", "ladder bug")
    _oid, inc3, new = record(store, obs())
    assert new and inc3.id != inc2.id, "an error decides nothing: the drift is tried again"


def test_a_batch_is_recorded_as_one_at_a_time_would_be(tmp_path):
    batch = [obs("fail", "h1", "a"), obs("fail", "h1", "b"), obs("pass", "h1", "c"), obs("error", "h1", "d")]
    one, many = Store(tmp_path / "one"), Store(tmp_path / "many")
    for round_ in range(2):  # opened, then counted again
        singles = [record(one, o) for o in batch]
        together = many.record_many(batch)
        def shape(results):
            return [(i and (i.id, i.check_id, i.state, i.occurrences), n) for _, i, n in results]
        assert shape(together) == shape(singles)
        assert [inc.occurrences for _, inc, _ in together[:2]] == [round_ + 1] * 2
    assert many.latest() == one.latest() and many.count_incidents() == {"open": 2, "resolved": 0}



def test_a_batch_repeating_checks_is_recorded_as_one_at_a_time_would_be(tmp_path):
    """A batch may hold many results of one check (an endpoint's replayed
    queue): the store remembers each check's status and open incident
    within the transaction instead of asking again, and must end with the
    same observations, history, state and incidents, and answer the same,
    as recording them one by one; duplicates and parked episodes included."""
    import random
    from datetime import datetime, timedelta, timezone

    rng = random.Random(11)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    one, many = Store(tmp_path / "one"), Store(tmp_path / "many")
    seq = 0
    for round_ in range(12):
        batch = []
        for _ in range(rng.randrange(1, 40)):
            seq += 1
            report = f"r{rng.randrange(1, seq + 1)}" if rng.random() < 0.15 else f"r{seq}"  # some redelivered
            batch.append(Observation(rng.choice(["h1", "h2"]), rng.choice(["a", "b"]),
                                     Status(rng.choice(["pass", "fail", "fail", "error"])), f"reason {seq % 3}",
                                     {"n": seq}, t0 + timedelta(seconds=seq), 1.0, report))
        singles = [one.record_many([o])[0] for o in batch]
        together = many.record_many(batch)

        def shape(results):
            return [r and (r[0], r[1] and (r[1].id, r[1].target, r[1].check_id, r[1].state, r[1].occurrences),
                           r[2]) for r in results]

        assert shape(together) == shape(singles), f"round {round_}"
        for store in (one, many):  # set an episode aside now and then: parked drift opens nothing
            for inc in store.incidents("open"):
                if inc.id % 3 == round_ % 3:
                    store.resolve_incident(inc.id, "escalated", "L3", "told the MSP")

    def dump(store):
        db = store.db
        return ([tuple(r) for r in db.execute("SELECT id, target, check_id, status, reason, facts, observed_at, "
                                              "report_id FROM observations ORDER BY id")],
                [tuple(r) for r in db.execute("SELECT target, check_id, status, reason, since FROM check_history "
                                              "ORDER BY rowid")],
                [tuple(r) for r in db.execute("SELECT * FROM check_state ORDER BY target, check_id")],
                [tuple(r) for r in db.execute("SELECT id, target, check_id, state, occurrences, "
                                              "first_observation_id, last_observation_id FROM incidents ORDER BY id")])

    assert dump(many) == dump(one)
    assert len(dump(one)[1]) > 8 and len(dump(one)[3]) > 3  # history and incidents were exercised

def test_state_files_are_not_world_readable(tmp_path):
    store = Store(tmp_path / "s")
    record(store, obs())
    for p in (tmp_path / "s").iterdir():
        assert p.stat().st_mode & 0o007 == 0, p


def test_keyed_state_is_durable_namespaced_and_changes_atomically(tmp_path):
    from osiris.store import KeyedState

    store = Store(tmp_path / "state")
    mine, other = KeyedState(store, "endpoints"), KeyedState(store, "other")
    mine.put("endpoint/ws01", {"serial": 7})
    mine.put("token/abc", {"uses": 1})
    other.put("endpoint/ws01", "not mine")
    assert mine.get("endpoint/ws01") == {"serial": 7} and other.get("endpoint/ws01") == "not mine"
    assert mine.items("endpoint/") == [("endpoint/ws01", {"serial": 7})]

    def take(token):
        if token is None or token["uses"] < 1:
            raise ValueError("used up")
        return {"uses": token["uses"] - 1}

    assert mine.update("token/abc", take) == {"uses": 0}
    with pytest.raises(ValueError, match="used up"):
        mine.update("token/abc", take)
    assert mine.get("token/abc") == {"uses": 0}  # the failed change left it as it was
    mine.delete("token/abc")
    store.close()
    again = KeyedState(Store(tmp_path / "state"), "endpoints")
    assert again.get("token/abc") is None and again.get("endpoint/ws01") == {"serial": 7}
    again.store.close()
