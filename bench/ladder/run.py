"""Drift-to-dispatch latency inside the agent.

An observation goes in (``Engine.record``: SQLite write, incident opened,
ladder told), the ladder matches an L1 rule and dispatches the runbook to
the executor. The executor is stubbed at that boundary: it notes the time
of dispatch and answers at once, so what is measured is the agent's own
work. Observations arrive at a fixed rate (default 1,000/s), each a new
drift on its own host, with the real state store on disk.

Prints p50 / p99 / max latency, the observation rate sustained, and the
ratio of p99 to the 20 ms target.

    .venv/bin/python bench/ladder/run.py [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TARGET_P99_MS = 20.0

PLUGIN = '''
import time
from osiris import CheckSpec, Observation, Risk, RunbookResult, RunbookSpec, Status, Verdict, hookimpl
from osiris.flow import evaluate

DISPATCHED = {}

class StubExecutor:
    kind = "bench"
    async def observe(self, target, checks, *, deadline):
        return [evaluate(target, c, {"ok": True}) for c in checks]
    async def run_runbook(self, target, runbook, params, *, deadline):
        DISPATCHED[target.name] = time.perf_counter()
        return RunbookResult(target.name, runbook.id, True, "stub")

@hookimpl
def osiris_executors(ctx):
    return StubExecutor()

@hookimpl
def osiris_checks(ctx):
    return CheckSpec(id="bench.setting", title="bench", target_kind="bench", hipaa=("164.312(b)",),
                     script="# bench", evaluate=lambda f, p: Verdict(Status.PASS if f.get("ok") else Status.FAIL, "x"))

@hookimpl
def osiris_runbooks(ctx):
    return RunbookSpec(id="bench.fix", title="fix", target_kind="bench", fixes=("bench.setting",),
                       risk=Risk.LOW, script="# fix")
'''

RULES = """
rules:
  - id: bench-fix
    match: {check: bench.setting}
    action: {runbook: bench.fix}
"""


async def main(rate: float, seconds: float) -> int:
    import logging

    logging.basicConfig(level=logging.ERROR)  # one log line per incident would dominate
    from osiris.app import load
    from osiris.engine import Engine
    from osiris.healing.ladder import Ladder
    from osiris.records import Observation, Status
    from osiris.store import Store

    n = int(rate * seconds)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "bench_ladder_plugin.py").write_text(textwrap.dedent(PLUGIN))
        sys.path.insert(0, str(tmp))
        (tmp / "state" / "rules").mkdir(parents=True)
        (tmp / "state" / "rules" / "bench.yaml").write_text(RULES)
        config = {
            "state_dir": str(tmp / "state"),
            "agent": {"check_self": False},
            "plugin_modules": ["bench_ladder_plugin"],
            "healing": {"mode": "standard"},
            "targets": [{"name": f"ws{i:05d}", "kind": "bench", "role": "workstation"} for i in range(n)],
        }
        loaded = load(config_data=config, environ={"OSIRIS_PLUGINS": "none"})
        import bench_ladder_plugin as plugin

        store = Store(loaded.ctx.state_dir)
        ladder = Ladder(loaded.ctx, loaded.pm, loaded.registry, store, loaded.config.healing, loaded.targets)
        engine = Engine(loaded.registry, store, loaded.targets, downstream=ladder)
        ladder.start()
        assert len(ladder.rules.rules) == 1, ladder.rule_errors

        # Side by side: how late the event loop itself wakes a 1 ms sleeper
        # meanwhile. On a shared, noisy machine this separates the agent's
        # latency from time the process simply was not running.
        lags: list[float] = []
        stop = asyncio.Event()

        async def loop_lag() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append((time.perf_counter() - t - 0.001) * 1000)

        probe = asyncio.create_task(loop_lag())
        sent: dict[str, float] = {}
        start = time.perf_counter()
        for i, target in enumerate(loaded.targets):
            due = start + i / rate
            # A real source awaits its socket between observations; sleep(0)
            # when behind schedule keeps that yield point.
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            sent[target.name] = time.perf_counter()
            await engine.submit(Observation(target.name, "bench.setting", Status.FAIL, "drift", {"ok": False}))
        feed_done = time.perf_counter()
        await ladder.drain()
        end = time.perf_counter()
        stop.set()
        await probe

        lat = sorted((plugin.DISPATCHED[t] - sent[t]) * 1000 for t in sent if t in plugin.DISPATCHED)
        healed = store.count_incidents()
        loaded.ctx.close()
        store.close()

    missing = n - len(lat)
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    sustained = n / (feed_done - start)
    print(f"bench/ladder: {n} observations offered at {rate:.0f}/s, real SQLite state, executor stubbed at dispatch")
    print(f"  dispatched           {len(lat)} (missing {missing}); incidents {healed}")
    print(f"  drift->dispatch p50  {p50:8.2f} ms")
    print(f"  drift->dispatch p99  {p99:8.2f} ms   (target <= {TARGET_P99_MS:.0f} ms: ratio p99/target = {p99 / TARGET_P99_MS:.2f})")
    print(f"  drift->dispatch max  {lat[-1]:8.2f} ms")
    lags.sort()
    lag99 = lags[int(0.99 * (len(lags) - 1))]
    print(f"  event-loop lag p99   {lag99:8.2f} ms   (same run; dispatch p99 / loop lag p99 = {p99 / max(lag99, 1e-3):.1f})")
    print(f"  sustained            {sustained:8.0f} observations/s offered; all healed and verified "
          f"{end - start:.2f} s after the first")
    ok = missing == 0 and p99 <= TARGET_P99_MS and sustained >= 0.95 * rate
    print("  verdict              " + ("PASS" if ok else "MISS"))
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    sys.exit(asyncio.run(main(args.rate, args.seconds)))
