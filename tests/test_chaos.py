"""Chaos against the lab: the healing ladder end to end.

A practice of emulated Windows hosts (the lab, over real HTTPS with the
real pywinrm client), the Windows executor, the L1 rules, an L2 test
planner, the L3 webhook channel posting to a local receiver that checks
the HMAC signature, and the real state store. Each test breaks a setting
through the lab's chaos API and asserts what the ladder did, on the lab
and in the store.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest
from aiohttp import web

from osiris.app import load
from osiris.engine import Engine
from osiris.evidence.service import EvidenceService
from osiris.healing.ladder import Ladder
from osiris.store import Store
from osiris_escalate_webhook.signing import verify
from osiris_lab import Lab

FIREWALL = "windows.firewall.profiles_enabled"
FIX = "windows.firewall.enable_profiles"
WEBHOOK_KEY = "chaos-webhook-key-0123456789"
# No test here waits for a timeout: generous ones, so that a loaded machine
# (the lab answers from a thread of this process) is not taken for a dead host.
WINDOWS = {"connect_timeout": 30, "operation_timeout": 20, "retries": 1, "backoff": 0.05, "script_overhead": 20}

RULES = f"""
rules:
  - id: firewall-on
    match: {{check: {FIREWALL}}}
    action: {{runbook: {FIX}, params: {{profiles: [Domain, Private, Public]}}}}
"""

PLANNER = f'''
from osiris import hookimpl
from osiris.records import PlanProposal

ASKED = []

@hookimpl
def osiris_plan(incident, ctx):
    ASKED.append(incident)
    if incident["check_id"] == "{FIREWALL}":
        return PlanProposal("{FIX}", {{"profiles": ["Domain", "Private", "Public"]}}, "re-enable them all")
    return None
'''


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab([("dc01", "dc"), ("srv01", "server"), ("ws01", "workstation")],
              workdir=tmp_path_factory.mktemp("lab"))
    with lab.running():
        yield lab


@pytest.fixture(autouse=True)
def _restore(lab):
    yield
    for name in lab.hosts:
        lab.restore(name)
        lab.fail_unit(name, FIX, False)


@pytest.fixture
async def receiver():
    """A local webhook receiver that accepts only correctly signed posts."""
    got: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(WEBHOOK_KEY, body, request.headers.get("X-Osiris-Timestamp"),
                   request.headers.get("X-Osiris-Signature"))
        except Exception as exc:  # noqa: BLE001
            return web.Response(status=401, text=str(exc))
        got.append(json.loads(body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/hook", got
    await runner.cleanup()


class Practice:
    def __init__(self, lab, tmp_path, url, healing, planner):
        self.lab = lab
        (tmp_path / "state" / "rules").mkdir(parents=True)
        (tmp_path / "state" / "rules" / "site.yaml").write_text(RULES)
        (tmp_path / "webhook-key").write_text(WEBHOOK_KEY)
        config = {
            "state_dir": str(tmp_path / "state"),
            "agent": {"check_self": False, "http": {"enabled": False}},
            "secrets": {"files": {lab.credential_name: str(lab.credential_file),
                                  "webhook-key": str(tmp_path / "webhook-key")}},
            "targets": lab.targets("https"),
            "healing": {"mode": "full", **healing},
            "plugin_modules": [planner] if planner else [],
            "plugins": {
                "windows": WINDOWS,
                "escalate-webhook": {"url": url, "allow_http_for_lab": True, "secret_name": "webhook-key",
                                     "retries": 1, "backoff": 0.01, "timeout": 5},
            },
        }
        self.loaded = load(config_data=config, environ={"OSIRIS_PLUGINS": "windows,escalate-webhook"})
        self.store = Store(self.loaded.ctx.state_dir)
        channels = [c for _p, c in self.loaded.pm.contributions("osiris_escalation_channels", ctx=self.loaded.ctx)]
        # The real evidence log: sweeps and every healing attempt become bundles.
        self.evidence = EvidenceService.open(self.loaded.ctx, self.loaded.config.evidence)
        self.loaded.ctx.evidence = self.evidence
        self.ladder = Ladder(self.loaded.ctx, self.loaded.pm, self.loaded.registry, self.store,
                             self.loaded.config.healing, self.loaded.targets, channels, evidence=self.evidence)
        self.engine = Engine(self.loaded.registry, self.store, self.loaded.targets, downstream=self.ladder)
        self.ladder.start()
        assert [r.id for r in self.ladder.rules.rules] == ["firewall-on"], self.ladder.rule_errors

    def bundles(self, kind):
        return [json.loads(e.body) for e in self.evidence.log.iter_entries() if e.kind == kind]

    async def sweep(self, checks=(FIREWALL,)):
        observations = await self.engine.sweep(force=True, only_checks=set(checks) if checks else None)
        await self.ladder.drain()
        return observations

    def incidents(self, host=None):
        return [i for i in self.store.incidents(None) if host is None or i.target == host]

    def attempts(self):
        return [dict(r) for r in self.store.db.execute("SELECT * FROM heal_attempts ORDER BY id")]

    def assert_none_open(self):
        assert self.store.incidents("open") == [], "an incident stayed open after its path ended"


@pytest.fixture
async def practice(lab, tmp_path, receiver, plugin_dir):
    url, _got = receiver
    made = []

    def make(healing=None, planner=False):
        p = Practice(lab, tmp_path, url, healing or {}, plugin_dir("chaos_planner", PLANNER) if planner else None)
        made.append(p)
        return p

    yield make
    for p in made:
        await p.evidence.close()
        p.loaded.ctx.close()


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    root = tmp_path / "plugmods"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))

    def write(name, source):
        (root / f"{name}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)
        importlib.invalidate_caches()  # a listing cached in the same mtime tick would miss the file
        importlib.import_module(name)
        return name

    return write


async def test_firewall_disabled_on_the_dc_is_healed_by_l1_within_one_sweep(lab, practice, receiver):
    p = practice()
    assert lab.host("dc01").state["firewall.domain.enabled"] is True
    lab.break_setting("dc01", "firewall.domain.enabled")
    observations = await p.sweep()
    [inc] = p.incidents()
    assert (inc.target, inc.check_id, inc.outcome, inc.tier) == ("dc01", FIREWALL, "healed", "L1")
    assert lab.host("dc01").state["firewall.domain.enabled"] is True, "the lab host itself was changed back"
    assert {o.target for o in observations if o.status.value == "pass"} == {"srv01", "ws01"}
    [attempt] = p.attempts()
    assert (attempt["tier"], attempt["runbook"], attempt["ok"]) == ("L1", FIX, 1)
    # the verification re-ran the check on the host: its latest status is pass
    latest = {(r["target"], r["check_id"]): r["status"] for r in p.store.latest()}
    assert latest[("dc01", FIREWALL)] == "pass"
    assert receiver[1] == []
    p.assert_none_open()
    # The attempt, with its verification, is signed evidence.
    await p.evidence.flush()
    [bundle] = p.bundles("healing_attempt")
    assert bundle["host"] == "dc01" and bundle["payload"]["ok"] is True and bundle["payload"]["tier"] == "L1"
    assert bundle["payload"]["verification"]["status"] == "pass"
    assert {b["host"] for b in p.bundles("sweep")} >= {"dc01", "srv01", "ws01"}


async def test_runbook_failing_on_one_host_goes_l2_then_l3_webhook(lab, practice, receiver):
    p = practice(planner=True)
    import chaos_planner

    lab.fail_unit("srv01", FIX)  # the runbook throws on this host only
    lab.break_setting("srv01", "firewall.private.enabled")
    lab.break_setting("ws01", "firewall.private.enabled")
    await p.sweep()
    by_host = {i.target: i for i in p.incidents()}
    assert (by_host["ws01"].outcome, by_host["ws01"].tier) == ("healed", "L1")
    assert (by_host["srv01"].outcome, by_host["srv01"].tier) == ("escalated", "L3")
    assert [(a["tier"], a["ok"]) for a in p.attempts() if a["incident_id"] == by_host["srv01"].id] == \
        [("L1", 0), ("L2", 0)]
    assert [a["target"] for a in chaos_planner.ASKED] == ["srv01"]
    [posted] = receiver[1]
    incident = posted["incident"]
    assert incident["target"] == "srv01" and incident["check_id"] == FIREWALL
    assert [h["tier"] for h in incident["tier_history"]] == ["L1", "L2"]
    assert lab.host("srv01").state["firewall.private.enabled"] is False
    p.assert_none_open()


async def test_setting_that_reverts_after_every_heal_trips_the_flap_guard(lab, practice, receiver):
    p = practice(healing={"flap_guard": {"max_heals": 2, "window": 3600}})
    for _ in range(4):
        lab.break_setting("ws01", "firewall.public.enabled")  # e.g. a GPO that keeps turning it off
        await p.sweep()
    outcomes = [(i.outcome, i.tier) for i in reversed(p.incidents("ws01"))]
    assert outcomes == [("healed", "L1"), ("healed", "L1"), ("escalated", "L3")]
    assert len(receiver[1]) == 1 and "flap guard" in json.dumps(receiver[1][0])
    assert len(p.attempts()) == 2, "no heal after the guard tripped"
    assert lab.host("ws01").state["firewall.public.enabled"] is False
    p.assert_none_open()


async def test_dry_run_changes_nothing_and_records_the_would_be_action(lab, practice, receiver):
    p = practice(healing={"mode": "dry-run"})
    lab.break_setting("dc01", "firewall.public.enabled")
    before = lab.host("dc01").state.snapshot()
    await p.sweep()
    assert lab.host("dc01").state.snapshot() == before
    [inc] = p.incidents()
    assert (inc.outcome, inc.tier) == ("dry-run", "L1") and f"would run {FIX}" in inc.detail
    [attempt] = p.attempts()
    assert attempt["dry_run"] == 1 and attempt["ok"] is None and attempt["runbook"] == FIX
    await p.evidence.flush()
    [bundle] = p.bundles("healing_attempt")
    assert bundle["payload"]["dry_run"] is True and f"would run {FIX}" in bundle["payload"]["detail"]
    # the next sweep of the same drift does not act or record again
    await p.sweep()
    assert len(p.incidents()) == 1 and len(p.attempts()) == 1
    p.assert_none_open()


async def test_a_full_sweep_of_the_lab_leaves_no_incident_open(lab, practice, receiver):
    p = practice(planner=True)
    lab.break_setting("dc01", "firewall.domain.enabled")
    await p.sweep(checks=None)  # every check on every host: some heal, the rest escalate
    incidents = p.incidents()
    assert incidents, "a fresh lab practice has failing checks"
    p.assert_none_open()
    assert all(i.outcome in ("healed", "escalated") for i in incidents), [(i.check_id, i.outcome) for i in incidents]
    assert any(i.check_id == FIREWALL and i.outcome == "healed" for i in incidents)
