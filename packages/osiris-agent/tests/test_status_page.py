"""The status page: what a person sees (drift stays visible, accepted risk,
nothing the scrubber would remove), and who may see and act (loopback
without login; off loopback TLS, accounts, roles, CSRF, lockout)."""

from __future__ import annotations

import importlib
import re
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from osiris.api import make_app
from osiris.app import load
from osiris.config import ConfigError
from osiris.evidence.log import EvidenceLog
from osiris.runtime import Agent
from osiris.web import auth

PLUGIN = '''
from osiris import CheckSpec, Status, Verdict, hookimpl

STATE = {"setting": "bad"}

def probe(params):
    return {"setting": STATE["setting"]}

def evaluate(facts, params):
    # a reason quoting a fact that holds PHI: the page must not show it
    return Verdict(Status.PASS if facts["setting"] == "good" else Status.FAIL,
                   f"setting={facts['setting']}; patient SSN 123-45-6789 seen in share name")

@hookimpl
def osiris_checks(ctx):
    return CheckSpec(id="test.setting", title="Setting is good", target_kind="local",
                     hipaa=("164.312(a)(2)(iii)",), probe=probe, evaluate=evaluate, interval=3600)
'''
PASSWORD = "correct horse battery staple"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


@pytest.fixture
def agent_for(plugin_module, write_config, tmp_path):
    made = []

    def make(http=None, evidence=True):
        name = f"page_plugin_{len(made)}"
        plugin_module(name, PLUGIN)
        importlib.import_module(name)
        cfg = {"plugin_modules": [name], "site": {"id": "clinic", "name": "Riverside Family Practice"},
               "healing": {"mode": "full"}, "evidence": {"enabled": evidence}}
        if http:
            cfg["agent"] = {"http": http}
        agent = Agent(load(write_config(cfg, name=f"{name}.json"), environ={"OSIRIS_PLUGINS": "none"}))
        made.append(agent)
        return agent

    yield make
    for a in made:
        a.ctx.close()
        a.store.close()
        if a.evidence is not None:
            a.evidence.log.close()


async def sweep(agent):
    agent.ladder.start()
    await agent.engine.sweep(force=True)
    await agent.ladder.drain()


@pytest.fixture
async def client_for():
    clients = []

    async def make(agent, ssl=None):
        server = TestServer(make_app(agent))
        await server.start_server(ssl=ssl)
        c = TestClient(server, **({"connector": aiohttp.TCPConnector(ssl=False)} if ssl else {}))
        await c.start_server()
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


async def test_unhealed_drift_stays_on_the_overview_and_no_phi_reaches_the_page(agent_for, client_for):
    agent = agent_for()
    await sweep(agent)  # no rule, no planner, no channel: the incident ends as failed L3
    [inc] = agent.store.incidents(None)
    assert (inc.outcome, inc.tier) == ("failed", "L3")
    client = await client_for(agent)
    r = await client.get("/")
    html = await r.text()
    assert r.status == 200 and r.content_type == "text/html"
    assert "Riverside Family Practice" in html
    assert "Drift still present" in html and "Setting is good" in html
    assert "not healed, nobody told" in html
    assert "Automatic logoff" in html and "164.312(a)(2)(iii)" in html  # per HIPAA specification
    assert 'http-equiv="refresh"' in html and 'name="viewport"' in html
    for path in ("/", "/hosts/appliance", "/incidents"):
        page = await (await client.get(path)).text()
        assert "123-45-6789" not in page, path
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]


async def test_accepting_a_risk_on_the_page_is_evidence_and_stops_escalation(agent_for, client_for):
    agent = agent_for()
    await agent.evidence.start([])
    client = await client_for(agent)
    page = await (await client.get("/exceptions")).text()
    form = {"csrf": csrf_of(page), "check": "test.setting", "host": "appliance", "reason": "vendor app needs it",
            "approved_by": "Dr. Rivera", "expires": (datetime.now(timezone.utc) + timedelta(days=30)).date().isoformat(),
            "by": "msp-oncall"}
    r = await client.post("/actions/exceptions", data=form, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/exceptions?ok=exception-added"
    [exc] = agent.store.exceptions()
    assert (exc["approved_by"], exc["created_by"], exc["target"]) == ("Dr. Rivera", "msp-oncall", "appliance")
    await sweep(agent)
    [inc] = agent.store.incidents(None)
    assert (inc.outcome, inc.tier) == ("accepted", "none") and "Dr. Rivera" in inc.detail
    html = await (await client.get("/")).text()
    assert "accepted risk" in html and "not healed, nobody told" not in html
    await agent.evidence.close()
    log = EvidenceLog(agent.evidence.log.path, create=False)
    kinds = [e.kind for e in log.iter_entries()]
    assert "risk_accepted" in kinds and "escalation" not in kinds
    resolved = [e for e in log.iter_entries() if e.kind == "incident_resolved"]
    import json
    payload = json.loads(resolved[0].body)["payload"]
    assert payload["outcome"] == "accepted" and payload["exception"]["approved_by"] == "Dr. Rivera"
    assert payload["exception"]["expires_at"] == exc["expires_at"]
    log.close()


@pytest.mark.parametrize("change, status, message", [
    ({"csrf": "forged"}, 403, "security token did not match"),
    ({"headers": {"Origin": "http://evil.example"}}, 403, "cross-origin form posts are refused"),
    ({"headers": {"Sec-Fetch-Site": "cross-site"}}, 403, "cross-site form posts are refused"),
    ({"by": ""}, 400, "name"),
])
async def test_a_form_post_without_its_token_or_from_another_site_is_refused(agent_for, client_for, change, status,
                                                                             message):
    agent = agent_for()
    client = await client_for(agent)
    page = await (await client.get("/exceptions")).text()
    form = {"csrf": csrf_of(page), "check": "test.setting", "host": "", "reason": "r", "approved_by": "a",
            "expires": (datetime.now(timezone.utc) + timedelta(days=3)).date().isoformat(), "by": "me"}
    headers = change.pop("headers", {})
    form.update(change)
    r = await client.post("/actions/exceptions", data=form, headers=headers, allow_redirects=False)
    assert r.status == status and message in await r.text()
    assert agent.store.exceptions() == []


# -- off loopback ------------------------------------------------------------------------------


def tls_files(tmp_path):
    from osiris_lab import pki

    p = pki.create(tmp_path / "pki")
    return p, {"cert": str(p.cert_file), "key": str(p.key_file)}


async def test_off_loopback_without_tls_or_accounts_the_agent_refuses_to_start(agent_for, tmp_path):
    agent = agent_for({"listen": "0.0.0.0", "port": 0})
    with pytest.raises(ConfigError, match=r"key 'http.listen': 0.0.0.0 is not a loopback address: .*agent.http.tls"):
        await agent._start_http()
    _pki, tls = tls_files(tmp_path)
    agent = agent_for({"listen": "0.0.0.0", "port": 0, "tls": tls})
    with pytest.raises(ConfigError, match="no status page account exists: add one with `osiris users add"):
        await agent._start_http()
    auth.add_user(agent.store, "ops", "operator", PASSWORD)
    runner = await agent._start_http()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"https://127.0.0.1:{agent.http_port}/health", ssl=False) as r:
                assert r.status == 200
    finally:
        await runner.cleanup()


async def test_off_loopback_people_log_in_viewers_only_look_and_failures_lock(agent_for, client_for, tmp_path):
    pki_, tls = tls_files(tmp_path)
    agent = agent_for({"listen": "0.0.0.0", "port": 0, "tls": tls})
    auth.add_user(agent.store, "owner", "viewer", PASSWORD)
    auth.add_user(agent.store, "ops", "operator", PASSWORD)
    await sweep(agent)
    client = await client_for(agent, ssl=pki_.server_context())
    r = await client.get("/", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/login")
    r = await client.get("/status")
    assert r.status == 200, "a program on the appliance itself keeps the JSON API"

    async def login(name, password):
        page = await (await client.get("/login")).text()
        return await client.post("/login", data={"csrf": csrf_of(page), "name": name, "password": password,
                                                  "next": "/"}, allow_redirects=False)

    r = await login("owner", PASSWORD)
    assert r.status == 303
    cookie = r.cookies[auth.SESSION_COOKIE]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
    assert agent.store.db.execute("SELECT count(*) FROM sessions WHERE token_hash = ?",
                                  (cookie.value,)).fetchone()[0] == 0, "the store keeps the token's hash only"
    html = await (await client.get("/")).text()
    assert "owner (viewer)" in html and "Setting is good" in html
    page = await (await client.get("/exceptions")).text()
    assert "Accept this risk" not in page
    form = {"csrf": csrf_of(page), "check": "test.setting", "host": "", "reason": "r", "approved_by": "a",
            "expires": (datetime.now(timezone.utc) + timedelta(days=3)).date().isoformat()}
    r = await client.post("/actions/exceptions", data=form, allow_redirects=False)
    assert r.status == 403 and "viewers may look, not act" in await r.text()

    client.session.cookie_jar.clear()
    for _ in range(auth.LOCK_AFTER):
        r = await login("ops", "wrong password!!")
        assert r.status == 401 and "wrong name or password" in await r.text()
    r = await login("ops", PASSWORD)
    assert r.status == 401 and "locked" in await r.text()
    r = await login("nobody", PASSWORD)
    assert r.status == 401 and "wrong name or password" in await r.text()
    auth.set_password(agent.store, "ops", PASSWORD)  # `osiris users passwd` clears the lockout
    r = await login("ops", PASSWORD)
    assert r.status == 303
    page = await (await client.get("/exceptions")).text()
    form["csrf"] = csrf_of(page)
    r = await client.post("/actions/exceptions", data=form, allow_redirects=False)
    assert r.status == 303
    assert agent.store.exceptions()[0]["created_by"] == "ops", "who acted is the logged-in account"


async def test_the_health_gate_reaches_an_agent_serving_https(agent_for, tmp_path):
    from osiris.health import agent_answers

    _pki, tls = tls_files(tmp_path)
    agent = agent_for({"listen": "0.0.0.0", "port": 0, "tls": tls})
    auth.add_user(agent.store, "ops", "operator", PASSWORD)
    runner = await agent._start_http()
    try:
        ok = await agent_answers("0.0.0.0", agent.http_port, cert=_pki.cert_file).run()
        plain = await agent_answers("0.0.0.0", agent.http_port).run()
    finally:
        await runner.cleanup()
    assert ok.ok, ok.detail
    assert not plain.ok


async def test_the_overview_shows_the_appliances_update_state(agent_for, client_for):
    from osiris.records import BootEntry, UpdateError, UpdateProgress, UpdateStatus

    class Backend:
        name = "fake-ab"
        answer: object = UpdateStatus("fake-ab", configured=True, booted_version="1.0.0", available="1.1.0",
                                      entries=(BootEntry("1.0.0", "blessed", booted=True),
                                               BootEntry("1.1.0", "trial", tries_left=3, tries_done=0)),
                                      running=UpdateProgress("writing", "1.1.0", 1 << 29, 1 << 30, rate=1 << 20))

        async def status(self):
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    agent = agent_for()
    client = await client_for(agent)
    html = await (await client.get("/")).text()
    assert "No update backend is configured" in html
    backend = Backend()
    agent.update_backends = [backend]
    html = await (await client.get("/")).text()
    assert "Running version <b>1.0.0</b>" in html and "version <b>1.1.0</b> is available" in html
    assert "Installing: writing 1.1.0, 512.0 MiB of 1.0 GiB (50%), 1.0 MiB/s, ETA 8:32" in html
    assert "<td>1.1.0</td><td>trial</td><td>3</td>" in html
    backend.answer = UpdateError("/var/lib/osiris-update/status.json: not valid JSON")
    r = await client.get("/")
    assert r.status == 200
    assert "Update state not readable: /var/lib/osiris-update/status.json: not valid JSON" in await r.text()
