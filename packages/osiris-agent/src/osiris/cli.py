"""The ``osiris`` command line.

Exit statuses: 0 success, 1 a check failed (``osiris check``) or an
operation was refused, 2 a bad config or bad usage (as click does for bad
usage), 3 a plugin that breaks the plugin API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from . import __version__
from .app import Loaded, load, settings_sections
from .config import ConfigError
from .plugins import PluginError, PluginManager
from .secrets import SecretError
from .store import Store, StoreError

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_PLUGIN = 3


def _fail(message: str, code: int) -> None:
    click.echo(f"osiris: {message}", err=True)
    sys.exit(code)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class State:
    def __init__(self, config: str | None, state_dir: str | None):
        self.config_path = config
        self.state_dir = state_dir
        self._loaded: Loaded | None = None

    def loaded(self) -> Loaded:
        if self._loaded is None:
            try:
                self._loaded = load(self.config_path, state_dir_override=self.state_dir)
            except ConfigError as exc:
                _fail(str(exc), EXIT_CONFIG)
            except PluginError as exc:
                _fail(str(exc), EXIT_PLUGIN)
        return self._loaded

    def store(self) -> Store:
        try:
            return Store(self.loaded().ctx.state_dir)
        except StoreError as exc:
            _fail(str(exc), EXIT_FAILED)


pass_state = click.make_pass_decorator(State)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="osiris")
@click.option("-c", "--config", envvar="OSIRIS_CONFIG", type=click.Path(dir_okay=False),
              help="Config file (JSON or YAML). Default: $OSIRIS_CONFIG, /etc/osiris/config.json, "
                   "else the embedded default.")
@click.option("--state-dir", envvar="OSIRIS_STATE_DIR", type=click.Path(file_okay=False),
              help="State directory. Default: the config's state_dir (/var/lib/osiris).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, config: str | None, state_dir: str | None, verbose: int) -> None:
    """Osiris: HIPAA compliance appliance agent."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = State(config, state_dir)


@cli.command()
@click.option("--once", is_flag=True, help="Run one sweep of every check and exit.")
@pass_state
def run(state: State, once: bool) -> None:
    """Run the agent (under systemd: Type=notify with a watchdog)."""
    from .runtime import Agent

    loaded = state.loaded()
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger().setLevel(logging.INFO)
    try:
        agent = Agent(loaded)
    except StoreError as exc:
        _fail(str(exc), EXIT_FAILED)
    code = asyncio.run(agent.run(once=once))
    if once:
        _print_latest(Store(loaded.ctx.state_dir))
    sys.exit(code)


def _print_latest(store: Store) -> None:
    rows = [(r["target"], r["check_id"], r["status"].upper(), r["reason"]) for r in store.latest()]
    click.echo(table(rows, ["TARGET", "CHECK", "STATUS", "REASON"]))


@cli.command()
@click.option("-t", "--target", "targets", multiple=True, help="Only this target (repeatable).")
@click.option("-k", "--check", "checks", multiple=True, help="Only this check id (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_state
def check(state: State, targets: tuple[str, ...], checks: tuple[str, ...], fmt: str) -> None:
    """Run checks once now, print the results; exit 1 if any failed or erred."""
    from .engine import Engine

    loaded = state.loaded()
    store = state.store()
    known = {t.name for t in loaded.targets}
    for t in targets:
        if t not in known:
            _fail(f"--target {t!r}: no such target (known: {', '.join(sorted(known))})", EXIT_CONFIG)
    for c in checks:
        if c not in loaded.registry.checks:
            _fail(f"--check {c!r}: no such check (see `osiris checks`)", EXIT_CONFIG)
    loaded.ctx.store = store

    async def go():
        engine = Engine(loaded.registry, store, loaded.targets,
                        max_concurrent_targets=loaded.config.agent.max_concurrent_targets)
        try:
            return await engine.sweep(force=True, only_targets=set(targets) or None, only_checks=set(checks) or None)
        finally:
            loaded.ctx.close()

    observations = asyncio.run(go())
    if fmt == "json":
        click.echo(json.dumps([
            {"target": o.target, "check": o.check, "status": o.status.value, "reason": o.reason, "facts": o.facts}
            for o in observations
        ], indent=2, default=str))
    else:
        rows = [(o.target, o.check, o.status.value.upper(), o.reason) for o in observations]
        click.echo(table(rows, ["TARGET", "CHECK", "STATUS", "REASON"]))
        n_fail = sum(o.status.value != "pass" for o in observations)
        click.echo(f"\n{len(observations) - n_fail} passed, {n_fail} failed or erred")
    if not observations:
        _fail("no checks ran: no target has a check that applies to it", EXIT_FAILED)
    if any(o.status.value != "pass" for o in observations):
        sys.exit(EXIT_FAILED)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_state
def checks(state: State, fmt: str) -> None:
    """List installed checks with their HIPAA citations."""
    reg = state.loaded().registry
    items = [(cid, c.plugin, c.spec) for cid, c in sorted(reg.checks.items())]
    if fmt == "json":
        click.echo(json.dumps([
            {"id": cid, "plugin": p, "title": s.title, "target_kind": s.target_kind, "roles": sorted(s.roles),
             "severity": s.severity.value, "interval": s.interval, "hipaa": list(s.hipaa), "cis": s.cis}
            for cid, p, s in items
        ], indent=2))
        return
    rows = [(cid, p, s.target_kind, ",".join(sorted(s.roles)) or "*", s.severity.value, " ".join(s.hipaa), s.title)
            for cid, p, s in items]
    click.echo(table(rows, ["CHECK", "PLUGIN", "KIND", "ROLES", "SEVERITY", "HIPAA", "TITLE"]))


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def plugins(fmt: str) -> None:
    """List loaded plugins: name, version and the hooks they implement."""
    pm = PluginManager()
    try:
        pm.load()
    except PluginError as exc:
        _fail(str(exc), EXIT_PLUGIN)
    infos = sorted(pm.infos.values(), key=lambda i: i.name)
    if fmt == "json":
        click.echo(json.dumps([i.__dict__ for i in infos], indent=2))
        return
    rows = [(i.name, i.version, i.distribution or i.module, "builtin" if i.builtin else "", ", ".join(i.hooks))
            for i in infos]
    click.echo(table(rows, ["NAME", "VERSION", "DISTRIBUTION", "", "HOOKS"]))


@cli.group()
def config() -> None:
    """Check a config file or print its JSON Schema."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Validate FILE: core sections and every plugin's section."""
    try:
        loaded = load(file)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except PluginError as exc:
        _fail(str(exc), EXIT_PLUGIN)
    missing = [t.credential for t in loaded.targets if t.credential and not loaded.ctx.secrets.exists(t.credential)]
    click.echo(f"{file}: ok ({len(loaded.targets)} targets, {len(loaded.registry.checks)} checks)")
    for name in missing:
        click.echo(f"{file}: note: secret {name!r} is not readable here (it is read at run time)", err=True)


@config.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the config file, plugin sections included."""
    from .config import json_schema

    pm = PluginManager()
    try:
        pm.load()
    except PluginError as exc:
        _fail(str(exc), EXIT_PLUGIN)
    click.echo(json.dumps(json_schema(settings_sections(pm)), indent=2))


@cli.group(invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Resolved incidents too.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def incidents(cctx: click.Context, show_all: bool, fmt: str) -> None:
    """List incidents (open ones by default)."""
    if cctx.invoked_subcommand is not None:
        return
    store = cctx.obj.store()
    items = store.incidents(None if show_all else "open")
    if fmt == "json":
        click.echo(json.dumps([i.as_dict() for i in items], indent=2))
        return
    rows = [(i.id, i.state, i.target, i.check_id, i.occurrences, i.opened_at[:19], i.outcome or "", i.tier or "")
            for i in items]
    click.echo(table(rows, ["ID", "STATE", "TARGET", "CHECK", "SEEN", "OPENED", "OUTCOME", "TIER"]))


@incidents.command("resolve")
@click.argument("incident_id", type=int)
@click.option("--outcome", required=True, help="healed, recovered, escalated, failed, suppressed, dismissed...")
@click.option("--tier", default="L3", show_default=True, help="L1, L2, L3 or none")
@click.option("--detail", default="", help="Free text kept with the incident")
@pass_state
def incidents_resolve(state: State, incident_id: int, outcome: str, tier: str, detail: str) -> None:
    """Resolve an open incident by hand with an outcome."""
    try:
        inc = state.store().resolve_incident(incident_id, outcome, tier, detail)
    except StoreError as exc:
        _fail(str(exc), EXIT_FAILED)
    click.echo(f"incident {inc.id} resolved: {inc.outcome} ({inc.tier})")


_plugin_commands_added = False


def _add_plugin_commands() -> None:
    """Let plugins add subcommands (``osiris_commands`` hook)."""
    global _plugin_commands_added
    if _plugin_commands_added:
        return
    _plugin_commands_added = True
    pm = PluginManager()
    try:
        pm.load()
    except PluginError:
        return  # reported by the command that needs plugins
    pm.hook.osiris_commands(cli=cli)


def main(argv: Sequence[str] | None = None) -> None:
    _add_plugin_commands()
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="osiris")
    except SecretError as exc:
        _fail(str(exc), EXIT_CONFIG)

