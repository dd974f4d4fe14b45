"""The local HTTP API: ``/health``, ``/metrics`` (Prometheus text format),
``/status``, rule candidates, ``/sweep``; and the status page (HTML,
:mod:`osiris.web`) on the same app. Bound to loopback by default; it
exposes no secrets and no facts, only states and counts. What a request
that changes something must look like is :mod:`osiris.api_guard`; who may
see and act off loopback, :mod:`osiris.web.auth`."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import __version__
from .api_guard import BadRequest, guard, read_json


class _Collector:
    """Reads the engine and store at scrape time, so metrics are never stale
    copies kept in step by hand."""

    def __init__(self, agent: Any):
        self.agent = agent

    def collect(self):
        engine = self.agent.engine
        store = self.agent.store
        info = GaugeMetricFamily("osiris_agent_info", "Agent version and site", labels=["version", "site"])
        info.add_metric([__version__, self.agent.ctx.site.id], 1)
        yield info
        yield GaugeMetricFamily("osiris_up", "1 while the check loop is alive", value=1 if engine.alive() else 0)
        yield GaugeMetricFamily("osiris_uptime_seconds", "Seconds since the engine started", value=engine.uptime())
        yield CounterMetricFamily("osiris_sweeps", "Completed forced or one-shot sweeps", value=engine.sweeps)
        obs = CounterMetricFamily("osiris_observations", "Observations recorded since start", labels=["status"])
        for status, n in sorted(engine.observations_total.items()):
            obs.add_metric([status], n)
        yield obs
        yield CounterMetricFamily("osiris_incidents_opened", "Incidents opened since start", value=engine.incidents_opened)
        res = CounterMetricFamily("osiris_incidents_resolved", "Incidents resolved since start", labels=["outcome"])
        for outcome, n in sorted(self.agent.ladder.resolved.items()):
            res.add_metric([outcome], n)
        yield res
        counts = store.count_incidents()
        inc = GaugeMetricFamily("osiris_incidents", "Incidents in the store by state", labels=["state"])
        for state, n in sorted(counts.items()):
            inc.add_metric([state], n)
        yield inc
        checks = GaugeMetricFamily(
            "osiris_check_status", "Latest status per target and check (1 = this status)",
            labels=["target", "check", "status"],
        )
        for row in store.latest():
            checks.add_metric([row["target"], row["check_id"], row["status"]], 1)
        yield checks
        yield GaugeMetricFamily("osiris_targets_in_flight", "Targets being observed now", value=len(engine.in_flight()))
        evidence = getattr(self.agent, "evidence", None)
        if evidence is not None:
            st = evidence.status()
            yield GaugeMetricFamily("osiris_evidence_entries", "Bundles in the evidence log", value=st["entries"])
            yield GaugeMetricFamily("osiris_evidence_checkpoint_size", "Tree size of the latest signed checkpoint",
                                    value=(st["checkpoint"] or {}).get("size", 0))
            pending = GaugeMetricFamily("osiris_evidence_sink_pending", "Items waiting in a sink's outbox",
                                        labels=["sink", "kind"])
            for sink, kinds in sorted(st["sinks"].items()):
                for kind, n in sorted(kinds.items()):
                    pending.add_metric([sink, kind], n)
            yield pending
        ladder = self.agent.ladder
        yield GaugeMetricFamily("osiris_rules_loaded", "L1 rules in force", value=len(ladder.rules.rules))
        yield GaugeMetricFamily("osiris_rules_errors", "Problems in rule files (last good set kept)",
                                value=len(ladder.rule_errors))
        yield GaugeMetricFamily("osiris_healing_active", "Incidents being healed now", value=len(ladder.active_incidents()))


def make_app(agent: Any) -> web.Application:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Collector(agent))

    async def health(_request: web.Request) -> web.Response:
        engine = agent.engine
        alive = engine.alive()
        body = {
            "status": "ok" if alive else "stalled",
            "alive": alive,
            "heartbeat_age_s": round(engine.heartbeat_age(), 3),
            "version": __version__,
        }
        return web.json_response(body, status=200 if alive else 503)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(_request: web.Request) -> web.Response:
        return web.json_response(agent.status())

    async def _candidate_response(fn, cid: int, by: str) -> web.Response:
        from .store import StoreError

        try:
            c = fn(cid, by)
        except StoreError as exc:
            return web.json_response({"error": str(exc)}, status=409 if "already" in str(exc) else 400)
        agent.ladder.reload()
        if agent.ctx.evidence is not None:
            await agent.ctx.evidence.record("rule_decision", c.as_dict())
        return web.json_response(c.as_dict())

    async def candidates(_request: web.Request) -> web.Response:
        return web.json_response([c.as_dict() for c in agent.ladder.learning.candidates(None)])

    async def decide(request: web.Request) -> web.Response:
        # Approving a rule changes what runs on the practice's machines:
        # only from the appliance itself (api_guard), whatever address the
        # API listens on.
        try:
            body = await read_json(request)
        except BadRequest as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        try:
            cid = int(request.match_info["id"])
            by = body["by"]
            if not isinstance(by, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected JSON body {\"by\": \"<approver name>\"}"}, status=400)
        learning = agent.ladder.learning
        fn = learning.approve if request.match_info["decision"] == "approve" else learning.reject
        return await _candidate_response(fn, cid, by)

    async def sweep(request: web.Request) -> web.Response:
        # `osiris sweep --now`: observe now rather than at the schedule's
        # next turn; healing follows in the background as usual.
        try:
            body = await read_json(request)
            wanted = body.get("targets", []) if isinstance(body, dict) else None
            if not isinstance(wanted, list) or not all(isinstance(t, str) for t in wanted):
                raise BadRequest('expected JSON body {"targets": ["<target>", ...]}')
        except BadRequest as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        unknown = sorted(set(wanted) - set(agent.engine.targets))
        if unknown:
            return web.json_response({"error": f"no such target: {', '.join(unknown)} "
                                               f"(known: {', '.join(sorted(agent.engine.targets))})"}, status=400)
        observations = await agent.engine.sweep(force=True, only_targets=set(wanted) or None)
        hosts: dict[str, dict[str, Any]] = {}
        for o in observations:
            h = hosts.setdefault(o.target, {"host": o.target, "pass": 0, "fail": 0, "error": 0})
            h[o.status.value] += 1
        return web.json_response({"hosts": sorted(hosts.values(), key=lambda h: (-h["fail"], h["host"])),
                                  "healing": len(agent.ladder.active_incidents())})

    from .web import install

    app = web.Application(client_max_size=64 * 1024)
    page = install(app, agent)
    app.middlewares.extend([page.access, guard])
    app.router.add_get("/rules/candidates", candidates)
    app.router.add_post("/rules/candidates/{id}/{decision:approve|reject}", decide)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_post("/sweep", sweep)
    return app
