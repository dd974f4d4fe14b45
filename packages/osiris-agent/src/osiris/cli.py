"""The ``osiris`` command line.

Exit statuses: 0 success, 1 a check failed (``osiris check``) or an
operation was refused (the HTTP API's port held by another process), 2 a
bad config or bad usage (as click does for bad usage; an HTTP address that
is not this machine's), 3 a plugin that breaks the plugin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any

import click

from . import __version__
from .app import Loaded, load, settings_sections
from .config import ConfigError
from .evidence.cli import evidence as evidence_group
from .report.command import report_command
from .plugins import PluginError, PluginManager
from .scrubbing import scrub_logs
from .secrets import SecretError
from .store import Store, StoreError
from .update_cli import update_group

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


class Plugins:
    """The process's one plugin manager: the ``osiris`` entry points, loaded
    once (before the config is read, for the plugins' subcommands); the
    config's ``plugin_modules`` join it when a command loads the config. A
    load error is kept and reported by every command that needs plugins."""

    def __init__(self) -> None:
        self._pm: PluginManager | None = None
        self._error: PluginError | None = None
        # Plugins whose osiris_commands failed: reported, the rest work.
        self.command_errors: list[str] = []

    def manager(self) -> PluginManager:
        """The manager, or :class:`PluginError` (the same one every time)."""
        if self._pm is None and self._error is None:
            pm = PluginManager()
            try:
                pm.load_entry_points()
            except PluginError as exc:
                self._error = exc
            else:
                self._pm = pm
        if self._error is not None:
            raise self._error
        assert self._pm is not None
        return self._pm

    def add_commands(self, group: click.Group) -> None:
        """Let plugins add subcommands (``osiris_commands``), each on its
        own: one that raises is reported by name and its half-added
        commands are taken back, and every other command keeps working."""
        try:
            pm = self.manager()
        except PluginError:
            return  # kept: every command that needs plugins reports it (exit 3)
        for impl in pm.hook.osiris_commands.get_hookimpls():
            before = dict(group.commands)
            try:
                impl.function(**{a: group for a in impl.argnames})
            except Exception as exc:  # noqa: BLE001 - a plugin's bug must not take the CLI down
                group.commands.clear()
                group.commands.update(before)
                self.command_errors.append(
                    f"plugin {impl.plugin_name!r}: osiris_commands failed: {type(exc).__name__}: {exc}; "
                    "its commands are not available")


class State:
    def __init__(self, config: str | None, state_dir: str | None, plugins: Plugins | None = None):
        self.config_path = config
        self.state_dir = state_dir
        self.plugins = plugins or Plugins()
        self._loaded: Loaded | None = None

    def plugin_manager(self) -> PluginManager:
        try:
            return self.plugins.manager()
        except PluginError as exc:
            _fail(str(exc), EXIT_PLUGIN)

    def load(self, path: str | None) -> Loaded:
        """The config at ``path`` with the process's plugin manager."""
        pm = self.plugin_manager()
        try:
            return load(path, state_dir_override=self.state_dir, pm=pm)
        except ConfigError as exc:
            _fail(str(exc), EXIT_CONFIG)
        except PluginError as exc:
            _fail(str(exc), EXIT_PLUGIN)

    def loaded(self) -> Loaded:
        if self._loaded is None:
            self._loaded = self.load(self.config_path)
            # From here on every log line is scrubbed like the evidence.
            scrub_logs(self._loaded.ctx.scrub)
        return self._loaded

    def context(self):
        """The agent's ctx for this command line's config (plugins' commands
        reach it through :func:`osiris.commands.agent_context`)."""
        return self.loaded().ctx

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
    plugins = ctx.obj if isinstance(ctx.obj, Plugins) else Plugins()
    ctx.obj = State(config, state_dir, plugins)


@cli.command()
@click.option("--once", is_flag=True, help="Run one sweep of every check and exit.")
@pass_state
def run(state: State, once: bool) -> None:
    """Run the agent (under systemd: Type=notify with a watchdog)."""
    from .runtime import Agent, ListenError

    loaded = state.loaded()
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger().setLevel(logging.INFO)
    try:
        agent = Agent(loaded)
    except StoreError as exc:
        _fail(str(exc), EXIT_FAILED)
    try:
        code = asyncio.run(agent.run(once=once))
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except PluginError as exc:
        _fail(str(exc), EXIT_PLUGIN)
    except ListenError as exc:
        _fail(str(exc), EXIT_FAILED if exc.in_use else EXIT_CONFIG)
    if once:
        _print_latest(Store(loaded.ctx.state_dir))
    sys.exit(code)


def _print_latest(store: Store) -> None:
    rows = [(r["target"], r["check_id"], r["status"].upper(), r["reason"]) for r in store.latest()]
    click.echo(table(rows, ["TARGET", "CHECK", "STATUS", "REASON"]))


REASON_WIDTH = 100  # characters of a reason a table shows (JSON has all of it)


def _short(text: str, width: int = REASON_WIDTH) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def unreachable(observations: Sequence[Any]) -> dict[str, str]:
    """Hosts whose every result is the same error (the host did not
    answer): one line each instead of one per check."""
    by_host: dict[str, list[Any]] = {}
    for o in observations:
        by_host.setdefault(o.target, []).append(o)
    return {h: obs[0].reason for h, obs in by_host.items()
            if len(obs) > 1 and all(o.status.value == "error" for o in obs) and len({o.reason for o in obs}) == 1}


def host_summary(observations: Sequence[Any]) -> list[tuple[str, int, int, int]]:
    """(host, pass, fail, error), hosts with failures first."""
    counts: dict[str, list[int]] = {}
    for o in observations:
        c = counts.setdefault(o.target, [0, 0, 0])
        c[("pass", "fail", "error").index(o.status.value)] += 1
    return sorted(((h, *c) for h, c in counts.items()), key=lambda r: (-r[2], -r[3], r[0]))


@cli.command()
@click.option("-t", "--target", "targets", multiple=True, help="Only this target (repeatable).")
@click.option("-k", "--check", "checks", multiple=True, help="Only this check id (repeatable).")
@click.option("--failed", is_flag=True, help="Only what failed or erred (the per-host summary still lists every host).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_state
def check(state: State, targets: tuple[str, ...], checks: tuple[str, ...], failed: bool, fmt: str) -> None:
    """Run checks once now and print a per-host summary, then the results
    (failures first; one line per unreachable host); exit 1 if any failed or erred."""
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
    progress = sys.stderr.isatty() and fmt == "table"

    async def go():
        engine = Engine(loaded.registry, store, loaded.targets,
                        max_concurrent_targets=loaded.config.agent.max_concurrent_targets)
        due = {n: [c for c in cs if not checks or c.id in checks] for n, cs in engine.due(force=True).items()
               if not targets or n in targets}
        due = {n: cs for n, cs in due.items() if cs}
        jobs = [asyncio.ensure_future(engine.observe_target(engine.targets[n], cs)) for n, cs in due.items()]
        out = []
        try:
            for i, job in enumerate(asyncio.as_completed(jobs), 1):
                batch = await job
                out.extend(batch)
                if progress and batch:
                    click.echo(f"\r{i}/{len(jobs)} hosts answered (last: {batch[0].target})\x1b[K", err=True, nl=False)
            if progress:
                click.echo("\r\x1b[K", err=True, nl=False)
            return out
        finally:
            loaded.ctx.close()

    if progress:
        click.echo(f"observing {len(targets) or len(loaded.targets)} hosts...", err=True)
    # What a person sees is scrubbed like what the evidence keeps.
    observations = [dataclasses.replace(o, reason=loaded.ctx.scrub(o.reason), facts=loaded.ctx.scrub(dict(o.facts)))
                    for o in asyncio.run(go())]
    order = {"fail": 0, "error": 1, "pass": 2}
    observations.sort(key=lambda o: (order[o.status.value], o.target, o.check))
    shown = [o for o in observations if o.status.value != "pass"] if failed else observations
    if fmt == "json":
        click.echo(json.dumps([
            {"target": o.target, "check": o.check, "status": o.status.value, "reason": o.reason, "facts": o.facts}
            for o in shown
        ], indent=2, default=str))
    else:
        down = unreachable(observations)
        click.echo(table(host_summary(observations), ["HOST", "PASS", "FAIL", "ERROR"]))
        for host, reason in sorted(down.items()):
            click.echo(f"{host}: unreachable: {_short(reason)}")
        rows = [(o.target, o.check, o.status.value.upper(), _short(o.reason)) for o in shown if o.target not in down]
        if rows:
            click.echo("")
            click.echo(table(rows, ["TARGET", "CHECK", "STATUS", "REASON"]))
        n_fail = sum(o.status.value != "pass" for o in observations)
        click.echo(f"\n{len(observations) - n_fail} passed, {n_fail} failed or erred"
                   + (f"; {len(down)} hosts unreachable" if down else ""))
    if not observations:
        _fail("no checks ran: no target has a check that applies to it", EXIT_FAILED)
    if any(o.status.value != "pass" for o in observations):
        sys.exit(EXIT_FAILED)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_state
def status(state: State, fmt: str) -> None:
    """Compliance now, per host, from the state store (no sweep): hosts with
    drift first, then every failing check, how long and how it stands."""
    from datetime import datetime, timezone

    from . import risk
    from .store import iso

    loaded = state.loaded()
    store = state.store()
    at = iso(datetime.now(timezone.utc))
    exceptions = store.exceptions(active_at=at)
    drift = store.drift()
    accepted = {(d["target"], d["check_id"]) for d in drift if risk.covering(exceptions, d["target"], d["check_id"], at)}
    hosts: dict[str, dict[str, Any]] = {t.name: {"host": t.name, "role": t.role, "pass": 0, "fail": 0, "accepted": 0,
                                                 "error": 0, "last_seen": None} for t in loaded.targets}
    for row in store.latest():
        h = hosts.setdefault(row["target"], {"host": row["target"], "role": "", "pass": 0, "fail": 0, "accepted": 0,
                                             "error": 0, "last_seen": None})
        key = "accepted" if (row["target"], row["check_id"]) in accepted else row["status"]
        h[key] += 1
        h["last_seen"] = max(h["last_seen"] or "", row["observed_at"])
    host_rows = sorted(hosts.values(), key=lambda h: (-h["fail"], -h["error"], h["host"]))
    failing = [{"host": d["target"], "check": d["check_id"], "since": d["since"], "accepted": (d["target"], d["check_id"]) in accepted,
                "incident": d["incident_id"], "outcome": d["outcome"] or ("open" if d["incident_state"] == "open" else None),
                "reason": loaded.ctx.scrub(d["reason"])} for d in drift]
    if fmt == "json":
        click.echo(json.dumps({"hosts": host_rows, "failing": failing}, indent=2))
        return
    click.echo(table([(h["host"], h["role"], h["fail"], h["accepted"], h["error"], h["pass"],
                       (h["last_seen"] or "never")[:19].replace("T", " ")) for h in host_rows],
                     ["HOST", "ROLE", "FAILING", "ACCEPTED", "ERROR", "PASSING", "LAST RESULT"]))
    if failing:
        click.echo("")
        click.echo(table([(f["host"], f["check"], (f["since"] or "")[:16].replace("T", " "),
                           "accepted risk" if f["accepted"] else (f["outcome"] or "not yet handled"),
                           _short(f["reason"], 70)) for f in failing],
                         ["HOST", "FAILING CHECK", "SINCE", "HOW IT STANDS", "REASON"]))


@cli.command()
@click.option("--now", "now", is_flag=True, required=True, help="Sweep now (the only mode).")
@click.option("-t", "--target", "targets", multiple=True, help="Only this target (repeatable).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="The running agent's API port (default: the config's agent.http.port).")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True)
@pass_state
def sweep(state: State, now: bool, targets: tuple[str, ...], port: int | None, timeout: float) -> None:
    """Ask the running agent to observe now (its local API), so a fix shows
    without waiting for the schedule; prints what it found."""
    import urllib.error
    import urllib.request

    http = state.loaded().config.agent.http
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(http.listen, http.listen)
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if http.tls else "http"
    url = f"{scheme}://{host}:{port or http.port}/sweep"
    req = urllib.request.Request(url, data=json.dumps({"targets": list(targets)}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    ctx = None
    if http.tls:
        import ssl

        ctx = ssl.create_default_context(cafile=str(http.tls.cert))
        ctx.check_hostname = False
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            why = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            why = exc.reason
        _fail(f"{url}: {why}", EXIT_FAILED if exc.code != 400 else EXIT_CONFIG)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        _fail(f"{url}: the agent did not answer ({getattr(exc, 'reason', exc)}); is `osiris run` running?", EXIT_FAILED)
    click.echo(table([(h["host"], h["pass"], h["fail"], h["error"]) for h in body["hosts"]],
                     ["HOST", "PASS", "FAIL", "ERROR"]))
    click.echo(f"\nswept {len(body['hosts'])} hosts; healing is under way for {body['healing']} incidents")


def control_mapping(registry) -> str:
    """The HIPAA control mapping as Markdown: every check and the runbooks
    that heal it, grouped by citation. docs/hipaa-mapping.md is this output
    with the installed plugins, and a test keeps it fresh."""
    fixes: dict[str, list[str]] = {}
    for rid, c in sorted(registry.runbooks.items()):
        for check_id in c.spec.fixes:
            fixes.setdefault(check_id, []).append(f"`{rid}` ({c.spec.risk.value})")
    lines = [
        "# HIPAA Security Rule control mapping",
        "",
        "Generated by `osiris checks --format markdown`; do not edit by hand.",
        "Citations are to 45 CFR Part 164, Subpart C.",
        "",
        "| check | title | plugin | roles | severity | HIPAA | CIS | healed by |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for cid, c in sorted(registry.checks.items()):
        s = c.spec
        lines.append(
            f"| `{cid}` | {s.title} | {c.plugin} | {', '.join(sorted(s.roles)) or 'all'} | {s.severity.value} "
            f"| {', '.join(s.hipaa)} | {s.cis or ''} | {', '.join(fixes.get(cid, [])) or 'escalation only'} |"
        )
    by_cite: dict[str, list[str]] = {}
    for cid, c in registry.checks.items():
        for cite in c.spec.hipaa:
            by_cite.setdefault(cite, []).append(cid)
    lines += ["", "## By citation", "", "| citation | checks |", "| --- | --- |"]
    for cite in sorted(by_cite):
        lines.append(f"| {cite} | {', '.join(f'`{x}`' for x in sorted(by_cite[cite]))} |")
    return "\n".join(lines) + "\n"


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table")
@pass_state
def checks(state: State, fmt: str) -> None:
    """List installed checks with their HIPAA citations (markdown: the
    control mapping committed as docs/hipaa-mapping.md)."""
    reg = state.loaded().registry
    items = [(cid, c.plugin, c.spec) for cid, c in sorted(reg.checks.items())]
    if fmt == "markdown":
        click.echo(control_mapping(reg), nl=False)
        return
    if fmt == "json":
        click.echo(json.dumps([
            {"id": cid, "plugin": p, "title": s.title, "target_kind": s.target_kind, "roles": sorted(s.roles),
             "severity": s.severity.value, "interval": s.interval, "hipaa": list(s.hipaa), "cis": s.cis,
             "source": None if s.source is None else {"file": s.source.file, "line": s.source.line,
                                                      "sha256": s.source.sha256}}
            for cid, p, s in items
        ], indent=2))
        return
    # SOURCE: the plugin whose code declares the check, or the file it was declared in (a check pack).
    rows = [(cid, p if s.source is None else str(s.source), s.target_kind, ",".join(sorted(s.roles)) or "*",
             s.severity.value, " ".join(s.hipaa), s.title) for cid, p, s in items]
    click.echo(table(rows, ["CHECK", "SOURCE", "KIND", "ROLES", "SEVERITY", "HIPAA", "TITLE"]))


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_state
def plugins(state: State, fmt: str) -> None:
    """List loaded plugins: name, version and the hooks they implement."""
    pm = state.plugin_manager()
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
@pass_state
def config_check(state: State, file: str) -> None:
    """Validate FILE: core sections and every plugin's section."""
    loaded = state.load(file)
    missing = [t.credential for t in loaded.targets if t.credential and not loaded.ctx.secrets.exists(t.credential)]
    click.echo(f"{file}: ok ({len(loaded.targets)} targets, {len(loaded.registry.checks)} checks)")
    for name in missing:
        click.echo(f"{file}: note: secret {name!r} is not readable here (it is read at run time)", err=True)


@config.command("schema")
@pass_state
def config_schema(state: State) -> None:
    """Print the JSON Schema of the config file, plugin sections included."""
    from .config import json_schema

    pm = state.plugin_manager()
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
@click.option("--by", required=True, help="Who resolves it (recorded as evidence).")
@pass_state
def incidents_resolve(state: State, incident_id: int, outcome: str, tier: str, detail: str, by: str) -> None:
    """Resolve an open incident by hand with an outcome; who did it is evidence."""
    from .healing.ladder import resolution
    from .healing.learning import decider

    try:
        by = decider(by, "resolving an incident")
        inc = state.store().resolve_incident(incident_id, outcome, tier, detail)
    except StoreError as exc:
        _fail(str(exc), EXIT_FAILED)
    _record(state, "incident_resolved", resolution(inc, by), host=inc.target)
    click.echo(f"incident {inc.id} resolved: {inc.outcome} ({inc.tier}) by {by}")


def _record(state: State, kind: str, payload: dict[str, Any], host: str | None = None) -> None:
    """Record one bundle from a command (the agent may be running: the log
    takes one writer at a time)."""
    loaded = state.loaded()
    if not loaded.config.evidence.enabled:
        return
    from .evidence.service import EvidenceService

    service = EvidenceService.open(loaded.ctx, loaded.config.evidence,
                                   plugins={n: i.version for n, i in loaded.pm.infos.items()})
    try:
        service.record_now(kind, payload, host=host)
    finally:
        service.log.close()


@contextlib.contextmanager
def _recorder(state: State):
    """``evidence`` for :mod:`osiris.actions` from a command: bundles
    appended at once (None when the site keeps no evidence log)."""
    loaded = state.loaded()
    if not loaded.config.evidence.enabled:
        yield None
        return
    from .actions import NowRecorder
    from .evidence.errors import EvidenceError
    from .evidence.service import EvidenceService

    try:
        service = EvidenceService.open(loaded.ctx, loaded.config.evidence,
                                       plugins={n: i.version for n, i in loaded.pm.infos.items()})
    except EvidenceError as exc:
        _fail(str(exc), EXIT_FAILED)
    try:
        yield NowRecorder(service)
    finally:
        service.log.close()


def _listing(fmt: str, rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """One listing, as a table (COLUMN headers from ``columns``) or JSON (every field)."""
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    click.echo(table([[("" if r.get(k) is None else r.get(k)) for k, _ in columns] for r in rows],
                     [h for _, h in columns]))


@cli.group()
def exceptions() -> None:
    """Accepted risks: drift they cover is reported as such, not healed or escalated, until they end."""


@exceptions.command("add")
@click.argument("check")
@click.option("--host", default=None, help="Only this target (default: every host).")
@click.option("--reason", required=True, help="Why the risk is accepted (kept as evidence).")
@click.option("--approved-by", required=True, help="Who at the practice approved it.")
@click.option("--expires", required=True, help="YYYY-MM-DD (holds through that day, UTC) or an ISO time with zone; "
                                               "at most a year ahead.")
@click.option("--by", default=None, help="Who enters it (default: the approver).")
@pass_state
def exceptions_add(state: State, check: str, host: str | None, reason: str, approved_by: str, expires: str,
                   by: str | None) -> None:
    """Accept the risk of CHECK failing (on --host, or everywhere) until --expires."""
    from datetime import datetime, timezone

    from .actions import ActionError, accept_risk

    loaded = state.loaded()
    store = state.store()
    with _recorder(state) as rec:
        try:
            exc = asyncio.run(accept_risk(
                store, rec, check=check, host=host, reason=reason, approved_by=approved_by, expires=expires,
                by=by or approved_by, via="cli", checks=loaded.registry.checks,
                targets=[t.name for t in loaded.targets], now=datetime.now(timezone.utc)))
        except ActionError as e:
            _fail(str(e), EXIT_CONFIG)
    click.echo(f"exception {exc['id']}: {exc['check_id']} on {exc['target'] or 'every host'} accepted until "
               f"{exc['expires_at'][:16]}Z (approved by {exc['approved_by']})")


@exceptions.command("list")
@click.option("--all", "show_all", is_flag=True, help="Expired and removed ones too.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_state
def exceptions_list(state: State, show_all: bool, fmt: str) -> None:
    """Exceptions in force (all of them with --all)."""
    from datetime import datetime, timezone

    from .store import iso

    store = state.store()
    rows = store.exceptions(None if show_all else iso(datetime.now(timezone.utc)))
    rows = [{**r, "target": r["target"] or "*", "reason": state.loaded().ctx.scrub(r["reason"])} for r in rows]
    _listing(fmt, rows, [("id", "ID"), ("check_id", "CHECK"), ("target", "HOST"), ("expires_at", "EXPIRES"),
                         ("approved_by", "APPROVED BY"), ("removed_at", "REMOVED"), ("reason", "REASON")])


@exceptions.command("remove")
@click.argument("exception_id", type=int)
@click.option("--reason", required=True, help="Why it ends early (kept as evidence).")
@click.option("--by", required=True, help="Who removes it.")
@pass_state
def exceptions_remove(state: State, exception_id: int, reason: str, by: str) -> None:
    """End an exception now: the drift it covered is drift again."""
    from .actions import ActionError, remove_exception

    store = state.store()
    with _recorder(state) as rec:
        try:
            asyncio.run(remove_exception(store, rec, exception_id, by=by, reason=reason, via="cli"))
        except ActionError as e:
            _fail(str(e), EXIT_FAILED)
    click.echo(f"exception {exception_id} removed by {by}")


@cli.group()
def users() -> None:
    """Status page accounts (needed when it listens off loopback): viewer or operator."""


def _password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator"]), required=True,
              help="viewer: sees the page; operator: also acts on it.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--by", default="cli", show_default=True, help="Who adds the account (kept as evidence).")
@pass_state
def users_add(state: State, name: str, role: str, password_stdin: bool, by: str) -> None:
    """Add an account (argon2id password hash in the state database)."""
    from .actions import account_changed
    from .web.auth import AuthError, add_user

    store = state.store()
    try:
        add_user(store, name, role, _password(password_stdin))
    except AuthError as exc:
        _fail(str(exc), EXIT_CONFIG)
    with _recorder(state) as rec:
        asyncio.run(account_changed(rec, user=name, change="added", role=role, by=by, via="cli"))
    click.echo(f"user {name} added ({role})")


@users.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_state
def users_list(state: State, fmt: str) -> None:
    """Accounts, their roles and lockouts (never their hashes)."""
    _listing(fmt, state.store().users(), [("name", "NAME"), ("role", "ROLE"), ("created_at", "CREATED"),
                                          ("failures", "FAILED LOGINS"), ("locked_until", "LOCKED UNTIL")])


@users.command("remove")
@click.argument("name")
@click.option("--by", default="cli", show_default=True, help="Who removes the account (kept as evidence).")
@pass_state
def users_remove(state: State, name: str, by: str) -> None:
    """Remove an account and end its sessions."""
    from .actions import account_changed

    store = state.store()
    try:
        store.remove_user(name)
    except StoreError as exc:
        _fail(str(exc), EXIT_FAILED)
    with _recorder(state) as rec:
        asyncio.run(account_changed(rec, user=name, change="removed", role=None, by=by, via="cli"))
    click.echo(f"user {name} removed")


@users.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--by", default="cli", show_default=True, help="Who changes it (kept as evidence).")
@pass_state
def users_passwd(state: State, name: str, password_stdin: bool, by: str) -> None:
    """Set a new password: lockout cleared, the account's sessions ended."""
    from .actions import account_changed
    from .web.auth import AuthError, set_password

    store = state.store()
    try:
        set_password(store, name, _password(password_stdin))
    except AuthError as exc:
        _fail(str(exc), EXIT_FAILED)
    with _recorder(state) as rec:
        asyncio.run(account_changed(rec, user=name, change="password", role=None, by=by, via="cli"))
    click.echo(f"user {name}: password changed")


def _ladder(state: State):
    """A ladder over the store for the CLI: rules and learning, no healing."""
    from .healing.ladder import Ladder

    loaded = state.loaded()
    return Ladder(loaded.ctx, loaded.pm, loaded.registry, state.store(), loaded.config.healing, loaded.targets)


@cli.group()
def rules() -> None:
    """L1 healing rules, learned patterns and promotion candidates."""


@rules.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_state
def rules_list(state: State, fmt: str) -> None:
    """Rules in force, in the order they are tried; exit 2 on rule errors."""
    ladder = _ladder(state)
    ladder.reload(force=True)
    items = [{"id": r.id, "check": r.model.match.check, "roles": list(r.model.match.roles),
              "runbook": r.model.action.runbook, "mode": r.model.mode, "source": f"{r.file}:{r.line}"}
             for r in ladder.rules.rules]
    if fmt == "json":
        click.echo(json.dumps(items, indent=2))
    else:
        click.echo(table([(r["id"], r["check"], ",".join(r["roles"]) or "*", r["runbook"], r["mode"] or "-",
                           r["source"]) for r in items], ["RULE", "CHECK", "ROLES", "RUNBOOK", "MODE", "SOURCE"]))
    for msg in ladder.rule_errors:
        click.echo(f"osiris: {msg}", err=True)
    if ladder.rule_errors:
        sys.exit(EXIT_CONFIG)


@rules.command("patterns")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_state
def rules_patterns(state: State, fmt: str) -> None:
    """Healing outcomes per (check, role, runbook, tier)."""
    patterns = _ladder(state).learning.patterns()
    if fmt == "json":
        click.echo(json.dumps(patterns, indent=2))
        return
    rows = [(p["check_id"], p["role"] or "*", p["runbook"], p["tier"], p["attempts"], p["successes"],
             p["mean_time_to_heal_s"] if p["mean_time_to_heal_s"] is not None else "-") for p in patterns]
    click.echo(table(rows, ["CHECK", "ROLE", "RUNBOOK", "TIER", "ATTEMPTS", "OK", "MTTH_S"]))


@rules.command("candidates")
@click.option("--all", "show_all", is_flag=True, help="Approved and rejected ones too.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_state
def rules_candidates(state: State, show_all: bool, fmt: str) -> None:
    """L2 fixes proven often enough to become L1 rules."""
    items = _ladder(state).learning.candidates(None if show_all else "candidate")
    if fmt == "json":
        click.echo(json.dumps([c.as_dict() for c in items], indent=2))
        return
    rows = [(c.id, c.state, c.check_id, c.role or "*", c.runbook, f"{c.successes}/{c.attempts}",
             c.decided_by or "", c.decided_at or "") for c in items]
    click.echo(table(rows, ["ID", "STATE", "CHECK", "ROLE", "RUNBOOK", "OK", "BY", "AT"]))


def _decide(state: State, decision: str, cid: int, by: str) -> None:
    learning = _ladder(state).learning
    try:
        c = (learning.approve if decision == "approve" else learning.reject)(cid, by)
    except StoreError as exc:
        _fail(str(exc), EXIT_FAILED)
    _record(state, "rule_decision", c.as_dict())  # who decided, and when, is evidence too
    where = f"; rule written to {c.rule_file}" if c.rule_file else ""
    click.echo(f"candidate {c.id} {c.state} by {c.decided_by} at {c.decided_at}{where}")


@rules.command("approve")
@click.argument("candidate_id", type=int)
@click.option("--by", required=True, help="Who approves (kept with the rule).")
@pass_state
def rules_approve(state: State, candidate_id: int, by: str) -> None:
    """Promote a candidate to an L1 rule (the running agent loads it)."""
    _decide(state, "approve", candidate_id, by)


@rules.command("reject")
@click.argument("candidate_id", type=int)
@click.option("--by", required=True, help="Who rejects.")
@pass_state
def rules_reject(state: State, candidate_id: int, by: str) -> None:
    """Reject a candidate; it is not proposed again."""
    _decide(state, "reject", candidate_id, by)


@cli.command("health-gate")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds every check may take (they run at once); a check still running then fails.")
@click.option("--agent-port", type=click.IntRange(1, 65535), default=None,
              help="Port of the agent's HTTP API (default: the config's agent.http.port).")
@click.option("--boot-id", default=None,
              help="This boot's id (the unit passes %b; default: /proc/sys/kernel/random/boot_id).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_state
def health_gate(state: State, timeout: float, agent_port: int | None, boot_id: str | None, fmt: str) -> None:
    """Decide whether this boot is healthy: run the built-in health checks
    and every plugin's, print each result, record the verdict as evidence;
    exit 0 only when every check ran and passed (docs/image.md)."""
    import os

    from .evidence.errors import EvidenceError
    from .health import WATCHDOG_GRACE, Gate, record, render, to_json

    loaded = state.loaded()
    gate = Gate(loaded, timeout=timeout, agent_port=agent_port, boot_id=boot_id)

    def report(verdict) -> None:
        click.echo(to_json(verdict) if fmt == "json" else render(verdict))
        for note in verdict.notes:
            click.echo(f"osiris: {note}", err=True)

    def on_stuck(verdict) -> None:
        # The event loop is blocked (a check that never yields): record
        # what is known from this thread, bounded, then end the process.
        def keep() -> None:
            try:
                verdict.recorded = record(loaded, verdict)
            except (EvidenceError, StoreError, OSError) as exc:
                verdict.notes.append(f"health gate: verdict not recorded as evidence: {exc}")

        t = threading.Thread(target=keep, daemon=True)
        t.start()
        t.join(WATCHDOG_GRACE)
        if t.is_alive():
            verdict.notes.append("health gate: verdict not recorded as evidence: the evidence log did not answer")
        report(verdict)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_FAILED)

    verdict = gate.run(on_stuck)
    try:
        verdict.recorded = record(loaded, verdict)
    except (EvidenceError, StoreError, OSError) as exc:
        # A verdict that cannot be kept is not a pass: the evidence log is part of what must work.
        verdict.notes.append(f"health gate: verdict not recorded as evidence: {exc}")
        verdict.passed = False
    report(verdict)
    loaded.ctx.close()
    code = 0 if verdict.passed else EXIT_FAILED
    if gate.cut:
        # A check cut at its deadline may have left a thread behind that
        # interpreter shutdown would wait for (the agent's pool joins its threads).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


cli.add_command(evidence_group)
cli.add_command(report_command)
cli.add_command(update_group)


def main(argv: Sequence[str] | None = None) -> None:
    plugins = Plugins()
    plugins.add_commands(cli)
    for problem in plugins.command_errors:
        click.echo(f"osiris: {problem}", err=True)
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="osiris", obj=plugins)
    except SecretError as exc:
        _fail(str(exc), EXIT_CONFIG)
