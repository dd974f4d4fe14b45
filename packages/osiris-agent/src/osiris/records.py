"""Typed records that cross the plugin boundary.

Hooks return these (a check spec, a runbook spec, an executor...) and the
engine passes them on; they are frozen dataclasses so that a plugin cannot
change what another plugin contributed after registration.

The records carry no behaviour of their own beyond validation: the engine,
the ladder and the evidence log decide what to do with them.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Status",
    "Severity",
    "Risk",
    "Verdict",
    "CheckSpec",
    "CheckSource",
    "RuleSpec",
    "RunbookSpec",
    "Target",
    "Observation",
    "RunbookResult",
    "Executor",
    "Source",
    "EvidenceSink",
    "EscalationChannel",
    "UpdateBackend",
    "UpdateError",
    "UpdateStatus",
    "UpdateCheck",
    "UpdateProgress",
    "UpdateResult",
    "BootEntry",
    "Slot",
    "HealthCheck",
    "HealthResult",
    "PlanProposal",
    "SettingsSection",
    "utcnow",
]

# Check and runbook ids are part of the public record (evidence, rules,
# reports): dotted lower-case words, stable across versions.
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$")
# 45 CFR 164.3xx citations to the paragraph, e.g. 164.312(a)(2)(iii): a
# bare section ("164.312") names a whole section of the rule, not a control.
_CITATION = re.compile(r"^164\.3(0[2-9]|1[0-8])(\([a-zA-Z0-9]+\))+$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Status(str, enum.Enum):
    """Outcome of one check on one target."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"  # could not observe: unreachable host, script error, bad facts


class Severity(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Risk(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True)
class Verdict:
    """What a check's evaluator makes of the facts it was given."""

    status: Status
    reason: str


def _check_id(kind: str, value: str) -> None:
    if not _ID.match(value):
        raise ValueError(
            f"{kind} id {value!r}: expected dotted lower-case words such as "
            "'windows.firewall.profiles_enabled'"
        )


@dataclass(frozen=True)
class CheckSource:
    """Where a check was declared when not in its plugin's code (e.g. a
    plugin's data file such as a check pack): the file, the line, and the
    SHA-256 of the file's bytes as loaded. ``osiris checks`` shows it and
    every sweep's evidence policy records it, so a verdict names the exact
    text that defined it."""

    file: str
    line: int = 0
    sha256: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class CheckSpec:
    """What to observe.

    ``target_kind`` picks the executor (``local`` for the appliance itself,
    ``windows`` for WinRM hosts...). The executor decides how ``script`` or
    ``probe`` is run; ``evaluate`` turns the resulting facts into a verdict
    and must be a pure function of ``(facts, params)`` so that a verdict can
    be recomputed from evidence.
    """

    id: str
    title: str
    target_kind: str
    evaluate: Callable[[Mapping[str, Any], Mapping[str, Any]], Verdict]
    hipaa: tuple[str, ...]
    roles: frozenset[str] = frozenset()  # empty: every role
    severity: Severity = Severity.MEDIUM
    interval: float = 300.0  # seconds between observations of one target
    cis: str | None = None
    description: str = ""
    # Executor-specific source (e.g. a PowerShell fragment); data reaches it
    # as parameters, never spliced into the text.
    script: str | None = None
    # In-process probe for executors that run Python (target kind ``local``).
    probe: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 30.0
    # None: declared by the contributing plugin's code.
    source: CheckSource | None = None

    def __post_init__(self) -> None:
        _check_id("check", self.id)
        if not self.hipaa:
            raise ValueError(f"check {self.id}: at least one HIPAA citation is required")
        for cite in self.hipaa:
            if not _CITATION.match(cite):
                raise ValueError(
                    f"check {self.id}: HIPAA citation {cite!r}: expected a 45 CFR "
                    "164.302-164.318 paragraph such as '164.312(a)(2)(iii)'"
                )
        if self.interval <= 0:
            raise ValueError(f"check {self.id}: interval must be positive")
        if self.script is None and self.probe is None:
            raise ValueError(f"check {self.id}: needs a script or a probe")
        object.__setattr__(self, "roles", frozenset(self.roles))
        object.__setattr__(self, "severity", Severity(self.severity))

    def applies_to(self, target: Target) -> bool:
        return target.kind == self.target_kind and (not self.roles or target.role in self.roles)


@dataclass(frozen=True)
class RunbookSpec:
    """How to heal: a script for the target's executor, with a typed
    parameter schema (JSON Schema) so that planners can only fill values,
    never write code."""

    id: str
    title: str
    target_kind: str
    fixes: tuple[str, ...]  # check ids that verification re-runs
    risk: Risk
    script: str | None = None
    action: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    params_schema: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}, "additionalProperties": False}
    )
    timeout: float = 120.0
    description: str = ""

    def __post_init__(self) -> None:
        _check_id("runbook", self.id)
        if not self.fixes:
            raise ValueError(f"runbook {self.id}: must name the checks it fixes")
        if self.script is None and self.action is None:
            raise ValueError(f"runbook {self.id}: needs a script or an action")
        object.__setattr__(self, "risk", Risk(self.risk))


@dataclass(frozen=True)
class RuleSpec:
    """An L1 healing rule a plugin holds as data rather than in a rule file
    (e.g. a check pack's heal entry), returned by ``osiris_rules`` beside
    rule file paths. ``rule`` has the shape of one entry of a rule file's
    ``rules`` list; ``file`` and ``line`` say where it was written, for
    errors and ``osiris rules list``."""

    rule: Mapping[str, Any]
    file: str
    line: int = 1


@dataclass(frozen=True)
class Target:
    """A machine the appliance looks after. Connection details are the
    executor's business (``options``); secrets are referenced by name."""

    name: str
    kind: str
    role: str = ""
    address: str = ""
    credential: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    """One check's result on one target. ``report_id``: a source's unique
    name for this report (e.g. ``endpoint/<name>/<queue>/<seq>``); the store
    records a given id once, in the same transaction as the observation, so
    a source that delivers at least once is stored exactly once."""

    target: str
    check: str
    status: Status
    reason: str
    facts: Mapping[str, Any] = field(default_factory=dict)
    observed_at: datetime = field(default_factory=utcnow)
    duration_ms: float = 0.0
    report_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))


@dataclass(frozen=True)
class RunbookResult:
    target: str
    runbook: str
    ok: bool
    detail: str
    output: Mapping[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0


@runtime_checkable
class Executor(Protocol):
    """Reaches targets of one kind. Both methods are async; an executor
    that wraps a blocking client runs it through ``ctx.run_blocking`` so the
    event loop (and the watchdog) never stall."""

    kind: str

    async def observe(self, target: Target, checks: Sequence[CheckSpec], *, deadline: float) -> list[Observation]:
        """Run every check in ``checks`` on ``target`` (one round trip where
        the transport allows it) and return one observation per check. An
        unreachable target yields error observations, not an exception.
        ``deadline`` (a ``time.monotonic()`` value, :mod:`osiris.budget`) is
        when the caller stops waiting: plan retries and clean-up to end
        before it, and never re-derive it from the checks' timeouts."""
        ...

    async def run_runbook(
        self, target: Target, runbook: RunbookSpec, params: Mapping[str, Any], *, deadline: float
    ) -> RunbookResult:
        """Run one runbook with validated ``params``, ending before ``deadline``."""
        ...


@runtime_checkable
class Source(Protocol):
    """Pushes observations into the engine (e.g. a gRPC server for endpoint
    agents). ``run`` is started as a task and cancelled at shutdown.
    ``await emit(obs)`` takes one observation or a sequence of them (stored
    in one transaction); when it returns, they are in the store."""

    name: str

    async def run(self, emit: Callable[[Observation | Sequence[Observation]], Awaitable[None]]) -> None: ...


@runtime_checkable
class EvidenceSink(Protocol):
    """Receives signed evidence through the core's durable outbox
    (docs/evidence.md). ``deliver`` raising means "later": the item is
    retried with backoff, never dropped; the same ``bundle_id`` (the item
    id, also the idempotency key) may come more than once.

    Optional members, read with getattr: ``kinds`` (``("bundle",)`` by
    default; ``"checkpoint"`` items carry a signed checkpoint note and ids
    ``checkpoint-<key id>-<size>``), ``async maintain()`` with
    ``maintain_interval`` (seconds), ``delivery_timeout`` (seconds one
    delivery may take, when a sink needs longer than
    ``evidence.delivery_timeout``), ``async close()``, and ``async
    latest_checkpoint(origin, key_id)``: the newest signed checkpoint note
    the sink holds of that log (bytes, or None), which ``osiris evidence
    verify`` compares with the log to catch one cut short."""

    name: str

    async def deliver(self, bundle_id: str, payload: bytes) -> None: ...


@runtime_checkable
class EscalationChannel(Protocol):
    name: str

    async def escalate(self, incident: Mapping[str, Any]) -> None: ...


class UpdateError(Exception):
    """An update backend's refusal or failure, its message for a person:
    what was refused or failed and why (``refused``: the backend refused
    something it was given, e.g. tampered metadata or an older version;
    otherwise it could not do its work, e.g. the repository unreachable).
    ``osiris update`` prints it and exits 1; anything else a backend
    raises is a bug and is reported as one."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class BootEntry:
    """One boot loader entry of the appliance (e.g. a UKI on the ESP).
    ``state``: ``blessed`` (boots without counting), ``trial`` (tries left
    before the loader falls back), ``bad`` (no tries left: skipped)."""

    version: str
    state: str
    tries_left: int | None = None
    tries_done: int | None = None
    booted: bool = False
    file: str = ""

    def __post_init__(self) -> None:
        if self.state not in ("blessed", "trial", "bad"):
            raise ValueError(f"boot entry {self.version}: state {self.state!r}: expected blessed, trial or bad")


@dataclass(frozen=True)
class Slot:
    """One system slot (a partition holding a version's read-only /usr).
    ``version`` None: empty or being written."""

    name: str
    version: str | None
    booted: bool = False
    device: str = ""


@dataclass(frozen=True)
class UpdateProgress:
    """Where a running install is: ``phase`` (the backend's word, e.g.
    checking, downloading, writing, read-back, installing, done, failed),
    bytes done of ``bytes_total`` (None: not known yet), the rate in
    bytes per second, when it started, and an error once it failed."""

    phase: str
    version: str | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    rate: float | None = None
    started: datetime | None = None
    error: str | None = None

    def eta(self) -> float | None:
        """Seconds left at the current rate, or None when not known."""
        if not self.rate or self.bytes_total is None or self.rate <= 0:
            return None
        return max(0.0, (self.bytes_total - self.bytes_done) / self.rate)

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "version": self.version, "bytes_done": self.bytes_done,
                "bytes_total": self.bytes_total, "rate": self.rate, "eta": self.eta(),
                "started": _iso(self.started), "error": self.error}


@dataclass(frozen=True)
class UpdateStatus:
    """What ``osiris update status`` shows. ``configured`` False: the
    backend is installed but has nothing to update from (no repository,
    trusted root or disk); ``detail`` says what is missing."""

    backend: str
    configured: bool
    booted_version: str | None = None
    slots: tuple[Slot, ...] = ()
    entries: tuple[BootEntry, ...] = ()
    last_check: datetime | None = None
    available: str | None = None
    running: UpdateProgress | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", tuple(self.slots))
        object.__setattr__(self, "entries", tuple(self.entries))

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "configured": self.configured, "booted_version": self.booted_version,
            "slots": [dataclasses.asdict(s) for s in self.slots],
            "entries": [dataclasses.asdict(e) for e in self.entries],
            "last_check": _iso(self.last_check), "available": self.available,
            "running": self.running.to_json() if self.running is not None else None,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class UpdateCheck:
    """A check's answer: the booted version and the newest release for
    this appliance newer than it (None: up to date)."""

    current: str | None
    available: str | None
    checked_at: datetime = field(default_factory=utcnow)
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"current": self.current, "available": self.available,
                "checked_at": _iso(self.checked_at), "detail": self.detail}


@dataclass(frozen=True)
class UpdateResult:
    """An apply's answer: ``installed`` the version now in the inactive
    slot on trial (None: nothing newer, nothing done); ``reboot_at`` when
    the reboot into it is scheduled (None: not scheduled)."""

    installed: str | None
    reboot_at: datetime | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"installed": self.installed, "reboot_at": _iso(self.reboot_at), "detail": self.detail}


@runtime_checkable
class UpdateBackend(Protocol):
    """How the appliance updates itself (API 2.2). ``status`` reads and
    never changes anything; ``check`` asks the repository for a newer
    release; ``apply`` installs the newest one (into a slot not booted,
    on trial) and, with ``reboot``, schedules the reboot into it.
    ``progress`` (a plain callable, called on the event loop's thread or
    the backend's, never concurrently) receives :class:`UpdateProgress`
    as the install goes. Refusals and failures raise :class:`UpdateError`.
    """

    name: str

    async def status(self) -> UpdateStatus: ...

    async def check(self) -> UpdateCheck: ...

    async def apply(
        self, *, reboot: bool, progress: Callable[[UpdateProgress], None] | None = None
    ) -> UpdateResult: ...


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str


@dataclass(frozen=True)
class HealthCheck:
    """One thing the post-boot health gate must see before marking a slot
    good."""

    name: str
    run: Callable[[], Awaitable[HealthResult]]


@dataclass(frozen=True)
class PlanProposal:
    """An L2 planner's answer: one installed runbook and its parameters."""

    runbook: str
    params: Mapping[str, Any]
    rationale: str = ""


@dataclass(frozen=True)
class SettingsSection:
    """A plugin's section of the config file and the pydantic model that
    validates it. ``name`` is the key under ``plugins`` in the config."""

    name: str
    model: type  # a pydantic.BaseModel subclass
    description: str = ""
