"""Settings of the windows plugin, per-target connection options, credentials.

``plugins.windows`` in the config holds :class:`Settings` (concurrency,
timeouts, retries). Each windows target's ``options`` is validated against
:class:`TargetOptions` when the executor is created, so a typo stops the
agent at start-up with a message that names the target and the key.

Transports:

* ``https`` (default, port 5986): TLS with the server certificate checked
  against ``ca_file`` (or the system trust store), then Basic (local
  accounts) or ``auth: ntlm`` (domain accounts, with channel binding).
* ``ntlm`` (port 5985): HTTP with NTLM and message encryption, always.
* ``basic`` (port 5985): Basic over plain HTTP sends the password in clear;
  refused unless the target sets ``allow_insecure_basic_for_lab: true``.

The credential secret named by ``targets[].credential`` holds either
``user:password`` (the user may be ``DOMAIN\\user`` or ``user@domain``; the
password is everything after the first colon) or a JSON object
``{"username": "...", "password": "..."}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from osiris.config import ConfigError, shown, validate_json
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from osiris.secrets import Secret


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrency: int = Field(default=32, ge=1, le=1024, description=(
        "Hosts observed at once. Each needs a thread of the agent's pool, so agent.workers (and "
        "agent.max_concurrent_targets) bound it too"))
    connect_timeout: float = Field(default=10.0, gt=0, le=300, description="Seconds to open a TCP/TLS connection")
    operation_timeout: float = Field(default=20.0, ge=1, le=600, description=(
        "WS-Man OperationTimeout: how long the host may hold one request (Receive long-polls this long); "
        "the HTTP read timeout, after which a silent host is given up, is 1.5 times this plus 1.5 s"))
    script_overhead: float = Field(default=20.0, ge=0, le=600, description=(
        "Seconds added to the sum of the checks' own budgets for one batch's round trip (PowerShell start, "
        "transfer). Whatever its value, a host's batches together end within the engine's limit for the host: "
        "the sum of its checks' budgets + 30 s, less 10 s kept for stopping a script and deleting its shell"))
    retries: int = Field(default=2, ge=0, le=10, description=(
        "Extra attempts after a transient failure (refused or reset connection, HTTP 5xx, WS-Man operation timeout)"))
    backoff: float = Field(default=0.5, ge=0, le=60, description="First retry delay in seconds, doubled each time")
    backoff_max: float = Field(default=8.0, ge=0, le=300, description="Largest retry delay in seconds")
    max_envelope_kb: int = Field(default=150, ge=32, le=8192, description=(
        "Largest request the hosts accept (their MaxEnvelopeSizekb): 150 works with every Windows version, "
        "500 is the default since Server 2012. A larger batch is split into several round trips"))


class TargetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["https", "ntlm", "basic"] = Field(default="https", description=(
        "https (TLS, certificate checked), ntlm (HTTP with NTLM message encryption) or basic (plain HTTP, lab only)"))
    auth: Literal["basic", "ntlm"] = Field(default="basic", description="Authentication inside https")
    port: int | None = Field(default=None, ge=1, le=65535, description="Default 5986 for https, else 5985")
    path: str = Field(default="/wsman", pattern=r"^/[A-Za-z0-9/_.-]*$")
    ca_file: Path | None = Field(default=None, validation_alias=AliasChoices("ca_file", "ca_bundle"), description=(
        "PEM bundle of the CA(s) that issued the host's WinRM certificate; default: the system trust store"))
    allow_insecure_basic_for_lab: bool = Field(default=False, description=(
        "Permit transport basic (password in clear over HTTP). Only for a lab"))

    def problems(self) -> list[tuple[str, str]]:
        """Combinations that are refused: (key, what was expected)."""
        out = []
        if self.transport == "basic" and not self.allow_insecure_basic_for_lab:
            out.append(("transport", "'https' (with ca_file) or 'ntlm' (message encryption): transport 'basic' sends "
                                     "the password in clear over plain HTTP; for a lab target only, set "
                                     "allow_insecure_basic_for_lab: true"))
        if self.transport != "https" and self.ca_file is not None:
            out.append(("ca_file", f"no ca_file with transport {self.transport!r} (it applies to 'https')"))
        if self.transport != "https" and self.auth != "basic":
            out.append(("auth", f"no auth with transport {self.transport!r} (it applies to 'https')"))
        return out

    @property
    def scheme(self) -> str:
        return "https" if self.transport == "https" else "http"

    def endpoint(self, address: str) -> str:
        host = f"[{address}]" if ":" in address and not address.startswith("[") else address
        port = self.port or (5986 if self.transport == "https" else 5985)
        return f"{self.scheme}://{host}:{port}{self.path}"


class OptionsError(ConfigError, ValueError):
    """Bad target options: a config error, so the agent exits 2 with the
    file, section, target and key named."""

    def __init__(self, message: str):
        super().__init__(message.splitlines() or [message])


def parse_options(name: str, options: Mapping[str, Any], where: str = "") -> TargetOptions:
    """Validate a target's options; the error names the target and each bad key."""
    try:
        opts = validate_json(TargetOptions, dict(options))
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(options)"
            if err["type"] == "extra_forbidden":
                msg = f"unknown key (expected one of {', '.join(sorted(_option_keys()))})"
            else:
                msg = f"expected {err['msg']}"
                # Never a secret typed inline, at any depth (options.auth
                # holding {"password": ...} must not be printed back).
                got = shown(err["input"], ("options", *err["loc"]), limit=60) if "input" in err else None
                if got is not None:
                    msg += f", got {got}"
            msgs.append(f"{where}target {name!r}: key 'options.{key}': {msg}")
        raise OptionsError("\n".join(msgs)) from None
    if opts.problems():
        raise OptionsError("\n".join(f"{where}target {name!r}: key 'options.{key}': expected {what}"
                                     for key, what in opts.problems()))
    if opts.ca_file is not None and not os.access(opts.ca_file, os.R_OK):
        raise OptionsError(f"{where}target {name!r}: key 'options.ca_file': expected a readable PEM file, "
                           f"got {str(opts.ca_file)!r}")
    return opts


def _option_keys() -> list[str]:
    return [f.validation_alias.choices[0] if f.validation_alias is not None else k  # type: ignore[union-attr]
            for k, f in TargetOptions.model_fields.items()] + ["ca_bundle"]


def validate_targets(targets: Sequence[Any], source: str, kind: str = "windows") -> dict[str, TargetOptions]:
    """Validate every target of ``kind`` in the config (``targets[i]``);
    one error message for all the bad ones."""
    out, errors = {}, []
    for i, t in enumerate(targets):
        if t.kind != kind:
            continue
        where = f"{source}: section 'targets[{i}]', "
        if not t.address:
            errors.append(f"{where}target {t.name!r}: key 'address': expected a host name or IP address")
            continue
        if not t.credential:
            errors.append(f"{where}target {t.name!r}: key 'credential': expected the name of a secret holding "
                          "'user:password' or JSON {\"username\", \"password\"}")
            continue
        try:
            out[t.name] = parse_options(t.name, t.options, where)
        except OptionsError as exc:
            errors.append(str(exc))
    if errors:
        raise OptionsError("\n".join(errors))
    return out


@dataclass(frozen=True)
class Credentials:
    """A username and the password as a :class:`Secret`, whose repr hides
    it; ``password.reveal()`` only where it is handed to pywinrm."""

    username: str
    password: Secret


def credentials(secret: Secret, target: str) -> Credentials:
    value = secret.reveal()
    problem = (f"secret {secret.name!r} (credential of target {target!r}): expected 'user:password' or a JSON "
               "object with 'username' and 'password'")
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError(problem + " (it starts with '{' but is not valid JSON)") from None
        user, password = data.get("username"), data.get("password")
        if not isinstance(user, str) or not user or not isinstance(password, str):
            raise ValueError(problem)
    else:
        user, sep, password = value.partition(":")
        if not sep or not user:
            raise ValueError(problem)
    return Credentials(user, Secret(secret.name, password))
