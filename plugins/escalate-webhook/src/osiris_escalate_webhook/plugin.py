"""The escalate-webhook plugin: L3 escalation as a signed JSON POST.

aiohttp (already the core's HTTP library) posts the incident to one URL.
The body is signed with HMAC-SHA256 over the timestamp and the exact body
bytes (:mod:`.signing`, docs/escalation.md); the key is a secret read at send
time and never logged. Connection errors, timeouts, 5xx and 429 are retried
with exponential backoff; any other answer outside 2xx is final, because
sending the same request again will not change it. Redirects are not
followed: the signature headers would go wherever the redirect points.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, FilePath, ValidationInfo, field_validator

from osiris import SettingsSection, __version__, hookimpl
from osiris.httpclient import origin, require_https, retry_after

from .signing import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

NAME = "escalate-webhook"
EVENT = "incident.escalated"
log = logging.getLogger(f"osiris.{NAME}")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Declared before url: the url validator reads it.
    allow_http_for_lab: bool = Field(
        default=False, description="Allow a plain http:// URL (a lab receiver only; the incident travels unencrypted)"
    )
    url: str | None = Field(default=None, description="Receiver URL (https://); unset: the channel is off")
    secret_name: str = Field(default=NAME, min_length=1, description="Name of the secret holding the HMAC key")
    timeout: float = Field(default=10.0, gt=0, description="Seconds per attempt (connect, send, answer)")
    retries: int = Field(default=3, ge=0, le=10, description="Further attempts after the first one fails")
    backoff: float = Field(default=1.0, ge=0, description="Seconds before the first retry; doubles each retry")
    backoff_max: float = Field(default=60.0, ge=0, description="Longest wait between attempts, seconds")
    ca_file: FilePath | None = Field(default=None, description="PEM CA bundle to validate the receiver (default: system CAs)")
    channel_name: str = Field(default="webhook", min_length=1, description="Name of the channel in incidents and evidence")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return require_https(value, allow_http=bool(info.data.get("allow_http_for_lab")), flag="allow_http_for_lab")


class EscalationError(Exception):
    """The escalation was not delivered (after the retries that apply)."""


def payload(incident: Mapping[str, Any], delivery: str, sent_at: str) -> bytes:
    """The request body: compact, key-sorted JSON, identical on every retry."""
    doc = {"event": EVENT, "delivery": delivery, "sent_at": sent_at, "agent_version": __version__, "incident": dict(incident)}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


class WebhookChannel:
    """One receiver URL. ``sleep`` and ``clock`` are injectable so that the
    backoff schedule and the timestamp can be checked without waiting."""

    def __init__(
        self,
        settings: Settings,
        ctx: Any,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ):
        assert settings.url is not None
        self.name = settings.channel_name
        self.settings = settings
        self.ctx = ctx
        self.url = settings.url
        self.origin = origin(settings.url)
        self._sleep = sleep
        self._clock = clock
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(settings.ca_file)) if settings.ca_file else True
        )

    def _delay(self, retry: int, hint: float | None) -> float:
        """Exponential backoff, at least the server's Retry-After ``hint``, capped."""
        s = self.settings
        delay = s.backoff * 2 ** (retry - 1)
        if hint is not None:
            delay = max(delay, hint)
        return min(delay, s.backoff_max)

    async def escalate(self, incident: Mapping[str, Any]) -> None:
        s = self.settings
        delivery = str(uuid.uuid4())
        body = payload(incident, delivery, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock())))
        key = self.ctx.secret(s.secret_name)  # a missing key fails before anything is sent
        what = f"{NAME}: incident {incident.get('id')} delivery {delivery} to {self.origin}"
        attempts = s.retries + 1
        last = "not attempted"
        wait_hint: float | None = None
        timeout = aiohttp.ClientTimeout(total=s.timeout)
        connector = aiohttp.TCPConnector(ssl=self._ssl)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            for attempt in range(1, attempts + 1):
                if attempt > 1:
                    await self._sleep(self._delay(attempt - 1, wait_hint))
                    wait_hint = None
                ts = int(self._clock())
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": f"osiris-{NAME}/{__version__}",
                    TIMESTAMP_HEADER: str(ts),
                    SIGNATURE_HEADER: sign(key.reveal(), ts, body),
                    DELIVERY_HEADER: delivery,
                    "Idempotency-Key": delivery,
                }
                try:
                    async with session.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                        status, reason = resp.status, resp.reason or ""
                        wait_hint = retry_after(resp.headers.get("Retry-After"))
                        await resp.read()
                except aiohttp.ClientSSLError as exc:
                    # A certificate that does not validate will not validate next time either.
                    raise EscalationError(f"{what}: TLS failed: {self._safe(exc)}") from None
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    last = f"timed out after {s.timeout:g} s" if isinstance(exc, asyncio.TimeoutError) else self._safe(exc)
                    log.warning("%s: attempt %d/%d failed: %s", what, attempt, attempts, last)
                    continue
                if 200 <= status < 300:
                    log.info("%s: delivered (HTTP %d, attempt %d/%d)", what, status, attempt, attempts)
                    return
                last = f"HTTP {status} {reason}".rstrip()
                if status == 429 or status >= 500:
                    log.warning("%s: attempt %d/%d failed: %s", what, attempt, attempts, last)
                    continue
                raise EscalationError(f"{what}: refused with {last}; not retried (only 5xx and 429 are)")
        raise EscalationError(f"{what}: not delivered after {attempts} attempts; last error: {last}")

    def _safe(self, exc: BaseException) -> str:
        """An exception's text with the URL cut down to its origin."""
        return f"{type(exc).__name__}: {exc}".replace(self.url, self.origin)


@hookimpl
def osiris_settings():
    return SettingsSection(NAME, Settings, "L3 escalation: signed JSON webhook")


@hookimpl
def osiris_escalation_channels(ctx):
    settings = ctx.settings(NAME)
    if settings.url is None:
        return None
    return WebhookChannel(settings, ctx)
