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


async def test_failing_check_opens_one_incident_and_recovery_resolves_it(setup):
    module, loaded, store, engine = setup
    for _ in range(3):
        await engine.sweep(force=True, only_checks={"test.value"})
    [inc] = store.incidents("open")
    assert inc.check_id == "test.value" and inc.occurrences == 3
    module.STATE["value"] = "good"
    await engine.sweep(force=True, only_checks={"test.value"})
    assert store.incidents("open") == []
    [done] = store.incidents("resolved")
    assert (done.id, done.outcome, done.tier) == (inc.id, "recovered", "none")


async def test_incident_resolved_with_an_outcome_is_stored(setup):
    module, loaded, store, engine = setup
    module.STATE["value"] = "bad"
    events = []

    async def listener(event):
        events.append(event.kind)

    engine.listeners.append(listener)
    await engine.sweep(force=True, only_checks={"test.value"})
    [inc] = store.incidents("open")
    await engine.resolve(inc.id, "escalated", "L3", "paged the MSP")
    again = Store(loaded.ctx.state_dir).incident(inc.id)
    assert (again.state, again.outcome, again.tier, again.detail) == ("resolved", "escalated", "L3", "paged the MSP")
    assert events == ["opened", "resolved"]


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
            await until(lambda: engine.heartbeat != beat, "the next heartbeat")
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
