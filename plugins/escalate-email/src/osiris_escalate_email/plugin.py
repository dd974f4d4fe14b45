"""The escalate-email plugin: L3 escalation by e-mail over SMTP.

Why the standard library's smtplib (through ``ctx.run_blocking``) rather
than aiosmtplib: an escalation is a rare, short conversation, so a thread of
the agent's bounded pool costs nothing worth saving, and smtplib's STARTTLS,
AUTH and timeouts are well understood and add no dependency to the
appliance image. ``timeout`` bounds every socket operation, so a stuck
server cannot hold a pool thread for longer than that per step.

Transport security: STARTTLS is required, with the server certificate and
host name validated (system CAs or ``ca_file``). A server that does not
offer STARTTLS is refused before anything (credentials or incident text) is
sent, unless ``allow_plaintext_for_lab`` is set. Connection errors, timeouts
and 4xx (transient) SMTP replies are retried with exponential backoff; 5xx
replies, authentication failures and TLS failures are final.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import smtplib
import ssl
from collections.abc import Awaitable, Callable, Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, FilePath, ValidationInfo, field_validator

from osiris import SettingsSection, hookimpl

NAME = "escalate-email"
log = logging.getLogger(f"osiris.{NAME}")


def _address(value: str) -> str:
    addr = parseaddr(value)[1]
    if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", addr):
        raise ValueError(f"an e-mail address such as 'noc@msp.example', got {value!r}")
    return value


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    host: str | None = Field(default=None, description="SMTP server (submission); unset: the channel is off")
    port: int = Field(default=587, ge=1, le=65535, description="SMTP submission port (STARTTLS)")
    from_addr: str | None = Field(default=None, alias="from", validate_default=True, description="Sender address")
    to: list[str] = Field(default_factory=list, validate_default=True, description="Recipient addresses")
    username: str | None = Field(default=None, description="SMTP AUTH user name; unset: no AUTH")
    password_secret: str | None = Field(
        default=None, validate_default=True, description="Name of the secret holding the SMTP AUTH password"
    )
    ca_file: FilePath | None = Field(default=None, description="PEM CA bundle to validate the server (default: system CAs)")
    timeout: float = Field(default=10.0, gt=0, description="Seconds per SMTP step (connect, each command)")
    retries: int = Field(default=3, ge=0, le=10, description="Further attempts after a transient failure")
    backoff: float = Field(default=2.0, ge=0, description="Seconds before the first retry; doubles each retry")
    backoff_max: float = Field(default=60.0, ge=0, description="Longest wait between attempts, seconds")
    allow_plaintext_for_lab: bool = Field(
        default=False, description="Send without STARTTLS when the server does not offer it (a lab only)"
    )
    subject_prefix: str = Field(default="[Osiris]", description="Start of every subject line")
    channel_name: str = Field(default="email", min_length=1, description="Name of the channel in incidents and evidence")

    @field_validator("from_addr")
    @classmethod
    def _from(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if info.data.get("host"):
                raise ValueError("a sender address when host is set")
            return None
        return _address(value)

    @field_validator("to")
    @classmethod
    def _to(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not value and info.data.get("host"):
            raise ValueError("at least one recipient address when host is set")
        return [_address(v) for v in value]

    @field_validator("password_secret")
    @classmethod
    def _password(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("username") and not value:
            raise ValueError("the name of the secret holding the password when username is set")
        if value and not info.data.get("username"):
            raise ValueError("no password secret without a username (set both or neither)")
        return value


class EscalationError(Exception):
    """The e-mail was not delivered (after the retries that apply)."""


class PlaintextRefused(Exception):
    """The server does not offer STARTTLS and plaintext is not allowed."""


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


def subject(incident: Mapping[str, Any], prefix: str) -> str:
    return _one_line(
        f"{prefix} {str(incident.get('severity', '')).upper()} {incident.get('check_title') or incident.get('check_id')}"
        f" on {incident.get('target')} ({incident.get('site')}), incident {incident.get('id')}"
    )


def body_text(incident: Mapping[str, Any]) -> str:
    attempts = [
        f"  {h.get('tier')} {h.get('runbook') or h.get('planner')}: {'healed' if h.get('ok') else 'failed'}: "
        f"{_one_line(h.get('detail', ''))}"
        for h in incident.get("tier_history") or []
    ] or ["  (none)"]
    return "\n".join(
        [
            f"Osiris could not heal drift at site {incident.get('site')}; a person is needed.",
            "",
            f"Incident:  {incident.get('id')}",
            f"Target:    {incident.get('target')} (role {incident.get('role') or '-'})",
            f"Check:     {incident.get('check_id')}: {incident.get('check_title')}",
            f"Severity:  {incident.get('severity')}",
            f"HIPAA:     {', '.join(incident.get('hipaa') or []) or '-'}",
            f"Opened:    {incident.get('opened_at')}",
            f"Failing:   {_one_line(incident.get('reason', ''))}",
            f"Escalated: {_one_line(incident.get('escalation_reason') or '-')}",
            "",
            "Healing attempts:",
            *attempts,
            "",
            "The full incident is attached as JSON.",
            "",
        ]
    )


def message(incident: Mapping[str, Any], settings: Settings) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject(incident, settings.subject_prefix)
    msg["From"] = settings.from_addr
    msg["To"] = ", ".join(settings.to)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=parseaddr(settings.from_addr or "")[1].rpartition("@")[2] or None)
    msg["X-Osiris-Incident"] = _one_line(incident.get("id"))
    msg.set_content(body_text(incident))
    doc = json.dumps(dict(incident), indent=2, sort_keys=True, ensure_ascii=False, default=str)
    msg.add_attachment(doc.encode("utf-8"), maintype="application", subtype="json", filename=f"incident-{incident.get('id')}.json")
    return msg


def send(settings: Settings, msg: EmailMessage, password: str | None, tls: ssl.SSLContext) -> dict:
    """One SMTP conversation (blocking; run in the pool). Returns the
    recipients the server refused while accepting the others."""
    with smtplib.SMTP(settings.host or "", settings.port, timeout=settings.timeout) as smtp:
        smtp.ehlo()
        if smtp.has_extn("starttls"):
            smtp.starttls(context=tls)
            smtp.ehlo()
        elif not settings.allow_plaintext_for_lab:
            raise PlaintextRefused(
                "the server does not offer STARTTLS; refusing to send credentials or incident text "
                "in the clear (allow_plaintext_for_lab: true allows it, for a lab)"
            )
        if settings.username:
            smtp.login(settings.username, password or "")
        return smtp.send_message(msg)


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    return f"SMTP {exc.smtp_code} {_one_line(text)}"


def classify(exc: BaseException, timeout: float) -> tuple[bool, str]:
    """(retry?, what happened) for an exception out of :func:`send`."""
    # smtplib reports a read that timed out as SMTPServerDisconnected.
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        return True, f"timed out after {timeout:g} s"
    if isinstance(exc, PlaintextRefused):
        return False, str(exc)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return all(400 <= c < 500 for c in codes), f"every recipient refused: {sorted(set(codes))}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500, _reply(exc)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return False, f"server does not support it: {exc}"
    if isinstance(exc, ssl.SSLError):  # certificate or handshake: retrying will not help
        return False, f"TLS failed: {exc}"
    if isinstance(exc, OSError):  # refused, reset, disconnected (SMTPServerDisconnected is one)
        return True, f"{type(exc).__name__}: {exc}"
    return False, f"{type(exc).__name__}: {exc}"


class EmailChannel:
    """``sleep`` is injectable so the backoff can be checked without waiting."""

    def __init__(self, settings: Settings, ctx: Any, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.name = settings.channel_name
        self.settings = settings
        self.ctx = ctx
        self._sleep = sleep
        self._tls = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)

    async def escalate(self, incident: Mapping[str, Any]) -> None:
        s = self.settings
        msg = message(incident, s)  # one Message-ID for every attempt
        password = self.ctx.secret(s.password_secret) if s.password_secret else None
        what = f"{NAME}: incident {incident.get('id')} via {s.host}:{s.port}"
        attempts = s.retries + 1
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await self._sleep(min(s.backoff * 2 ** (attempt - 2), s.backoff_max))
            try:
                refused = await self.ctx.run_blocking(send, s, msg, password.reveal() if password else None, self._tls)
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised as EscalationError
                retry, detail = classify(exc, s.timeout)
                if not retry:
                    raise EscalationError(f"{what}: {detail}; not retried") from None
                log.warning("%s: attempt %d/%d failed: %s", what, attempt, attempts, detail)
                continue
            if refused:
                log.warning("%s: server refused some recipients: %s", what, ", ".join(sorted(refused)))
            log.info("%s: sent to %d recipient(s) (attempt %d/%d)", what, len(s.to) - len(refused), attempt, attempts)
            return
        raise EscalationError(f"{what}: not delivered after {attempts} attempts; last error: {detail}")


@hookimpl
def osiris_settings():
    return SettingsSection(NAME, Settings, "L3 escalation: e-mail over SMTP with STARTTLS")


@hookimpl
def osiris_escalation_channels(ctx):
    settings = ctx.settings(NAME)
    if settings.host is None:
        return None
    return EmailChannel(settings, ctx)
