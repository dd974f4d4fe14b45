"""Hooks of the endpoints plugin: its settings, the source serving endpoint
agents, the two checks that say whether an endpoint's evidence is whole
(reporting, no events lost) and the ``osiris endpoints`` commands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import CheckSpec, SettingsSection, Severity, Status, Verdict, hookimpl

from .cli import endpoints_group
from .server import COMPLETE, REPORTING, EndpointSource
from .settings import Settings


def _pushed_only(_params: Mapping[str, Any]) -> Mapping[str, Any]:
    raise RuntimeError("this check is reported by the endpoints plugin, never probed")


def reporting(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    if facts.get("reporting"):
        return Verdict(Status.PASS, "the endpoint is reporting")
    return Verdict(Status.FAIL, f"no report from the endpoint for {float(facts.get('silent_seconds', 0)):.0f} s "
                                f"(allowance {float(facts.get('allowance', 0)):.0f} s): its checks' status is unknown")


def complete(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    dropped = facts.get("dropped")
    if dropped == 0:
        return Verdict(Status.PASS, "the endpoint's events arrive complete")
    if dropped is None:
        return Verdict(Status.FAIL, f"evidence gap: {facts.get('reason', 'events were lost')}")
    return Verdict(Status.FAIL, f"evidence gap: the endpoint dropped {dropped} events (sequence "
                                f"{facts.get('from_seq')}..{facts.get('to_seq')}: {facts.get('reason', '')})")


@hookimpl
def osiris_settings():
    return SettingsSection("endpoints", Settings, "Endpoint agents: enrolment and mutual-TLS gRPC streams")


@hookimpl
def osiris_checks(ctx):
    common = dict(target_kind="endpoint", probe=_pushed_only, hipaa=("164.312(b)",), severity=Severity.HIGH)
    return [
        CheckSpec(id=REPORTING, title="Endpoint agent reports within its heartbeat allowance", evaluate=reporting,
                  description="Pushed by the endpoints plugin: an endpoint silent longer than its allowance is "
                              "not reporting, so compliant cannot be told from silent.", **common),
        CheckSpec(id=COMPLETE, title="Endpoint agent's events arrive without gaps", evaluate=complete,
                  description="Pushed by the endpoints plugin: events the endpoint dropped (queue bounds) or lost "
                              "(its queue replaced) are an evidence gap.", **common),
    ]


@hookimpl
def osiris_sources(ctx):
    if ctx.settings("endpoints").enabled:
        return EndpointSource(ctx)
    return None


@hookimpl
def osiris_commands(cli):
    cli.add_command(endpoints_group)
