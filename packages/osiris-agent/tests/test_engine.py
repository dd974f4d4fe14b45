"""Engine: scheduling, incidents, resolution, and one slow host never
holding up the others."""

import asyncio
import time

import pytest

from osiris.app import load
from osiris.engine import Engine
from osiris.store import Store

PLUGIN = '''
import threading
from osiris import CheckSpec, Status, Verdict, hookimpl

# "hang": the slow host's probe blocks until the test releases it (or, if
# the test never does, for 60 s), however fast or slow this machine is.
STATE = {"value": "bad", "hanging": threading.Event(), "release": threading.Event(),
         "returned": threading.Event()}

def probe(params):
    if params.get("hang"):
        STATE["hanging"].set()
        STATE["release"].wait(60)
        STATE["returned"].set()
    return {"value": STATE["value"]}

def evaluate(facts, params):
    if facts["value"] == "boom":
        raise ValueError("unparseable")
    return Verdict(Status.PASS if facts["value"] == "good" else Status.FAIL, f"value={facts['value']}")

@hookimpl
def osiris_checks(ctx):
    return [
        CheckSpec(id="test.value", title="value", target_kind="local", hipaa=("164.312(b)",),
                  probe=probe, evaluate=evaluate, interval=60),
        CheckSpec(id="test.slow", title="slow", target_kind="local", hipaa=("164.312(b)",),
                  probe=probe, evaluate=evaluate, interval=60, timeout=0.5, params={"hang": True}),
    ]
'''


@pytest.fixture
def setup(plugin_module, write_config):
    mod = plugin_module("engine_test_plugin", PLUGIN)
    import importlib

    module = importlib.import_module(mod)
    cfg = write_config({"plugin_modules": [mod], "checks": {"test.slow": {"enabled": False}}})
    loaded = load(cfg, environ={"OSIRIS_PLUGINS": "none"})
    store = Store(loaded.ctx.state_dir)
    engine = Engine(loaded.registry, store, loaded.targets)
    yield module, loaded, store, engine
    loaded.ctx.close()


class Downstream:
    """The next stage, as the engine sees it: it is handed batches."""

    def __init__(self):
        self.batches = []

    async def accept(self, batch):
        self.batches.append(batch)


async def test_failing_check_opens_one_incident_and_hands_every_result_downstream(setup):
    module, loaded, store, engine = setup
    engine.downstream = down = Downstream()
    for _ in range(3):
        await engine.sweep(force=True, only_checks={"test.value"})
    [inc] = store.incidents("open")
    assert inc.check_id == "test.value" and inc.occurrences == 3
    assert [(b.origin, b.target.name, [c.id for c in b.checks]) for b in down.batches] == \
        [("sweep", "appliance", ["test.value"])] * 3
    assert [(r.incident.id, r.new) for b in down.batches for r in b.recorded] == \
        [(inc.id, True), (inc.id, False), (inc.id, False)]


async def test_the_engine_never_ends_an_incident_a_pass_goes_downstream_with_it(setup):
    """Ending incidents is the ladder's (one way: the engine never asks
    downstream who owns what); the pass reaches it with the open incident."""
    module, loaded, store, engine = setup
    engine.downstream = down = Downstream()
    await engine.sweep(force=True, only_checks={"test.value"})
    [inc] = store.incidents("open")
    module.STATE["value"] = "good"
    await engine.sweep(force=True, only_checks={"test.value"})
    assert [i.id for i in store.incidents("open")] == [inc.id]
    [r] = down.batches[-1].recorded
    assert r.observation.status.value == "pass" and r.incident.id == inc.id and not r.new


async def test_pushed_observations_are_recorded_and_handed_on_as_a_push(setup):
    from osiris.records import Observation, Status, utcnow

    module, loaded, store, engine = setup
    engine.downstream = down = Downstream()
    await engine.submit(Observation("ws07", "test.value", Status.FAIL, "value=bad", {"value": "bad"}, utcnow()))
    [inc] = store.incidents("open")
    [batch] = down.batches
    assert (batch.origin, batch.target, [c.id for c in batch.checks]) == ("push", None, ["test.value"])
    assert (inc.target, batch.recorded[0].incident.id, batch.recorded[0].new) == ("ws07", inc.id, True)


async def test_a_broken_downstream_stage_does_not_stop_the_sweep(setup):
    module, loaded, store, engine = setup

    class Broken:
        async def accept(self, batch):
            raise RuntimeError("boom")

    engine.downstream = Broken()
    [o] = await engine.sweep(force=True, only_checks={"test.value"})
    assert o.status.value == "fail" and "RuntimeError: boom" in engine.last_error
    assert store.latest()[0]["status"] == "fail", "recorded before it was handed on"


async def test_evaluator_exception_is_an_error_for_that_check(setup):
    module, loaded, store, engine = setup
    module.STATE["value"] = "boom"
    [o] = await engine.sweep(force=True, only_checks={"test.value"})
    assert o.status.value == "error" and "unparseable" in o.reason and o.facts == {"value": "boom"}
    assert store.incidents("open") == [], "an error is not drift"


async def test_scheduler_respects_intervals(setup):
    module, loaded, store, engine = setup
    assert "test.value" in [c.id for c in engine.due()["appliance"]]
    await engine.sweep(only_checks={"test.value"})
    assert engine.due().get("appliance", []) == []


async def test_slow_target_does_not_stall_heartbeat_or_others(plugin_module, write_config):
    import importlib

    mod = plugin_module("engine_test_plugin2", PLUGIN)
    module = importlib.import_module(mod)
    cfg = write_config({"plugin_modules": [mod], "agent": {"tick": 0.05, "http": {"port": 0}}})
    loaded = load(cfg, environ={"OSIRIS_PLUGINS": "none"})
    store = Store(loaded.ctx.state_dir)
    engine = Engine(loaded.registry, store, loaded.targets, tick=0.05)
    hanging, release, returned = (module.STATE[k] for k in ("hanging", "release", "returned"))
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))

    async def until(pred, what, timeout=60.0):
        # The timeout only stops a hang; nothing here depends on speed.
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            await asyncio.sleep(0.01)

    try:
        await until(hanging.is_set, "the slow probe to start")
        # The heart keeps beating (the scheduler loop keeps ticking) while the
        # host's probe hangs in its thread: three fresh beats, each seen
        # before the probe was let go.
        for _ in range(3):
            beat = engine.heartbeat
            await until(lambda beat=beat: engine.heartbeat != beat, "the next heartbeat")
            assert not returned.is_set() and engine.alive()
        await until(lambda: "test.slow" in {r["check_id"] for r in store.latest()}, "the slow check's result")
        states = {r["check_id"]: r for r in store.latest()}
        # The fast check answered long before the slow one timed out.
        assert states["test.value"]["observed_at"] < states["test.slow"]["observed_at"]
        assert states["test.slow"]["status"] == "error" and "longer than 0.5 s" in states["test.slow"]["reason"]
        assert not returned.is_set(), "timed out while the probe still hung, not after it returned"
    finally:
        release.set()
        stop.set()
        await task
        loaded.ctx.close()


async def test_a_pushed_batch_is_stored_once_per_report_id_and_handed_on_per_target(setup):
    """A source that delivers again (an endpoint replaying what it was not
    sure of) is stored once: the store knows each report_id."""
    from osiris.records import Observation, Status, utcnow

    module, loaded, store, engine = setup
    engine.downstream = down = Downstream()

    def report(target, n, value="bad"):
        return Observation(target, "test.value", Status.FAIL, f"value={value}", {"value": value}, utcnow(),
                           report_id=f"endpoint/{target}/q/{n}")

    await engine.submit([report("ws07", 1), report("ws08", 1), report("ws07", 2)])
    assert sorted((b.recorded[0].observation.target, len(b.recorded)) for b in down.batches) == [("ws07", 2), ("ws08", 1)]
    await engine.submit([report("ws07", 2), report("ws07", 3), report("ws07", 3)])
    assert [len(b.recorded) for b in down.batches[2:]] == [1]
    rows = [r for r in (store.observation(i) for i in range(1, 10) if _exists(store, i))]
    assert sorted(r["report_id"] for r in rows) == ["endpoint/ws07/q/1", "endpoint/ws07/q/2", "endpoint/ws07/q/3",
                                                    "endpoint/ws08/q/1"]
    assert store.has_report("endpoint/ws07/q/3") and not store.has_report("endpoint/ws07/q/4")


def _exists(store, oid):
    from osiris.store import StoreError
    try:
        store.observation(oid)
        return True
    except StoreError:
        return False
