"""The Osiris plugin API: every hook a plugin can implement.

This module is the public contract (project name ``osiris``, API version
in :data:`API_VERSION`). docs/plugins.md documents each hook with an
example; keep the two in step. A hook implementation may accept any subset
of the arguments of its spec, as pluggy allows.

Hooks that contribute things (checks, runbooks, executors...) return a list
or a single record, or ``None`` for nothing; the plugin manager flattens the
results and remembers which plugin contributed each record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import click

    from .context import AgentContext
    from .records import (
        CheckSpec,
        EscalationChannel,
        EvidenceSink,
        Executor,
        HealthCheck,
        PlanProposal,
        RuleSpec,
        RunbookSpec,
        SettingsSection,
        Source,
        UpdateBackend,
    )

PROJECT = "osiris"
#: Bumped when a hook is added (minor) or a hook's contract changes (major).
API_VERSION = "2.2"  # 1.1: osiris_rules; 2.0: executors take one deadline (osiris.budget); 2.1: osiris_rules may return RuleSpec records; 2.2: update backends: status/check/apply with typed results

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def osiris_settings() -> SettingsSection | None:
    """Declare the plugin's config section and the pydantic model for it.

    The section lives under ``plugins.<name>`` in the config file and is
    validated at start-up; an error names the plugin, the key and what was
    expected. ``ctx.settings(name)`` returns the validated model.
    """


@hookspec
def osiris_checks(ctx: AgentContext) -> list[CheckSpec] | CheckSpec | None:
    """Contribute checks: what to observe on which kind of target."""


@hookspec
def osiris_runbooks(ctx: AgentContext) -> list[RunbookSpec] | RunbookSpec | None:
    """Contribute runbooks: how to heal the drift that checks find."""


@hookspec
def osiris_rules(ctx: AgentContext) -> list[Path | RuleSpec] | Path | RuleSpec | None:
    """Ship default L1 healing rules: paths of YAML rule files, or rules as
    data with the file and line they were written at (:class:`RuleSpec`,
    e.g. from a check pack). Site rules (``<state_dir>/rules``) and promoted
    rules override them by rule id. Called at every rule reload."""


@hookspec
def osiris_executors(ctx: AgentContext) -> list[Executor] | Executor | None:
    """Contribute executors: how to reach targets of a kind (one per kind)."""


@hookspec
def osiris_sources(ctx: AgentContext) -> list[Source] | Source | None:
    """Contribute sources that push observations (e.g. endpoint agents)."""


@hookspec
def osiris_evidence_sinks(ctx: AgentContext) -> list[EvidenceSink] | EvidenceSink | None:
    """Contribute evidence sinks that receive signed bundles."""


@hookspec
def osiris_escalation_channels(
    ctx: AgentContext,
) -> list[EscalationChannel] | EscalationChannel | None:
    """Contribute L3 escalation channels (webhook, e-mail, ticket...)."""


@hookspec(firstresult=True)
def osiris_plan(incident: dict[str, Any], ctx: AgentContext) -> PlanProposal | None:
    """L2: propose one installed runbook and its parameters for an incident,
    or return ``None`` to let the next planner (or L3) take it. The first
    non-``None`` answer wins."""


@hookspec
def osiris_update_backends(ctx: AgentContext) -> list[UpdateBackend] | UpdateBackend | None:
    """Contribute update backends (how the appliance updates itself)."""


@hookspec
def osiris_health_checks(ctx: AgentContext) -> list[HealthCheck] | HealthCheck | None:
    """Contribute checks the post-boot health gate must see pass."""


@hookspec
def osiris_commands(cli: click.Group) -> None:
    """Add subcommands to the ``osiris`` command line."""


@hookspec
def osiris_startup(ctx: AgentContext) -> None:
    """Called once the agent has loaded config, plugins and state, before
    the first sweep. May be a coroutine function."""


@hookspec
def osiris_shutdown(ctx: AgentContext) -> None:
    """Called once at shutdown, after the last sweep. May be a coroutine
    function."""
