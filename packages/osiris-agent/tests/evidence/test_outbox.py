"""The durable outbox: a sink that is down for days gets every bundle
exactly once, in order, after it recovers; retries back off; a restart
keeps the position and the backoff; a crash between a sink's acknowledgement
and the cursor update re-sends the same item id (which sinks deduplicate)."""

import pytest

from osiris.evidence.bundle import SignedBundle
from osiris.evidence.keys import SigningKey
from osiris.evidence.note import parse_checkpoint
from osiris.evidence.outbox import Outbox

from .helpers import ORIGIN, fill, new_log


class Sink:
    """An idempotent store keyed by item id that can be switched off."""

    def __init__(self, name="central", kinds=("bundle", "checkpoint")):
        self.name = name
        self.kinds = kinds
        self.down = False
        self.attempts: list[str] = []
        self.stored: dict[str, bytes] = {}
        self.order: list[str] = []

    async def deliver(self, item_id: str, payload: bytes) -> None:
        self.attempts.append(item_id)
        if self.down:
            raise ConnectionRefusedError("connection refused")
        if item_id in self.stored:
            assert self.stored[item_id] == payload  # same id, same bytes
            return
        self.stored[item_id] = payload
        self.order.append(item_id)


@pytest.fixture
def key():
    return SigningKey.generate()


async def test_a_sink_down_for_three_days_gets_everything_once_in_order(tmp_path, key):
    log = new_log(tmp_path, key)
    sink = Sink()
    now = 1_000_000.0
    outbox = Outbox(log, [sink], backoff_initial=2, backoff_max=900, clock=lambda: now)
    sink.down = True
    fill(log, key, 25)
    log.checkpoint(key)
    waits = []
    end = now + 3 * 86400
    restarted = False
    while now < end:
        attempted = await outbox.drain(now=now)
        if attempted:
            assert len(attempted) == 1 and not attempted[0].ok  # one try per sink, then wait
        cur = log.cursor("central", "bundle")
        waits.append(cur["next_attempt_at"] - now)
        if not restarted and now > end - 86400:
            # The agent restarts: a new outbox on the same log keeps position and backoff.
            outbox = Outbox(log, [sink], backoff_initial=2, backoff_max=900, clock=lambda: now)  # noqa: B023 - follows the simulated time
            restarted = True
            assert log.cursor("central", "bundle")["attempts"] == cur["attempts"]
        fill(log, key, 1)  # evidence keeps arriving while the sink is down
        now = max(now + 1, cur["next_attempt_at"])
    attempts = len(sink.attempts)
    assert 3 * 86400 / 900 < attempts < 3 * 86400 / 900 * 2 + 20  # backed off, not hammered
    assert max(waits) <= 900 and waits[1] < waits[5] < waits[12]
    assert log.cursor("central", "bundle")["last_error"].startswith("ConnectionRefusedError")
    assert not sink.stored

    sink.down = False
    log.checkpoint(key)
    now += 900
    delivered = await outbox.drain(now=now)
    size = log.size()
    assert all(d.ok for d in delivered)
    bundles = [i for i in sink.order if not i.startswith("checkpoint-")]
    assert bundles == [log.entry(i).bundle_id for i in range(size)]  # every one, in order, once
    assert len(set(sink.order)) == len(sink.order)
    cps = [i for i in sink.order if i.startswith("checkpoint-")]
    assert [int(c.rsplit("-", 1)[1]) for c in cps] == [c.size for c in log.checkpoints()]
    assert await outbox.drain(now=now + 1) == []
    # What the sink holds verifies on its own.
    for item_id, payload in sink.stored.items():
        if item_id.startswith("checkpoint-"):
            parse_checkpoint(payload, key=key.verify_key, origin=ORIGIN)
        else:
            st = SignedBundle.from_envelope(payload).verify(key.verify_key)
            assert st["id"] == item_id
    assert outbox.pending("central") == {"bundle": 0, "checkpoint": 0}
    log.close()


async def test_a_crash_after_the_sink_acknowledged_resends_the_same_item(tmp_path, key, monkeypatch):
    log = new_log(tmp_path, key)
    fill(log, key, 3)
    sink = Sink(kinds=("bundle",))
    outbox = Outbox(log, [sink], clock=lambda: 0.0)
    real = log.advance_cursor
    calls = {"n": 0}

    def crash_once(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("power cut between the acknowledgement and the cursor update")
        return real(*args, **kw)

    monkeypatch.setattr(log, "advance_cursor", crash_once)
    with pytest.raises(KeyboardInterrupt):
        await outbox.drain()
    monkeypatch.setattr(log, "advance_cursor", real)
    outbox = Outbox(log, [sink], clock=lambda: 0.0)  # after the restart
    await outbox.drain()
    ids = [log.entry(i).bundle_id for i in range(3)]
    assert sink.attempts == [ids[0], ids[1], ids[1], ids[2]]  # the unacknowledged one again, same id
    assert sink.order == ids  # stored once each
    log.close()


async def test_sinks_are_independent_and_take_only_their_kinds(tmp_path, key):
    log = new_log(tmp_path, key)
    fill(log, key, 4)
    log.checkpoint(key)
    down, up, anchors = Sink("down"), Sink("up", kinds=("bundle",)), Sink("anchors", kinds=("checkpoint",))
    down.down = True
    outbox = Outbox(log, [down, up, anchors], clock=lambda: 0.0)
    await outbox.drain()
    assert len(up.order) == 4 and all(not i.startswith("checkpoint-") for i in up.order)
    assert anchors.order == [f"checkpoint-{key.verify_key.key_id(ORIGIN).hex()}-4"]
    assert down.order == [] and outbox.pending("down") == {"bundle": 4, "checkpoint": 1}
    with pytest.raises(ValueError, match="unknown kinds"):
        Outbox(log, [Sink("bad", kinds=("everything",))])
    log.close()


async def test_a_sink_never_gets_a_checkpoint_before_the_bundles_it_covers(tmp_path, key):
    # The race the running service can hit: bundles appended (and a
    # checkpoint made) while the sink's loop is past its bundles and on its
    # checkpoints. Asking for the checkpoint first is that moment, made certain.
    log = new_log(tmp_path, key)
    sink, anchors = Sink(), Sink("anchors", kinds=("checkpoint",))
    outbox = Outbox(log, [sink, anchors], clock=lambda: 0.0)
    fill(log, key, 3)
    log.checkpoint(key)
    assert await outbox.deliver_one("central", "checkpoint") is None  # its 3 bundles are not there yet
    assert (await outbox.deliver_one("anchors", "checkpoint")).ok  # a checkpoint-only sink need not wait
    await outbox.deliver_one("central", "bundle")
    await outbox.deliver_one("central", "bundle")
    assert await outbox.deliver_one("central", "checkpoint") is None  # 2 of 3
    await outbox.drain("central")
    ids = [log.entry(i).bundle_id for i in range(3)]
    assert sink.order == [*ids, f"checkpoint-{key.verify_key.key_id(ORIGIN).hex()}-3"]
    assert outbox.pending("central") == {"bundle": 0, "checkpoint": 0}
    log.close()


async def test_a_sink_added_after_a_prune_starts_at_the_first_unpruned_entry(tmp_path, key, caplog):
    from datetime import datetime, timedelta, timezone

    log = new_log(tmp_path, key)
    fill(log, key, 10, now=datetime.now(timezone.utc) - timedelta(days=2200))
    fill(log, key, 5)
    log.checkpoint(key)
    assert log.prune(datetime.now(timezone.utc) - timedelta(days=2192)) == 10  # no sink yet
    sink = Sink(kinds=("bundle",))
    outbox = Outbox(log, [sink])
    with caplog.at_level("WARNING", logger="osiris.evidence.log"):
        done = await outbox.drain()
    assert [d.ok for d in done] == [True] * 5 and [d.position for d in done] == [10, 11, 12, 13, 14]
    assert sink.order == [log.entry(i).bundle_id for i in range(10, 15)]
    cur = log.cursor("central", "bundle")
    assert cur["delivered"] == 15 and cur["last_error"] is None
    note = log._db.execute("SELECT value FROM meta WHERE key = 'sink_start/central'").fetchone()[0]
    assert note.startswith("started at index 10: entries [0, 10) were pruned")
    assert "evidence sink central: started at index 10" in caplog.text
    # An existing cursor is never moved: a sink that already had one keeps it.
    assert log.cursor("central", "bundle")["delivered"] == 15
    log.close()


async def test_a_delivery_timeout_names_the_sink_and_the_setting(tmp_path, key):
    import asyncio

    class Stuck(Sink):
        async def deliver(self, item_id, payload):
            await asyncio.sleep(60)

    log = new_log(tmp_path, key)
    fill(log, key, 1)
    outbox = Outbox(log, [Stuck(name="nas", kinds=("bundle",))], timeout=0.05)
    [d] = await outbox.drain()
    assert not d.ok
    assert d.error.startswith("DeliveryTimeout: sink nas did not finish delivering bundle ")
    assert "within 0.05 s (evidence.delivery_timeout is 0.05 s)" in d.error
    assert log.cursor("nas", "bundle")["last_error"] == d.error

    class Patient(Sink):
        delivery_timeout = 5.0

        async def deliver(self, item_id, payload):
            await asyncio.sleep(0.2)
            await super().deliver(item_id, payload)

    patient = Patient(name="slow", kinds=("bundle",))
    outbox = Outbox(log, [patient], timeout=0.05)
    assert outbox.timeout_for("slow") == 5.0
    [d] = await outbox.drain()
    assert d.ok and patient.order == [log.entry(0).bundle_id]
    log.close()


async def test_an_entry_pruned_by_hand_before_delivery_is_reported_and_holds_the_sink(tmp_path, key):
    """prune() refuses to drop what a sink has not had; a log pruned around
    it (by hand, in SQL) must give the sink a named error, not a stall or a crash."""
    from datetime import datetime, timedelta, timezone

    log = new_log(tmp_path, key)
    fill(log, key, 3, now=datetime.now(timezone.utc) - timedelta(days=2200))  # past retention
    sink = Sink(kinds=("bundle",))
    outbox = Outbox(log, [sink], backoff_max=60.0)
    assert log.cursor("central", "bundle")["delivered"] == 0
    with log._db:
        log._db.execute("UPDATE entries SET body = NULL, sig = NULL, seg = NULL WHERE idx = 0")
    d = await outbox.deliver_one("central", "bundle", now=1000.0)
    assert not d.ok and d.position == 0 and d.error == "entry 0 was pruned before delivery"
    cur = log.cursor("central", "bundle")
    assert cur["delivered"] == 0 and cur["last_error"] == d.error and cur["next_attempt_at"] == 1060.0
    assert await outbox.deliver_one("central", "bundle", now=1059.0) is None  # held until then
    assert sink.attempts == []
    log.close()
