"""The state database stays bounded: old observations are deleted (never
the ones still referred to) and the WAL file is cut back."""

import time
from datetime import datetime, timedelta, timezone

from osiris.records import Observation, Status
from osiris.store import JOURNAL_SIZE_LIMIT, Retention, Store

NOW = datetime.now(timezone.utc)


def at(days_ago, status="pass", target="h1", check="a.b", facts=None):
    return Observation(target, check, Status(status), "reason", facts or {"k": 1}, NOW - timedelta(days=days_ago))


def record(store, observation):
    """One observation through the sweep's path (a batch of one)."""
    [result] = store.record_many([observation])
    return result


def ids(store):
    return {r[0] for r in store.db.execute("SELECT id FROM observations")}


def wait_until(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_prune_deletes_old_observations_but_keeps_what_is_referred_to(tmp_path):
    store = Store(tmp_path)
    old = [record(store, at(50 - i))[0] for i in range(5)]          # h1/a.b passing, 50..46 days ago
    first, inc, _ = record(store, at(45, "fail", "h2", "c.d"))         # an incident opened 45 days ago...
    middle = record(store, at(44, "fail", "h2", "c.d"))[0]
    last = record(store, at(43, "fail", "h2", "c.d"))[0]               # ...still open, last seen 43 days ago
    resolved_first, inc3, _ = record(store, at(42, "fail", "h3", "e.f"))
    store.resolve_incident(inc3.id, "dismissed")                     # a resolved incident's rows are kept too
    record(store, at(41, "pass", "h3", "e.f"))                         # and this is h3/e.f's latest
    recent = record(store, at(1))[0]
    deleted = store.prune_observations(NOW - timedelta(days=30), batch=2)  # small batches: the loop is exercised
    left = ids(store)
    assert set(old).isdisjoint(left) and middle not in left
    assert {first, last, resolved_first} <= left, "incidents' first and last observations are kept"
    latest = {r["observation_id"] for r in store.latest()}
    assert latest <= left and recent in left, "the latest status per check is kept"
    assert deleted == 6 and store.last_observation_of(inc.id)["id"] == last
    assert store.prune_observations(NOW - timedelta(days=30)) == 0
    store.close()


def test_the_agent_store_prunes_in_the_background(tmp_path):
    store = Store(tmp_path, retention=Retention(days=1, interval=0.05))
    try:
        for i in range(50):
            record(store, at(10 + i / 100, check=f"c{i % 5}"))
        record(store, at(0))
        assert wait_until(lambda: len(ids(store)) == 6), len(ids(store))  # the latest of c0..c4 and a.b
        assert store.upkeep()["pruned"] == 45 and store.upkeep()["last_error"] is None
    finally:
        store.close()


def test_the_wal_file_is_cut_back_after_a_burst(tmp_path):
    store = Store(tmp_path)
    wal = tmp_path / "osiris.sqlite3-wal"
    try:
        blob = "x" * 4000
        store.record_many([at(0, check=f"c{i}", facts={"blob": blob, "i": i}) for i in range(6000)])  # ~25 MB
        assert wal.stat().st_size > 2 * JOURNAL_SIZE_LIMIT

        def cut_back():
            record(store, at(0))  # a write after a complete checkpoint restarts the WAL, cut to the limit
            return wal.stat().st_size <= JOURNAL_SIZE_LIMIT

        assert wait_until(cut_back), wal.stat().st_size
        store.checkpoint()
        assert wal.stat().st_size == 0
    finally:
        store.close()


def test_the_agent_prunes_by_its_config_and_shows_it_in_status(write_config):
    from osiris.app import load
    from osiris.runtime import Agent

    agent = Agent(load(write_config({"store": {"retention_days": 1, "prune_interval": 0.05}})))
    try:
        for _ in range(20):
            record(agent.store, at(5))
        record(agent.store, at(0))
        assert wait_until(lambda: len(ids(agent.store)) == 1)
        assert agent.status()["store"]["pruned"] == 20
    finally:
        agent.ctx.close()
        agent.store.close()
