"""The webhook channel against a real aiohttp receiver on loopback that
verifies the signature, fails on demand, stalls and refuses."""

import asyncio
import hashlib
import hmac
import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from osiris import testing
from osiris.testing import load_plugin
from osiris.config import ConfigError
from osiris_escalate_webhook.plugin import EscalationError, WebhookChannel
from osiris_escalate_webhook.signing import SignatureError, sign, verify
from osiris_lab import pki as lab_pki

SECRET = "whsec-3f9c1e77-must-never-leak"
PATH_TOKEN = "T0KEN-in-the-path-9d2a"

INCIDENT = {
    "id": 42,
    "target": "dc01",
    "role": "dc",
    "check_id": "windows.firewall.profiles_enabled",
    "check_title": "Windows Firewall enabled on every profile",
    "severity": "high",
    "hipaa": ["164.312(e)(1)"],
    "reason": "disabled profiles: ['Public']",
    "facts": {"enabled": [True, True, False], "disabled": ["Public"]},
    "opened_at": "2025-03-01T10:00:00+00:00",
    "site": "clinic-a",
    "tier_history": [{"tier": "L1", "runbook": "windows.firewall.enable_profiles", "ok": False, "detail": "access denied"}],
    "candidates": [],
}


class Receiver:
    """Answers each request with the next planned action (default 200) and
    only after checking the signature; records every request."""

    def __init__(self):
        self.plan: list = []
        self.requests: list[tuple[dict, bytes]] = []
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        action = self.plan.pop(0) if self.plan else 200
        if action == "stall":
            await self.release.wait()
            return web.Response(status=200)
        try:
            verify(SECRET, body, request.headers.get("X-Osiris-Timestamp"), request.headers.get("X-Osiris-Signature"))
        except SignatureError as exc:
            return web.Response(status=401, text=str(exc))
        status, headers = action if isinstance(action, tuple) else (action, {})
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "no")


@pytest.fixture
async def receiver():
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/{token}", rec.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    rec.url = str(server.make_url(f"/hooks/{PATH_TOKEN}"))
    yield rec
    rec.release.set()
    await server.close()


@pytest.fixture
def refused_port():
    with testing.refused_port() as port:
        yield port


# A stalled receiver never answers (until the test ends); the client's
# timeout is far longer than a healthy answer on a loaded machine, so only
# the stalls time out.
STALL_TIMEOUT = 3


def loaded_ctx(tmp_path, settings):
    return load_plugin(tmp_path, "escalate-webhook", settings, secrets={"escalate-webhook": SECRET})


def channel(tmp_path, url, **settings):
    """A channel built from config, with a sleep that records the backoff."""
    loaded = loaded_ctx(tmp_path, {"url": url, "allow_http_for_lab": True, **settings})
    ctx = loaded.ctx
    delays: list[float] = []

    async def sleep(seconds):
        delays.append(seconds)

    ch = WebhookChannel(ctx.settings("escalate-webhook"), ctx, sleep=sleep)
    ch.delays, ch.loaded = delays, loaded
    return ch


async def test_delivery_is_signed_over_timestamp_and_exact_body(tmp_path, receiver):
    loaded = loaded_ctx(tmp_path, {"url": receiver.url, "allow_http_for_lab": True})
    [(name, ch)] = loaded.pm.contributions("osiris_escalation_channels", ctx=loaded.ctx)
    assert name == "escalate-webhook" and ch.name == "webhook"
    await ch.escalate(INCIDENT)

    [(headers, body)] = receiver.requests
    ts = headers["X-Osiris-Timestamp"]
    expected = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Osiris-Signature"] == f"sha256={expected}"
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["incident"] == INCIDENT and doc["event"] == "incident.escalated"
    assert doc["delivery"] == headers["X-Osiris-Delivery"] == headers["Idempotency-Key"]
    assert SECRET not in body.decode()


async def test_5xx_and_429_are_retried_with_exponential_backoff_and_one_delivery_id(tmp_path, receiver):
    receiver.plan = [500, 503, 429, 200]
    ch = channel(tmp_path, receiver.url, retries=3, backoff=0.5)
    await ch.escalate(INCIDENT)
    assert ch.delays == [0.5, 1.0, 2.0]
    assert len(receiver.requests) == 4
    assert len({h["X-Osiris-Delivery"] for h, _ in receiver.requests}) == 1
    assert len({body for _, body in receiver.requests}) == 1  # the same bytes, re-signed per attempt


async def test_backoff_honours_retry_after_up_to_the_cap(tmp_path, receiver):
    receiver.plan = [(429, {"Retry-After": "7"}), (503, {"Retry-After": "3600"}), 200]
    ch = channel(tmp_path, receiver.url, retries=2, backoff=0.5, backoff_max=30)
    await ch.escalate(INCIDENT)
    assert ch.delays == [7.0, 30.0]


async def test_gives_up_after_the_retries(tmp_path, receiver):
    receiver.plan = [502] * 10
    ch = channel(tmp_path, receiver.url, retries=2, backoff=0.1)
    with pytest.raises(EscalationError, match=r"not delivered after 3 attempts; last error: HTTP 502"):
        await ch.escalate(INCIDENT)
    assert len(receiver.requests) == 3 and ch.delays == [0.1, 0.2]


async def test_400_is_final_and_not_retried(tmp_path, receiver):
    receiver.plan = [400]
    ch = channel(tmp_path, receiver.url, retries=3)
    with pytest.raises(EscalationError, match=r"refused with HTTP 400 Bad Request; not retried"):
        await ch.escalate(INCIDENT)
    assert len(receiver.requests) == 1 and ch.delays == []


async def test_a_wrong_key_is_refused_by_the_receiver_and_not_retried(tmp_path, receiver):
    ch = channel(tmp_path, receiver.url, retries=3)
    ch.loaded.ctx.secrets.path_of("escalate-webhook").write_text("another-key")  # read at send time
    with pytest.raises(EscalationError, match="HTTP 401"):
        await ch.escalate(INCIDENT)
    assert len(receiver.requests) == 1


async def test_a_stalled_receiver_times_out_and_is_retried(tmp_path, receiver):
    receiver.plan = ["stall", 200]
    ch = channel(tmp_path, receiver.url, retries=1, timeout=STALL_TIMEOUT)
    await ch.escalate(INCIDENT)
    assert len(receiver.requests) == 2 and ch.delays == [1.0]

    receiver.plan = ["stall", "stall"]
    with pytest.raises(EscalationError, match=rf"after 2 attempts; last error: timed out after {STALL_TIMEOUT} s"):
        await ch.escalate(INCIDENT)


async def test_connection_refused_is_retried_then_reported(tmp_path, refused_port):
    ch = channel(tmp_path, f"http://127.0.0.1:{refused_port}/hooks/{PATH_TOKEN}", retries=2)
    with pytest.raises(EscalationError, match=r"after 3 attempts; last error: ClientConnectorError") as exc:
        await ch.escalate(INCIDENT)
    assert ch.delays == [1.0, 2.0]
    assert f"to http://127.0.0.1:{refused_port}:" in str(exc.value)


async def test_secret_and_url_token_stay_out_of_logs_and_errors(tmp_path, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    receiver.plan = [500, "stall", 400]
    ch = channel(tmp_path, receiver.url, retries=3, timeout=STALL_TIMEOUT)
    with pytest.raises(EscalationError) as exc:
        await ch.escalate(INCIDENT)
    assert len(receiver.requests) == 3
    assert "attempt 1/4 failed: HTTP 500" in caplog.text and "timed out" in caplog.text
    # Everything the agent side logged (the receiver's own access log names its path).
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    for text in (ours, str(exc.value), repr(exc.value)):
        assert SECRET not in text and PATH_TOKEN not in text


async def test_https_receiver_is_validated_against_the_configured_ca(tmp_path):
    pki = lab_pki.create(tmp_path / "pki")
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/{token}", rec.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=pki.server_context())
    try:
        url = f"https://127.0.0.1:{server.port}/hooks/{PATH_TOKEN}"
        await channel(tmp_path, url, ca_file=str(pki.ca_file)).escalate(INCIDENT)
        assert len(rec.requests) == 1
        # Without the practice CA the system store does not know the receiver: final, no retry.
        ch = channel(tmp_path, url, retries=3)
        with pytest.raises(EscalationError, match="TLS failed"):
            await ch.escalate(INCIDENT)
        assert len(rec.requests) == 1 and ch.delays == []
    finally:
        await server.close()


def test_settings_require_https_unless_lab(tmp_path):
    with pytest.raises(ConfigError) as exc:
        loaded_ctx(tmp_path, {"url": f"http://example.test/hooks/{PATH_TOKEN}"})
    msg = str(exc.value)
    assert "'plugins.escalate-webhook', key 'url'" in msg and "https://" in msg and "allow_http_for_lab" in msg
    assert PATH_TOKEN not in msg
    with pytest.raises(ConfigError, match="key 'url': expected an absolute https:// URL"):
        loaded_ctx(tmp_path, {"url": "example.test/hook"})
    with pytest.raises(ConfigError, match="unknown key 'secret'"):
        loaded_ctx(tmp_path, {"url": "https://example.test/h", "secret": SECRET})
    lab = loaded_ctx(tmp_path, {"url": "http://127.0.0.1:9/h", "allow_http_for_lab": True})
    assert lab.ctx.settings("escalate-webhook").url == "http://127.0.0.1:9/h"


def test_no_url_means_no_channel(tmp_path):
    loaded = loaded_ctx(tmp_path, {})
    assert loaded.pm.contributions("osiris_escalation_channels", ctx=loaded.ctx) == []


def test_verify_accepts_only_the_signed_body_and_a_fresh_timestamp():
    body = b'{"incident":{"id":1}}'
    sig = sign(SECRET, 1_700_000_000, body)
    verify(SECRET, body, "1700000000", sig, now=1_700_000_100)
    cases = [
        (SECRET, body + b" ", "1700000000", sig, "does not match"),
        ("wrong", body, "1700000000", sig, "does not match"),
        (SECRET, body, "1700000001", sig, "does not match"),  # timestamp is signed too
        (SECRET, body, "1700000000", sig, "off"),  # replayed too late (now below)
        (SECRET, body, "1700000000", "md5=" + sig[7:], "must look like"),
        (SECRET, body, None, sig, "missing"),
        (SECRET, body, "soon", sig, "not an integer"),
    ]
    for i, (key, b, ts, s, why) in enumerate(cases):
        now = 1_700_000_000 + (301 if why == "off" else 0)
        with pytest.raises(SignatureError, match=why) as exc:
            verify(key, b, ts, s, now=now)
        assert SECRET not in str(exc.value) and sig[7:] not in str(exc.value), i


async def test_a_missing_key_fails_before_anything_is_sent(tmp_path, receiver):
    ch = channel(tmp_path, receiver.url)
    ch.loaded.ctx.secrets.path_of("escalate-webhook").unlink()
    with pytest.raises(Exception, match="secret 'escalate-webhook': cannot read"):
        await ch.escalate(INCIDENT)
    assert receiver.requests == []
