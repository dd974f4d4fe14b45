"""The agent's config file: pydantic models and error reporting.

One JSON file (YAML accepted) written by the NixOS module from
``services.osiris.settings``. Core sections are validated here; each plugin's
section under ``plugins`` is validated against the model the plugin declares
(``osiris_settings`` hook). Every error names the file, the section, the key
and what was expected, because the person reading it is an MSP engineer
looking at a NixOS config, not at our code.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .evidence.scrub import is_secret_name
from .evidence.settings import EvidenceSettings

DEFAULT_CONFIG_PATH = Path("/etc/osiris/config.json")
DEFAULT_STATE_DIR = Path("/var/lib/osiris")
ENV_CONFIG = "OSIRIS_CONFIG"
ENV_STATE_DIR = "OSIRIS_STATE_DIR"
EMBEDDED = "<embedded default>"

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
# What an error shows in place of a value held under a secret's name.
HIDDEN = "[hidden]"


def secret_key(key: Any) -> bool:
    """Whether a config key would hold a secret inline (``password``,
    ``api_key``, ``AdminPassword``...: the evidence scrubber's notion of a
    secret's name). ``<name>_secret`` keys name a secret, they do not hold
    one; ``credential`` holds a secret's name, but people type the secret
    itself there."""
    key = str(key)
    if key == "credential":
        return True
    return not key.endswith("_secret") and is_secret_name(key)


def redact(value: Any) -> Any:
    """``value`` with whatever sits under a secret's name replaced, at any
    depth: what an error message may repeat of a value from the file."""
    if isinstance(value, Mapping):
        return {k: HIDDEN if secret_key(k) and not isinstance(v, (Mapping, list)) else redact(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def shown(value: Any, loc: Sequence[Any] = (), limit: int = 80) -> str | None:
    """How an error may show a value found at ``loc``: JSON, shortened, with
    secrets hidden at any depth; None when the key itself names a secret."""
    if any(secret_key(p) for p in loc):
        return None
    text = json.dumps(redact(value), default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def inline_secrets(value: Any, path: str = "") -> list[str]:
    """Dotted paths of keys under ``value`` that hold a secret inline."""
    out: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            if secret_key(k) and v not in (None, "") and not isinstance(v, (Mapping, list, bool)):
                out.append(where)
            else:
                out.extend(inline_secrets(v, where))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(inline_secrets(v, f"{path}[{i}]"))
    return out


M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A config file that cannot be used. ``str()`` is the message to print."""

    def __init__(self, messages: Sequence[str]):
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteSettings(_Model):
    id: str = Field(default="unnamed-site", pattern=_NAME, description="Stable site identifier")
    name: str = Field(default="", description="Practice name shown in reports")
    appliance: str = Field(default="appliance", pattern=_NAME, description="This appliance's target name")


class TlsSettings(_Model):
    """The status page's certificate: required when ``listen`` is not loopback."""

    cert: Path = Field(description="PEM certificate chain file the agent serves")
    key: Path = Field(description="PEM private key file of that certificate (readable by the agent only)")


class HttpSettings(_Model):
    enabled: bool = True
    listen: str = Field(default="127.0.0.1", description=(
        "IP address the local HTTP API binds (IPv4 or IPv6 literal, or localhost); default loopback only"))
    port: int = Field(default=8780, ge=0, le=65535, description="TCP port; 0 lets the kernel choose (tests)")
    tls: TlsSettings | None = Field(default=None, description=(
        "Serve HTTPS with this certificate. Required, with at least one account (`osiris users add`), "
        "when listen is not a loopback address: the status page then asks for a login"))
    session_hours: float = Field(default=12, gt=0, le=168, description="How long a status page login lasts")

    @field_validator("listen")
    @classmethod
    def _address(cls, v: str) -> str:
        # An address the agent cannot bind would pass here and stop `run`
        # later: only literals, which need no resolver at start-up.
        if v == "localhost":
            return v
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(
                "an IP address (e.g. 127.0.0.1, ::1, or 0.0.0.0 for every interface) or localhost") from None
        return v


class AgentSettings(_Model):
    workers: int = Field(default=8, ge=1, le=256, description="Threads for blocking clients")
    max_concurrent_targets: int = Field(default=32, ge=1, le=4096)
    tick: float = Field(default=5.0, gt=0, le=3600, description="Scheduler tick in seconds")
    check_self: bool = Field(default=True, description="Watch the appliance itself as a target")
    http: HttpSettings = HttpSettings()


class SecretsSettings(_Model):
    directory: Path | None = Field(
        default=None, description="Directory of secret files; default $CREDENTIALS_DIRECTORY"
    )
    files: dict[str, Path] = Field(default_factory=dict, description="Secret name -> file path")

    @field_validator("files")
    @classmethod
    def _names(cls, v: dict[str, Path]) -> dict[str, Path]:
        for name in v:
            if not re.match(_NAME, name):
                raise ValueError(f"secret name {name!r} must match {_NAME}")
        return v


class TargetSettings(_Model):
    name: str = Field(pattern=_NAME)
    kind: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", description="Executor kind, e.g. windows")
    role: str = Field(default="", description="e.g. dc, server, workstation")
    address: str = ""
    credential: str | None = Field(default=None, pattern=_NAME, description="Secret name, never the secret")
    options: dict[str, Any] = Field(default_factory=dict, description="Executor-specific connection options")

    @field_validator("options")
    @classmethod
    def _no_inline_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        found = inline_secrets(v)
        if found:
            key = found[0].rsplit(".", 1)[-1]
            raise ValueError(
                f"no inline secret ({', '.join(found)} would hold one): reference a secret by name "
                f"(e.g. {key}_secret: \"name\") and provide it as a credential file"
            )
        return v


# The healing modes, from doing least to doing most: the one definition
# (config, rule files and the ladder's "stricter of two modes" use it).
HealingMode = Literal["off", "dry-run", "standard", "full"]
HEALING_MODES: tuple[str, ...] = get_args(HealingMode)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class MaintenanceWindow(_Model):
    """A weekly window during which healing is held (drift is still observed)."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(default_factory=lambda: list(_DAYS))
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM local time")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM local time; before start wraps past midnight")
    timezone: str = Field(default="UTC", description="IANA time zone, e.g. America/Chicago")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class FlapGuardSettings(_Model):
    max_heals: int = Field(default=3, ge=1, description="Heals of one check on one host per window before escalating")
    window: float = Field(default=86400, gt=0, description="Seconds")


class PromotionSettings(_Model):
    min_successes: int = Field(default=5, ge=1)
    min_success_rate: float = Field(default=0.9, gt=0, le=1)


class HealingSettings(_Model):
    mode: HealingMode = Field(default="standard", description="off, dry-run, standard (low-risk runbooks), full")
    rules_dirs: list[Path] = Field(default_factory=list, description="Extra L1 rule directories")
    reload_interval: float = Field(default=5.0, gt=0, description="Seconds between checks for changed rule files")
    flap_guard: FlapGuardSettings = FlapGuardSettings()
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
    promotion: PromotionSettings = PromotionSettings()
    verify_timeout: float = Field(default=120, gt=0,
                                  description="Seconds the re-observation after a runbook may take (its deadline)")
    planner_timeout: float = Field(default=120, gt=0, description="Seconds one L2 planner may take to answer")
    escalation_timeout: float = Field(default=120, gt=0, description="Seconds one escalation channel may take")


class CheckOverride(_Model):
    enabled: bool = True
    interval: float | None = Field(default=None, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)


class StoreSettings(_Model):
    """The state database (``<state_dir>/osiris.sqlite3``): what happened
    lately, for the scheduler, the ladder and /status. The signed evidence
    log, not this, is the record kept for six years."""

    retention_days: float = Field(default=30, gt=0, description=(
        "Observations older than this many days are deleted (the latest per target and check, and those an "
        "incident refers to, are kept); fractions of a day are allowed (labs, bench/soak)"))
    prune_interval: float = Field(default=3600, gt=0, le=86400, description="Seconds between deletions of old observations")


class Config(_Model):
    site: SiteSettings = SiteSettings()
    state_dir: Path = DEFAULT_STATE_DIR
    agent: AgentSettings = AgentSettings()
    store: StoreSettings = StoreSettings()
    healing: HealingSettings = HealingSettings()
    evidence: EvidenceSettings = EvidenceSettings()
    secrets: SecretsSettings = SecretsSettings()
    targets: list[TargetSettings] = Field(default_factory=list)
    checks: dict[str, CheckOverride] = Field(default_factory=dict, description="Per-check overrides by id")
    plugin_modules: list[str] = Field(default_factory=list, description="Extra plugin modules to import")
    plugins: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="One section per plugin, validated by that plugin's model"
    )

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, targets: list[TargetSettings]) -> list[TargetSettings]:
        seen: set[str] = set()
        for t in targets:
            if t.name in seen:
                raise ValueError(f"target name {t.name!r} is used twice")
            seen.add(t.name)
        return targets

    @model_validator(mode="after")
    def _appliance_name_is_free(self) -> Config:
        if any(t.name == self.site.appliance for t in self.targets):
            raise ValueError(f"site.appliance: {self.site.appliance!r} is also a target name")
        return self


# -- reading ---------------------------------------------------------------------


def _describe(loc: Sequence[Any]) -> tuple[str, str]:
    parts = [str(p) for p in loc]
    if not parts:
        return "(top level)", "(top level)"
    if parts[0] == "plugins" and len(parts) >= 2:
        return f"plugins.{parts[1]}", ".".join(parts[2:]) or "(section)"
    if parts[0] == "targets" and len(parts) >= 2:
        return f"targets[{parts[1]}]", ".".join(parts[2:]) or "(entry)"
    return parts[0], ".".join(parts[1:]) or parts[0]


_TYPE_WORDS = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "path_type": "a path (a string)",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "list_type": "a list",
    "missing": "a value (the key is required)",
}


def format_validation_error(source: str, exc: ValidationError, prefix: Sequence[str] = ()) -> list[str]:
    msgs = []
    for err in exc.errors():
        loc = [*prefix, *err["loc"]]
        section, key = _describe(loc)
        typ = err["type"]
        got = err.get("input")
        if typ == "extra_forbidden":
            msgs.append(
                f"{source}: section '{section}': unknown key '{key}': expected only the documented "
                "keys (see `osiris config schema`)"
            )
            continue
        expected = _TYPE_WORDS.get(typ) or err["msg"].removeprefix("Value error, ")
        # Echo what was found only for values that failed a type or range
        # check (a custom validator may be refusing a secret typed inline),
        # never under a secret's name, and with secrets inside hidden.
        text = None
        if typ != "missing" and not typ.startswith("value_error") and typ != "string_pattern_mismatch":
            text = shown(got, loc)
        got_text = f", got {text}" if text is not None else ""
        msgs.append(f"{source}: section '{section}', key '{key}': expected {expected}{got_text}")
    return msgs


def _parse_text(text: str, source: str) -> Any:
    if source.endswith((".yaml", ".yml")):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            raise ConfigError([f"{source}{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{source}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"]) from exc


def read_raw(path: Path | None) -> tuple[dict[str, Any], str]:
    """Read a config file, or the embedded default when ``path`` is None."""
    if path is None:
        text = resources.files("osiris").joinpath("default-config.json").read_text()
        source = EMBEDDED
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{source}: cannot read config file: {exc.strerror}"]) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError([f"{source}: not UTF-8 text (byte {exc.start}): expected a JSON or YAML file"]) from exc
    data = _parse_text(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: section '(top level)': expected an object, got {type(data).__name__}"])
    return data, source


def resolve_path(cli_path: str | Path | None, environ: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    if cli_path:
        return Path(cli_path)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    if DEFAULT_CONFIG_PATH.exists():
        return DEFAULT_CONFIG_PATH
    return None


def validate_json(model: type[M], data: Any) -> M:
    """Validate ``data`` as the JSON it came from, strictly: ``"8"`` is not
    an integer and ``"no"`` is not false (a silently coerced value is a
    setting nobody chose). Paths and other string-shaped types still take
    strings. Raises pydantic's ``ValidationError``."""
    return model.model_validate_json(json.dumps(data, default=str), strict=True)


def validate_core(data: Mapping[str, Any], source: str) -> Config:
    try:
        return validate_json(Config, data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def validate_plugins(config: Config, source: str, sections: Mapping[str, Any]) -> dict[str, BaseModel]:
    """Validate each ``plugins.<name>`` section against its plugin's model.

    ``sections`` maps section name -> SettingsSection. A section for which no
    installed plugin declares settings is an error: it is almost always a
    typo or a plugin that is not installed, and silently ignoring it would
    leave a site unprotected.
    """
    errors: list[str] = []
    out: dict[str, BaseModel] = {}
    for name in config.plugins:
        if name not in sections:
            known = ", ".join(sorted(sections)) or "none"
            errors.append(
                f"{source}: section 'plugins.{name}': no installed plugin has settings named '{name}' "
                f"(plugins with settings: {known})"
            )
    for name, section in sections.items():
        raw = config.plugins.get(name, {})
        try:
            out[name] = validate_json(section.model, raw)
        except ValidationError as exc:
            errors.extend(format_validation_error(source, exc, prefix=("plugins", name)))
    if errors:
        raise ConfigError(errors)
    return out


def state_dir(config: Config, cli_value: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if cli_value:
        return Path(cli_value)
    if env.get(ENV_STATE_DIR):
        return Path(env[ENV_STATE_DIR])
    return config.state_dir


def json_schema(sections: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema of the whole file, plugin sections included."""
    schema = Config.model_json_schema()
    plugin_props = {}
    defs = schema.setdefault("$defs", {})
    for name, section in sorted(sections.items()):
        sub = section.model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        if section.description:
            sub.setdefault("description", section.description)
        plugin_props[name] = sub
    schema["properties"]["plugins"] = {
        "type": "object",
        "description": "One section per plugin",
        "properties": plugin_props,
        "additionalProperties": False,
    }
    return schema
