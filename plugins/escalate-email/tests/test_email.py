"""The e-mail channel against a real aiosmtpd server on loopback: STARTTLS
with a certificate from a test CA that the client validates, AUTH, transient
and permanent refusals, a server without STARTTLS and one that never
answers."""

import asyncio
import email
import email.policy
import json
import logging
import time
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from osiris import testing
from osiris.app import load
from osiris.testing import load_plugin
from osiris.config import ConfigError
from osiris_escalate_email.plugin import EmailChannel, EscalationError
from osiris_lab import pki as lab_pki

PASSWORD = "smtp-pw-51d0e8-must-never-leak"
USER = "osiris@clinic-a.example"

INCIDENT = {
    "id": 7,
    "target": "ws-frontdesk",
    "role": "workstation",
    "check_id": "windows.defender.realtime_enabled",
    "check_title": "Defender real-time protection on",
    "severity": "high",
    "hipaa": ["164.308(a)(5)(ii)(B)"],
    "reason": "real-time protection is off",
    "facts": {"realtime": False},
    "opened_at": "2025-03-01T10:00:00+00:00",
    "site": "clinic-a",
    "tier_history": [
        {"tier": "L1", "runbook": "windows.defender.enable_realtime", "ok": False, "detail": "policy locked"},
        {"tier": "L2", "runbook": "windows.defender.reset_policy", "ok": False, "detail": "verification failed"},
    ],
    "candidates": [],
    "escalation_reason": "no rule or plan healed the drift",
}


@dataclass
class Mailbox:
    """aiosmtpd handler and authenticator: stores messages, answers DATA
    with the next planned reply (default 250), records AUTH attempts and
    whether TLS was up when they came."""

    plan: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    data_calls: int = 0
    auths: list = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):
        self.data_calls += 1
        reply = self.plan.pop(0) if self.plan else "250 OK"
        if reply.startswith("250"):
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return reply

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.auths.append((login, password, server._tls_protocol is not None))
        return AuthResult(success=(login, password) == (USER, PASSWORD), handled=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return lab_pki.create(tmp_path_factory.mktemp("pki"))


class EphemeralController(Controller):
    """aiosmtpd's Controller on a port the kernel picks (port 0), read back
    once bound: a port found free beforehand can be taken in between."""

    def _create_server(self):
        async def create():
            server = await Controller._create_server(self)
            self.port = server.sockets[0].getsockname()[1]
            return server
        return create()


@pytest.fixture
def smtp_server(pki):
    """Start a server: ``smtp_server(starttls=True)`` -> (port, mailbox)."""
    controllers = []

    def start(starttls=True):
        box = Mailbox()
        tls = {"tls_context": pki.server_context(), "require_starttls": True, "auth_require_tls": True} if starttls else {"auth_require_tls": False}
        ctl = EphemeralController(box, hostname="127.0.0.1", port=0, authenticator=box.authenticate,
                                  ready_timeout=60, **tls)
        ctl.start()
        controllers.append(ctl)
        return ctl.port, box

    yield start
    for ctl in controllers:
        ctl.stop()


def make_channel(tmp_path, pki, port, **settings):
    config = {
        "host": "127.0.0.1",
        "port": port,
        "from": "Osiris clinic-a <osiris@clinic-a.example>",
        "to": ["noc@msp.example", "oncall@msp.example"],
        "username": USER,
        "password_secret": "smtp-password",
        "ca_file": str(pki.ca_file),
        "timeout": 30,  # per SMTP step with a healthy server; a test that wants a timeout passes its own
        **settings,
    }
    loaded = load_plugin(tmp_path, "escalate-email", config, secrets={"smtp-password": PASSWORD})
    delays: list[float] = []

    async def sleep(seconds):
        delays.append(seconds)

    ch = EmailChannel(loaded.ctx.settings("escalate-email"), loaded.ctx, sleep=sleep)
    ch.delays, ch.loaded = delays, loaded
    return ch


async def test_sends_over_validated_starttls_with_auth(tmp_path, pki, smtp_server):
    port, box = smtp_server()
    ch = make_channel(tmp_path, pki, port)
    [(name, hooked)] = ch.loaded.pm.contributions("osiris_escalation_channels", ctx=ch.loaded.ctx)
    assert name == "escalate-email" and hooked.name == "email"
    await hooked.escalate(INCIDENT)

    assert box.auths == [(USER, PASSWORD, True)]  # AUTH only after STARTTLS
    [(mail_from, rcpts, content)] = box.messages
    assert mail_from == "osiris@clinic-a.example"
    assert rcpts == ["noc@msp.example", "oncall@msp.example"]
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert msg["Subject"] == "[Osiris] HIGH Defender real-time protection on on ws-frontdesk (clinic-a), incident 7"
    assert msg["X-Osiris-Incident"] == "7"
    text = msg.get_body(("plain",)).get_content()
    assert "real-time protection is off" in text
    assert "L2 windows.defender.reset_policy: failed: verification failed" in text
    assert "Escalated: no rule or plan healed the drift" in text
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "incident-7.json"
    assert json.loads(attachment.get_content()) == INCIDENT
    assert PASSWORD.encode() not in content


async def test_a_certificate_from_another_ca_is_refused_before_auth(tmp_path, pki, smtp_server):
    port, box = smtp_server()
    other = lab_pki.create(tmp_path / "other-ca")
    ch = make_channel(tmp_path, other, port)  # trusts only the other CA
    with pytest.raises(EscalationError, match="TLS failed: .*CERTIFICATE_VERIFY_FAILED.*; not retried"):
        await ch.escalate(INCIDENT)
    assert box.auths == [] and box.messages == [] and ch.delays == []


async def test_server_without_starttls_is_refused_unless_lab(tmp_path, pki, smtp_server, caplog):
    caplog.set_level(logging.DEBUG)
    port, box = smtp_server(starttls=False)
    ch = make_channel(tmp_path, pki, port)
    with pytest.raises(EscalationError, match="does not offer STARTTLS; refusing.*allow_plaintext_for_lab") as exc:
        await ch.escalate(INCIDENT)
    assert box.auths == [] and box.data_calls == 0 and ch.delays == []
    assert PASSWORD not in caplog.text + str(exc.value)

    lab = make_channel(tmp_path, pki, port, allow_plaintext_for_lab=True, username=None, password_secret=None)
    await lab.escalate(INCIDENT)
    assert len(box.messages) == 1 and box.auths == []


async def test_wrong_password_is_final_and_never_shown(tmp_path, pki, smtp_server, caplog):
    caplog.set_level(logging.DEBUG)
    port, box = smtp_server()
    ch = make_channel(tmp_path, pki, port)
    ch.loaded.ctx.secrets.path_of("smtp-password").write_text("not-the-password")  # read at send time
    with pytest.raises(EscalationError, match="SMTP 535 .*; not retried") as exc:
        await ch.escalate(INCIDENT)
    # smtplib tries each mechanism the server offers (PLAIN, LOGIN), all over TLS
    assert set(box.auths) == {(USER, "not-the-password", True)} and box.messages == [] and ch.delays == []
    for text in (caplog.text, str(exc.value), repr(exc.value)):
        assert "not-the-password" not in text and PASSWORD not in text


async def test_transient_refusal_is_retried_permanent_is_not(tmp_path, pki, smtp_server):
    port, box = smtp_server()
    box.plan = ["451 4.3.0 try again later", "451 4.3.0 try again later"]
    ch = make_channel(tmp_path, pki, port, backoff=0.5)
    await ch.escalate(INCIDENT)
    assert box.data_calls == 3 and len(box.messages) == 1 and ch.delays == [0.5, 1.0]

    box.plan = ["554 5.7.1 rejected as spam"]
    with pytest.raises(EscalationError, match="SMTP 554 5.7.1 rejected as spam; not retried"):
        await ch.escalate(INCIDENT)
    assert box.data_calls == 4 and ch.delays == [0.5, 1.0]


async def test_a_silent_server_times_out_and_is_retried(tmp_path, pki):
    connections = []

    async def silent(reader, writer):
        connections.append(writer)
        await reader.read()  # never greets

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        ch = make_channel(tmp_path, pki, port, timeout=0.2, retries=1)
        with pytest.raises(EscalationError, match="not delivered after 2 attempts; last error: timed out after 0.2 s"):
            await ch.escalate(INCIDENT)
        # The server's loop may accept the second connection only after the
        # client gave up on it: wait for it rather than assume it.
        deadline = time.monotonic() + 60
        while len(connections) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(connections) == 2 and ch.delays == [2.0]
    finally:
        for w in connections:
            w.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
def refused_port():
    with testing.refused_port() as port:
        yield port


async def test_connection_refused_is_retried(tmp_path, pki, refused_port):
    ch = make_channel(tmp_path, pki, refused_port, retries=2, backoff=1, backoff_max=1.5)
    with pytest.raises(EscalationError, match="after 3 attempts; last error: ConnectionRefusedError"):
        await ch.escalate(INCIDENT)
    assert ch.delays == [1.0, 1.5]


def test_settings_errors_name_the_key(tmp_path, pki):
    def err(**settings):
        with pytest.raises(ConfigError) as exc:
            make_channel(tmp_path, pki, 587, **settings)
        return str(exc.value)

    assert "'plugins.escalate-email', key 'to': expected at least one recipient" in err(to=[])
    assert "key 'from': expected a sender address" in err(**{"from": None})
    assert "key 'to': expected an e-mail address such as 'noc@msp.example', got 'noc'" in err(to=["noc@msp.example", "noc"])
    assert "key 'password_secret': expected the name of the secret" in err(password_secret=None)
    assert "unknown key 'password'" in err(password=PASSWORD)
    assert PASSWORD not in err(password=PASSWORD)


def test_no_host_means_no_channel(tmp_path):
    loaded = load(
        config_data={"state_dir": str(tmp_path), "plugins": {"escalate-email": {}}},
        environ={"OSIRIS_PLUGINS": "escalate-email"},
    )
    assert loaded.pm.contributions("osiris_escalation_channels", ctx=loaded.ctx) == []
