"""The local HTTP API refuses what a browser or a hostile body could send,
and takes what the appliance's own tools send."""

import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from osiris.api import make_app
from osiris.api_guard import _depth, is_loopback
from osiris.app import load
from osiris.runtime import Agent

DECIDE = "/rules/candidates/4242/approve"  # no such candidate: the store's answer shows the guards let it through
NO_SUCH = "rule candidate 4242: no such candidate"


@pytest.fixture
async def client(write_config):
    agent = Agent(load(write_config({})))
    client = TestClient(TestServer(make_app(agent)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        agent.ctx.close()
        agent.store.close()


async def test_a_deeply_nested_body_is_a_clear_400_not_a_500(client):
    for body in ("[" * 100_000 + "]" * 100_000, '{"by": ' + "[" * 3000 + "]" * 3000 + "}"):
        r = await client.post(DECIDE, data=body, headers={"Content-Type": "application/json"})
        text = await r.text()
        assert r.status in (400, 413), text
        assert "nested too deeply" in text or "too large" in text
    r = await client.post(DECIDE, data='{"by": ' + "[" * 20 + "]" * 20 + "}",
                          headers={"Content-Type": "application/json"})
    assert r.status == 400 and "nested too deeply: at most 8 levels" in (await r.json())["error"]
    r = await client.post(DECIDE, data="{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and "not valid JSON" in (await r.json())["error"]


async def test_a_decision_from_a_tool_on_the_appliance_is_taken(client):
    r = await client.post(DECIDE, json={"by": "msp-oncall"})
    assert r.status == 400 and (await r.json())["error"] == NO_SUCH


@pytest.mark.parametrize("headers, status, message", [
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "expected Content-Type: application/json"),
    ({"Content-Type": "text/plain"}, 415, "expected Content-Type: application/json"),
    ({"Content-Type": "application/json", "Origin": "https://evil.example"}, 403, "cross-origin requests are refused"),
    ({"Content-Type": "application/json", "Origin": "null"}, 403, "cross-origin requests are refused"),
    ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403, "cross-site requests are refused"),
    ({"Content-Type": "application/json", "Host": "rebound.evil.example:8780"}, 403, "the Host header must name"),
])
async def test_what_a_web_page_could_send_is_refused(client, headers, status, message):
    r = await client.post(DECIDE, data='{"by": "someone"}', headers=headers)
    assert r.status == status and message in (await r.json())["error"]


async def test_a_same_origin_browser_request_is_taken(client):
    port = client.server.port
    r = await client.post(DECIDE, data='{"by": "msp-oncall"}', headers={
        "Content-Type": "application/json", "Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"})
    assert r.status == 400 and (await r.json())["error"] == NO_SUCH


async def test_a_local_client_seen_as_ipv4_mapped_loopback_is_accepted(write_config):
    """A dual-stack socket sees 127.0.0.1 as ::ffff:127.0.0.1."""
    agent = Agent(load(write_config({})))
    sock = socket.socket(socket.AF_INET6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::ffff:127.0.0.1", 0))
    port = sock.getsockname()[1]
    runner = web.AppRunner(make_app(agent))
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}{DECIDE}", json={"by": "msp-oncall"}) as r:
                assert r.status == 400 and (await r.json())["error"] == NO_SUCH
    finally:
        await runner.cleanup()
        agent.ctx.close()
        agent.store.close()


def test_loopback_and_depth():
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("127.3.4.5") and is_loopback("::1")
    assert is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("::ffff:10.0.0.1") and not is_loopback("10.0.0.1") and not is_loopback("evil.example")
    assert not is_loopback("") and not is_loopback(None)
    assert _depth('{"a": [1, {"b": "[[[[\\"]]"}]}') == 3
