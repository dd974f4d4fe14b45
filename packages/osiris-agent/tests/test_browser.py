"""The status page in a real browser: Debian's Chromium driven by
Playwright (no browser download). On an agent listening off loopback over
TLS: log in, see a drifting host, approve a rule candidate, accept a risk,
and the page on a phone. Screenshots are saved for a person to look at
(``.artifacts/browser/`` at the repository's root, or $OSIRIS_SCREENSHOTS)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from osiris.app import load
from osiris.evidence.log import EvidenceLog
from osiris.runtime import Agent
from osiris.web import auth

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (tools/ensure-system-tools.sh)")

REPO = Path(__file__).resolve().parents[3]
SHOTS = Path(os.environ.get("OSIRIS_SCREENSHOTS", REPO / ".artifacts" / "browser"))
PASSWORD = "correct horse battery staple"
PLUGIN = '''
from osiris import CheckSpec, Risk, RunbookSpec, Status, Verdict, hookimpl

def probe(params):
    return {"enabled": False}

def evaluate(facts, params):
    return Verdict(Status.PASS if facts["enabled"] else Status.FAIL, "screen lock is off")

@hookimpl
def osiris_checks(ctx):
    return CheckSpec(id="demo.screen_lock", title="Screen locks after 15 minutes", target_kind="local",
                     hipaa=("164.312(a)(2)(iii)",), probe=probe, evaluate=evaluate, interval=3600)

@hookimpl
def osiris_runbooks(ctx):
    return RunbookSpec(id="demo.enable_lock", title="Enable the screen lock", target_kind="local",
                       fixes=("demo.screen_lock",), risk=Risk.LOW, action=lambda params: {}, timeout=5)
'''


@pytest.fixture
async def agent(plugin_module, write_config, tmp_path):
    from osiris_lab import pki

    plugin_module("browser_plugin", PLUGIN)
    importlib.import_module("browser_plugin")
    files = pki.create(tmp_path / "pki")
    cfg = write_config({"plugin_modules": ["browser_plugin"], "site": {"id": "clinic", "name": "Riverside Family Practice"},
                        "agent": {"http": {"listen": "0.0.0.0", "port": 0,
                                           "tls": {"cert": str(files.cert_file), "key": str(files.key_file)}}}})
    a = Agent(load(cfg, environ={"OSIRIS_PLUGINS": "none"}))
    auth.add_user(a.store, "ops", "operator", PASSWORD)
    for _ in range(5):  # an L2 fix proven five times: a candidate to approve
        a.ladder.learning.record("demo.screen_lock", "appliance", "demo.enable_lock", "L2", True, 2.0, {})
    await a.evidence.start([])
    a.ladder.start()
    await a.engine.sweep(force=True)
    await a.ladder.drain()
    runner = await a._start_http()
    yield a
    await runner.cleanup()
    await a.evidence.close()
    a.ctx.close()
    a.store.close()


async def test_an_operator_logs_in_over_tls_sees_drift_approves_a_rule_and_accepts_a_risk(agent):
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = f"https://127.0.0.1:{agent.http_port}"
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            ctx = await browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
            page = await ctx.new_page()
            await page.goto(base + "/")
            assert page.url.startswith(base + "/login")
            await page.fill("input[name=name]", "ops")
            await page.fill("input[name=password]", "not the password")
            async with page.expect_navigation():
                await page.click("button.primary")
            html = await page.content()
            assert "wrong name or password" in html, html
            await page.screenshot(path=str(SHOTS / "01-login-refused.png"))
            await page.fill("input[name=name]", "ops")
            await page.fill("input[name=password]", PASSWORD)
            async with page.expect_navigation(url=base + "/"):
                await page.click("button.primary")
            body = await page.inner_text("body")
            assert "ops (operator)" in body and "Riverside Family Practice" in body
            assert "Screen locks after 15 minutes" in body and "Automatic logoff" in body
            assert await page.locator(".badge.s-drifting").count() >= 1
            await page.screenshot(path=str(SHOTS / "02-overview-drifting.png"), full_page=True)

            await page.goto(base + "/rules")
            await page.fill("form[action$='/approve'] input[name=reason]", "proven on the front desk PCs")
            async with page.expect_navigation(url=base + "/rules?ok=approved"):
                await page.click("form[action$='/approve'] button")
            assert "Candidate approved" in await page.inner_text("body")
            await page.screenshot(path=str(SHOTS / "03-rule-approved.png"), full_page=True)

            await page.goto(base + "/exceptions")
            await page.select_option("select[name=check]", "demo.screen_lock")
            await page.select_option("select[name=host]", "appliance")
            await page.fill("input[name=reason]", "kiosk in the waiting room shows the schedule")
            await page.fill("input[name=approved_by]", "Dr. Rivera")
            until = (datetime.now(timezone.utc) + timedelta(days=90)).date().isoformat()
            await page.fill("input[name=expires]", until)
            async with page.expect_navigation(url=base + "/exceptions?ok=exception-added"):
                await page.click("button.primary")
            assert "Risk accepted" in await page.inner_text("body")
            await page.screenshot(path=str(SHOTS / "04-risk-accepted.png"), full_page=True)

            await page.goto(base + "/")
            assert await page.locator(".badge.s-accepted").count() >= 1
            phone = await browser.new_context(ignore_https_errors=True, viewport={"width": 390, "height": 844},
                                              is_mobile=True, device_scale_factor=2)
            await phone.add_cookies(await ctx.cookies())
            mobile = await phone.new_page()
            await mobile.goto(base + "/")
            width = await mobile.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, "the page fits a phone's width (wide tables scroll inside their box)"
            await mobile.screenshot(path=str(SHOTS / "05-overview-phone.png"), full_page=True)
        finally:
            await browser.close()

    [cand] = agent.ladder.learning.candidates(None)
    assert (cand.state, cand.decided_by) == ("approved", "ops")
    [exc] = agent.store.exceptions()
    assert (exc["approved_by"], exc["created_by"]) == ("Dr. Rivera", "ops")
    await agent.evidence.flush()
    log = EvidenceLog(agent.evidence.log.path, create=False)
    try:
        bundles = [json.loads(e.body) for e in log.iter_entries()]
    finally:
        log.close()
    decision = next(b["payload"] for b in bundles if b["kind"] == "rule_decision")
    assert (decision["decided_by"], decision["via"], decision["reason"]) == ("ops", "status page",
                                                                             "proven on the front desk PCs")
    risk = next(b["payload"] for b in bundles if b["kind"] == "risk_accepted")
    assert (risk["by"], risk["approved_by"], risk["via"]) == ("ops", "Dr. Rivera", "status page")
    assert all((SHOTS / n).stat().st_size > 0 for n in ("02-overview-drifting.png", "04-risk-accepted.png"))
