"""The HTTPS upload against a real aiohttp service on loopback with a test
CA: it fails, times out and recovers, and keeps every item exactly once."""

import asyncio
import datetime as dt
import ipaddress
import logging
import ssl
import time

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from osiris.app import load
from osiris.testing import load_plugin
from osiris.config import ConfigError
from osiris.evidence.bundle import Identity, SignedBundle, build_statement
from osiris.evidence.keys import SigningKey
from osiris.evidence.log import EvidenceLog
from osiris.evidence.note import parse_checkpoint
from osiris.evidence.outbox import Outbox
from osiris.evidence.scrub import Scrubber
from osiris_evidence_http import plugin

ORIGIN = "osiris.evidence/clinic/box"
TOKEN = "tok-5e1f0c-central-must-never-leak"


def _cert(subject, issuer, key, issuer_key, *, ca):
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_ca(tmp_path, name):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = _cert(ca_name, ca_name, ca_key, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "central")]), ca_name, key, ca_key, ca=False)
    (tmp_path / f"{name}-ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / f"{name}-server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / f"{name}-server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return tmp_path / f"{name}-ca.pem"


# The client's timeout in a test with stalls: far longer than a healthy
# answer on a loaded machine, and a stall lasts until the test ends, so only
# the stalls time out.
STALL_TIMEOUT = 3


class Central:
    """The central service: stores each Idempotency-Key once; fails, stalls
    past the client's timeout (and still stores) or answers 429 on plan.
    ``plans`` holds a plan per X-Osiris-Kind, so what a test scripts for the
    bundle stream cannot be consumed by a checkpoint upload that the outbox
    happens to interleave (their order depends on retry timing)."""

    def __init__(self):
        self.plan: list[str] = []  # for any request whose kind has no plan of its own
        self.plans: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str, str]] = []  # (key, kind, authorization)
        self.stored: dict[str, bytes] = {}
        self.order: list[str] = []
        self.elsewhere: list[tuple[str, str | None]] = []  # (method, authorization) at the redirect target
        self.release = asyncio.Event()  # ends the stalls

    async def handle(self, request):
        key = request.headers.get("Idempotency-Key", "")
        kind = request.headers.get("X-Osiris-Kind")
        body = await request.read()
        self.requests.append((key, kind, request.headers.get("Authorization")))
        plan = self.plans.get(kind, self.plan)
        action = plan.pop(0) if plan else "ok"
        if action == "503":
            return web.Response(status=503, text="maintenance")
        if action in ("301", "302", "303", "307", "308"):
            return web.Response(status=int(action), headers={"Location": "/elsewhere"}, text="moved")
        if action == "429":
            return web.Response(status=429, headers={"Retry-After": "0"}, text="slow down")
        if key in self.stored:
            if self.stored[key] != body:
                return web.Response(status=422, text="idempotency key reused with another payload")
            return web.json_response({"duplicate": True})
        self.stored[key] = body
        self.order.append(key)
        if action == "stall":
            await self.release.wait()  # stored, but the client gives up long before this answer
        return web.json_response({"stored": key}, status=201)


async def serve(tmp_path, central, name="central"):
    app = web.Application()
    app.router.add_post("/api/evidence", central.handle)

    async def elsewhere(request):  # a redirect target that answers 200 to anything
        central.elsewhere.append((request.method, request.headers.get("Authorization")))
        return web.Response(text="welcome")

    app.router.add_route("*", "/elsewhere", elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / f"{name}-server.pem", tmp_path / f"{name}-server.key")
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"https://127.0.0.1:{port}/api/evidence"


def make_log(tmp_path, n):
    key = SigningKey.generate()
    log = EvidenceLog(tmp_path / "log.sqlite3", origin=ORIGIN, verify_key=key.verify_key)
    ident = Identity("clinic", "", "box", "0", "1", {})
    for i in range(n):
        log.append([build_statement(ident, Scrubber(), "sweep", {"i": i})], key)
        if i % 10 == 9:
            log.checkpoint(key)
    return key, log


def sink_from_config(tmp_path, url, ca, **extra):
    loaded = load_plugin(tmp_path, "evidence-http",
                         {"url": url, "ca_file": str(ca), "token_secret": "central-token", **extra},
                         secrets={"central-token": TOKEN})
    return plugin.osiris_evidence_sinks(loaded.ctx)


async def test_fails_times_out_recovers_and_stores_each_item_once(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    ca = make_ca(tmp_path, "central")
    central = Central()
    runner, url = await serve(tmp_path, central)
    key, log = make_log(tmp_path, 30)
    sink = sink_from_config(tmp_path, url, ca, timeout=STALL_TIMEOUT)
    outbox = Outbox(log, [sink], backoff_initial=0.01, backoff_max=0.05)
    central.plans = {"bundle": ["503", "503", "429", "ok", "stall", "503"], "checkpoint": ["503", "stall"]}
    deadline = time.monotonic() + 120
    waits = []
    try:
        while outbox.pending(sink.name) != {"bundle": 0, "checkpoint": 0}:
            assert time.monotonic() < deadline, outbox.pending(sink.name)
            await outbox.drain()
            waits.append(log.cursor(sink.name, "bundle")["next_attempt_at"])
            await asyncio.sleep(0.01)
    finally:
        central.release.set()
        await sink.close()
        await runner.cleanup()
    bundle_ids = [log.entry(i).bundle_id for i in range(30)]
    stored_bundles = [k for k in central.order if not k.startswith("checkpoint-")]
    assert stored_bundles == bundle_ids  # every bundle, in order, once
    assert sorted(k for k in central.order if k.startswith("checkpoint-")) == sorted(
        f"checkpoint-{key.verify_key.key_id(ORIGIN).hex()}-{s}" for s in (10, 20, 30))
    # The stalled upload was sent again with the same key and deduplicated.
    keys = [k for k, _, _ in central.requests]
    assert keys.count(bundle_ids[1]) >= 2 and central.order.count(bundle_ids[1]) == 1
    first_checkpoint = next(k for k in keys if k.startswith("checkpoint-"))
    assert keys.count(first_checkpoint) >= 3  # 503, stalled, then deduplicated
    assert central.plans == {"bundle": [], "checkpoint": []}  # every scripted failure happened
    assert len(central.requests) > len(central.stored)
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in central.requests)
    for k, body in central.stored.items():
        if k.startswith("checkpoint-"):
            parse_checkpoint(body, key=key.verify_key, origin=ORIGIN)
        else:
            assert SignedBundle.from_envelope(body).verify(key.verify_key)["id"] == k
    cur = log.cursor(sink.name, "bundle")
    assert cur["attempts"] == 0 and cur["last_error"] is None and cur["delivered"] == 30
    assert TOKEN not in caplog.text
    log.close()


async def test_errors_are_clear_and_never_carry_the_token(tmp_path):
    ca = make_ca(tmp_path, "central")
    other_ca = make_ca(tmp_path, "other")
    central = Central()
    runner, url = await serve(tmp_path, central)
    key, log = make_log(tmp_path, 1)
    untrusting = sink_from_config(tmp_path, url, other_ca)
    # A backoff no loaded machine outlasts before the next drain below (the
    # default, 1-2 s, is less than loading a plugin can take there).
    outbox = Outbox(log, [untrusting], backoff_initial=600)
    try:
        [d] = await outbox.drain()
        assert not d.ok and "certificate" in d.error.lower() and TOKEN not in d.error
        assert central.requests == []  # nothing left the client
        trusting = sink_from_config(tmp_path, url, ca)
        central.plan = ["503"]
        outbox = Outbox(log, [trusting])
        assert await outbox.drain() == []  # the failure's backoff holds the sink, across outboxes
        [d] = await outbox.drain(now=time.time() + 3600)
        assert "answered HTTP 503 Service Unavailable: maintenance" in d.error and TOKEN not in d.error
        await trusting.close()
    finally:
        await untrusting.close()
        await runner.cleanup()
    log.close()


def test_settings_refuse_plain_http_and_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"plugins.evidence-http', key 'url': expected an https:// URL \(plain http:// only with allow_http: true"):
        load(config_data={"state_dir": str(tmp_path), "plugins": {"evidence-http": {"url": "http://central/x"}}})
    loaded = load(config_data={"state_dir": str(tmp_path), "plugins": {"evidence-http": {
        "url": "http://lab.local/x", "allow_http": True}}})
    assert plugin.osiris_evidence_sinks(loaded.ctx).url == "http://lab.local/x"
    assert plugin.osiris_evidence_sinks(load(config_data={"state_dir": str(tmp_path)}).ctx) is None



@pytest.mark.parametrize("status", ["301", "302", "303", "307", "308"])
async def test_a_redirect_is_a_failure_naming_the_location_and_the_token_stays(tmp_path, status):
    ca = make_ca(tmp_path, "central")
    central = Central()
    runner, url = await serve(tmp_path, central)
    key, log = make_log(tmp_path, 1)
    sink = sink_from_config(tmp_path, url, ca)
    outbox = Outbox(log, [sink])
    central.plan = [status]
    try:
        [d] = await outbox.drain()
        assert not d.ok and f"answered HTTP {status}" in d.error and "/elsewhere" in d.error, d.error
        assert central.elsewhere == []  # not followed: no GET, no token sent on
        assert log.cursor(sink.name, "bundle")["delivered"] == 0 and TOKEN not in d.error
        [d] = await outbox.drain(now=time.time() + 3600)  # the service is back: delivered normally
        assert d.ok and central.order == [log.entry(0).bundle_id]
    finally:
        await sink.close()
        await runner.cleanup()
    log.close()


async def test_credentials_in_the_url_stay_out_of_errors():
    from osiris.testing import refused_port

    with refused_port() as port:
        sink = plugin.HttpSink(f"https://uploader:pa55-in-url@127.0.0.1:{port}/api/evidence", timeout=10)
        try:
            with pytest.raises(plugin.DeliveryError) as e:
                await sink.deliver("01-bundle", b"{}")
        finally:
            await sink.close()
    assert f"https://127.0.0.1:{port}" in str(e.value) and "pa55-in-url" not in str(e.value)


def test_a_url_with_user_and_password_is_refused_pointing_to_the_secret(tmp_path):
    with pytest.raises(ConfigError) as e:
        load(config_data={"state_dir": str(tmp_path), "plugins": {"evidence-http": {
            "url": "https://uploader:pa55-in-url@central.example/api/evidence"}}})
    msg = str(e.value)
    assert "plugins.evidence-http', key 'url': expected a URL without user:password@" in msg
    assert "token_secret" in msg and "pa55-in-url" not in msg and "uploader" not in msg
