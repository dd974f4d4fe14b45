"""The l2-llm plugin: an L2 planner backed by an OpenAI-compatible chat API.

The model is asked to choose ONE of the incident's candidate runbooks (the
installed runbooks that fix the failing check and that the healing mode
allows) and to fill its parameters. It cannot write code: the answer is
constrained by a JSON schema (``response_format: json_schema``) whose
runbook id is an enum of the candidates, and is then validated here again,
because a server may ignore the schema: the runbook must be a candidate and
the parameters must satisfy that runbook's ``params_schema`` (checked with
the ``jsonschema`` library). Anything else is logged and answered with
``None``, which hands the incident on to the next planner or to L3.

Off by default (``enabled: false``): then the hook returns ``None`` at once
and nothing leaves the appliance. What is sent is the minimum needed to
choose (docs/l2-llm.md): no host name, site or incident id. aiohttp is the
client because it is the core's HTTP library and the planner runs in the
agent's event loop; the API key is a secret read per request and never
logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
import jsonschema
from pydantic import BaseModel, ConfigDict, Field, FilePath, ValidationInfo, field_validator

from osiris import SettingsSection, __version__, hookimpl
from osiris.httpclient import require_https
from osiris.records import PlanProposal
from osiris.secrets import SecretError

NAME = "l2-llm"
log = logging.getLogger(f"osiris.{NAME}")

SYSTEM_PROMPT = """\
You are the L2 planner of Osiris, an appliance that keeps the computers of a \
medical practice compliant with the HIPAA Security Rule by healing \
configuration drift. A check failed, an earlier attempt may have failed too, \
and you must choose exactly ONE runbook from the candidates to fix it, with \
parameter values that follow that runbook's params_schema. You cannot run \
commands or write scripts: you can only choose a candidate by its id. Prefer \
the lowest risk that can work, and do not repeat an attempt that already \
failed unless nothing else applies. Answer with the JSON object the response \
schema describes; the rationale is one or two sentences for the audit log."""

RATIONALE_MAX = 1000


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Declared first: the validators below read them.
    enabled: bool = Field(default=False, description="Ask the model at all (off: no request is ever made)")
    allow_http_for_lab: bool = Field(default=False, description="Allow a plain http:// endpoint (a lab only)")
    url: str = Field(
        default="https://api.openai.com/v1/chat/completions",
        description="Chat completions endpoint of an OpenAI-compatible API",
    )
    model: str | None = Field(default=None, validate_default=True, description="Model name sent with each request")
    api_key_secret: str | None = Field(
        default=NAME, description="Name of the secret holding the API key (null: send no Authorization header)"
    )
    timeout: float = Field(default=30.0, gt=0, description="Seconds for the whole request")
    ca_file: FilePath | None = Field(default=None, description="PEM CA bundle to validate the endpoint (default: system CAs)")
    # null leaves a parameter out, for models that refuse it (some reasoning models).
    max_tokens: int | None = Field(default=400, ge=16, description="Upper bound on the answer's length, tokens (null: not sent)")
    temperature: float | None = Field(default=0.0, ge=0, le=2, description="Sampling temperature, 0 most deterministic (null: not sent)")
    strict: bool = Field(default=True, description="Ask the server to enforce the answer schema strictly")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        return require_https(value, allow_http=bool(info.data.get("allow_http_for_lab")), flag="allow_http_for_lab")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("enabled") and not value:
            raise ValueError("a model name when enabled is true")
        return value


def answer_schema(candidates: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON schema the answer must follow: one candidate's id (an enum),
    parameters following one of the candidates' params_schema (the chosen
    one's is checked after the answer), and a short rationale."""
    schemas = [dict(c.get("params_schema") or {"type": "object"}) for c in candidates]
    return {
        "type": "object",
        "properties": {
            "runbook": {"type": "string", "enum": [c["id"] for c in candidates]},
            "params": schemas[0] if len(schemas) == 1 else {"anyOf": schemas},
            "rationale": {"type": "string"},
        },
        "required": ["runbook", "params", "rationale"],
        "additionalProperties": False,
    }


def question(incident: Mapping[str, Any]) -> dict[str, Any]:
    """What the model sees of an incident: no host name, site or id."""
    return {
        "check": {
            "id": incident.get("check_id"),
            "title": incident.get("check_title"),
            "severity": incident.get("severity"),
            "hipaa": list(incident.get("hipaa") or []),
        },
        "host_role": incident.get("role"),
        "failing_verdict": incident.get("reason"),
        "facts": incident.get("facts") or {},
        "attempts_so_far": [
            {k: h[k] for k in ("tier", "runbook", "planner", "ok", "detail") if k in h} for h in incident.get("tier_history") or []
        ],
        "candidates": [
            {k: c.get(k) for k in ("id", "title", "risk", "params_schema")} for c in incident.get("candidates") or []
        ],
    }


def request_body(settings: Settings, incident: Mapping[str, Any]) -> dict[str, Any]:
    limits = {"temperature": settings.temperature, "max_tokens": settings.max_tokens}
    return {
        "model": settings.model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": json.dumps(question(incident), sort_keys=True, default=str)},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "runbook_choice", "strict": settings.strict, "schema": answer_schema(incident["candidates"])},
        },
        **{k: v for k, v in limits.items() if v is not None},
    }


class Rejected(Exception):
    """The model's answer cannot be used; the message says why (no secrets)."""


def validate_answer(content: Any, candidates: list[Mapping[str, Any]]) -> tuple[str, dict[str, Any], str]:
    """(runbook, params, rationale) from the message content, or
    :class:`Rejected`."""
    if not isinstance(content, str):
        raise Rejected("the answer has no text content")
    try:
        answer = json.loads(content)
    except ValueError:
        raise Rejected(f"the answer is not JSON: {content[:120]!r}") from None
    if not isinstance(answer, dict):
        raise Rejected(f"the answer is not a JSON object: {content[:120]!r}")
    by_id = {c["id"]: c for c in candidates}
    runbook = answer.get("runbook")
    if runbook not in by_id:
        raise Rejected(f"the answer names runbook {runbook!r}, which is not a candidate (candidates: {', '.join(by_id)})")
    params = answer.get("params", {})
    if not isinstance(params, dict):
        raise Rejected(f"params for {runbook} is not an object")
    schema = by_id[runbook].get("params_schema") or {"type": "object"}
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise Rejected(f"runbook {runbook} has an invalid params_schema: {exc.message}") from None
    errors = sorted(cls(schema).iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise Rejected(f"params for {runbook} do not follow its params_schema: {where}: {errors[0].message}")
    rationale = answer.get("rationale")
    return runbook, params, (rationale if isinstance(rationale, str) else "")[:RATIONALE_MAX]


class Planner:
    def __init__(self, settings: Settings, ctx: Any):
        self.settings = settings
        self.ctx = ctx
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(settings.ca_file)) if settings.ca_file else True
        )

    async def plan(self, incident: Mapping[str, Any]) -> PlanProposal | None:
        s = self.settings
        what = f"{NAME}: incident {incident.get('id')} ({incident.get('check_id')})"
        try:
            content = await self._ask(incident)
            runbook, params, rationale = validate_answer(content, incident["candidates"])
        except Rejected as exc:
            log.warning("%s: no plan: %s", what, exc)
            return None
        except SecretError as exc:  # names the secret, never its value
            log.error("%s: no plan: %s", what, exc)
            return None
        except asyncio.TimeoutError:
            log.warning("%s: no plan: %s timed out after %g s", what, s.model, s.timeout)
            return None
        except aiohttp.ClientError as exc:
            log.warning("%s: no plan: request failed: %s: %s", what, type(exc).__name__, exc)
            return None
        log.info("%s: model %s chose %s", what, s.model, runbook)
        return PlanProposal(runbook, params, f"{NAME} ({s.model}): {rationale}".rstrip(": "))

    async def _ask(self, incident: Mapping[str, Any]) -> Any:
        s = self.settings
        headers = {"Content-Type": "application/json", "User-Agent": f"osiris-{NAME}/{__version__}"}
        if s.api_key_secret:
            headers["Authorization"] = f"Bearer {self.ctx.secret(s.api_key_secret).reveal()}"
        timeout = aiohttp.ClientTimeout(total=s.timeout)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=self._ssl)) as session:
            async with session.post(s.url, json=request_body(s, incident), headers=headers, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise Rejected(f"the API answered HTTP {resp.status}{await _error_kind(resp)}")
                try:
                    doc = await resp.json(content_type=None)
                    message = doc["choices"][0]["message"]
                except (ValueError, KeyError, IndexError, TypeError):
                    raise Rejected("the API's response is not a chat completion") from None
        if isinstance(message, dict) and message.get("refusal"):
            raise Rejected(f"the model refused: {str(message['refusal'])[:200]}")
        return message.get("content") if isinstance(message, dict) else None


async def _error_kind(resp: aiohttp.ClientResponse) -> str:
    """The error's type and code, not its message: some APIs echo part of
    the key in the message of an authentication error."""
    try:
        err = (await resp.json(content_type=None))["error"]
        kind = [str(err[k]) for k in ("type", "code") if isinstance(err, dict) and err.get(k)]
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        return ""
    return f" ({', '.join(kind)})" if kind else ""


@hookimpl
def osiris_settings():
    return SettingsSection(NAME, Settings, "L2 planner: an OpenAI-compatible chat API chooses one candidate runbook")


@hookimpl
def osiris_plan(incident, ctx):
    settings = ctx.settings(NAME)
    # Return None itself (not a coroutine that resolves to None) whenever
    # there is nothing to ask, so the next planner gets its turn.
    if not settings.enabled or not incident.get("candidates"):
        return None
    return Planner(settings, ctx).plan(incident)
