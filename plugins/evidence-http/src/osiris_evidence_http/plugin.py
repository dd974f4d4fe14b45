"""The evidence-http plugin: upload to the central service over HTTPS.

Every item is one ``POST`` to ``url``:

* a bundle: the signed-bundle envelope (docs/evidence.md), ``Content-Type:
  application/vnd.osiris.signed-bundle+json``, ``X-Osiris-Kind: bundle``;
* a checkpoint: the signed note, ``Content-Type: text/plain;
  charset=utf-8``, ``X-Osiris-Kind: checkpoint``;

with ``Idempotency-Key: <item id>`` (a bundle's UUID, or
``checkpoint-<key id>-<size>``) so the service stores each item once
however often it is sent, and ``Authorization: Bearer <token>`` when
``token_secret`` names a secret. Any 2xx is success. Redirects are never
followed (a 3xx is a failure naming its ``Location``: following would turn
the POST into a GET and carry the token elsewhere). Anything else (a 5xx,
a 429 with ``Retry-After``, a refused connection, a timeout, a certificate
that does not validate) raises, and the core's outbox retries with
exponential backoff, honouring ``Retry-After``, until the service takes it:
an unreachable service delays evidence, never loses it.

TLS is validated against ``ca_file`` (or the system's CAs); plain
``http://`` is refused unless ``allow_http`` is set (labs only).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from osiris import SettingsSection, hookimpl
from osiris.httpclient import origin, require_https, retry_after

NAME = "evidence-http"
BUNDLE_TYPE = "application/vnd.osiris.signed-bundle+json"
NOTE_TYPE = "text/plain; charset=utf-8"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Declared before url: the url validator reads it.
    allow_http: bool = Field(default=False, description="Allow plain http:// (labs only; evidence would travel unencrypted)")
    url: str | None = Field(default=None, description="Upload URL of the central service (https://...); unset: no sink")
    ca_file: Path | None = Field(default=None, description="CA certificates (PEM) that sign the service's certificate")
    token_secret: str | None = Field(default=None, description="Name of the secret holding the bearer token")
    timeout: float = Field(default=30.0, gt=0, le=600, description="Seconds one upload may take")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        url = require_https(value, allow_http=bool(info.data.get("allow_http")), flag="allow_http")
        if "@" in urlsplit(url).netloc:
            # aiohttp would send it as Basic auth: a secret typed into the
            # config, which the NixOS module puts in the world-readable store.
            raise ValueError("a URL without user:password@ (a secret typed inline): put the token in a secret "
                             "file and name it in plugins.evidence-http.token_secret")
        return url


class DeliveryError(Exception):
    """The service did not take the item; ``retry_after`` (seconds) is the
    service's own hint, if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class HttpSink:
    name = NAME
    kinds = ("bundle", "checkpoint")

    def __init__(self, url: str, *, ssl_context: ssl.SSLContext | None = None, token: Any = None,
                 timeout: float = 30.0):
        self.url = url
        self.host = origin(url)  # never the URL's user:password@
        self.ssl_context = ssl_context
        self.token = token  # an osiris Secret: revealed only into the header
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(ssl=self.ssl_context if self.ssl_context is not None else True),
            )
        return self._session

    async def deliver(self, item_id: str, payload: bytes) -> None:
        checkpoint = item_id.startswith("checkpoint-")
        headers = {
            "Idempotency-Key": item_id,
            "Content-Type": NOTE_TYPE if checkpoint else BUNDLE_TYPE,
            "X-Osiris-Kind": "checkpoint" if checkpoint else "bundle",
        }
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.reveal()}"
        try:
            # Redirects are not followed: aiohttp would turn the POST into a
            # GET on 301/302/303 (a 200 from that is not a delivery) and
            # re-send the bearer token to wherever the Location points.
            async with self._client().post(self.url, data=payload, headers=headers,
                                           allow_redirects=False) as resp:
                text = (await resp.content.read(300)).decode("utf-8", "replace").strip()
                if 200 <= resp.status < 300:
                    return
                if 300 <= resp.status < 400:
                    location = resp.headers.get("Location", "(no Location header)")
                    raise DeliveryError(
                        f"{self.host} answered HTTP {resp.status} {resp.reason} redirecting to {location}: "
                        "redirects are not followed (the upload would become a GET and the token go along); "
                        "set plugins.evidence-http.url to the final address")
                raise DeliveryError(f"{self.host} answered HTTP {resp.status} {resp.reason}: {text[:200]}",
                                    retry_after(resp.headers.get("Retry-After")))
        except asyncio.TimeoutError:
            raise DeliveryError(f"{self.host}: no answer within {self.timeout:g} s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise DeliveryError(f"{self.host}: certificate not trusted: {exc.certificate_error}") from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"{self.host}: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@hookimpl
def osiris_settings():
    return SettingsSection(NAME, Settings, "Upload of signed evidence to the central service over HTTPS")


@hookimpl
def osiris_evidence_sinks(ctx):
    s: Settings = ctx.settings(NAME)
    if s.url is None:
        return None
    context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
    token = ctx.secret(s.token_secret) if s.token_secret else None
    return HttpSink(s.url, ssl_context=context, token=token, timeout=s.timeout)
