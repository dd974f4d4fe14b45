"""The agent process: one asyncio loop under systemd.

systemd integration follows sd_notify(3) (:mod:`.notify`, which never
blocks the loop): ``READY=1``
once config, plugins, state and the HTTP API are up; ``WATCHDOG=1`` every
half ``WATCHDOG_USEC``, sent only while the check loop's heartbeat is fresh,
so that a wedged loop is restarted by systemd instead of pretending to be
well; ``STATUS=`` lines that ``systemctl status`` shows.
"""

from __future__ import annotations

import asyncio
import hashlib
import errno
import logging
import os
import signal
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .api import make_app
from .app import Loaded
from .engine import Engine
from .evidence.service import EvidenceService
from .healing.ladder import Ladder
from .notify import Notifier
from .records import EscalationChannel, EvidenceSink, Source, UpdateBackend
from .store import Retention, Store

log = logging.getLogger(__name__)


class ListenError(Exception):
    """The HTTP API cannot bind its address. ``in_use``: another process
    holds it (the config may be right); otherwise the address itself is
    wrong for this machine (not one of its addresses, a privileged port)."""

    def __init__(self, message: str, in_use: bool):
        super().__init__(message)
        self.in_use = in_use


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half the watchdog timeout systemd asked for, or None when it asked
    for none (or asked another process: WATCHDOG_PID)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2 / 1_000_000 if value > 0 else None


class Agent:
    def __init__(self, loaded: Loaded):
        self.loaded = loaded
        self.ctx = loaded.ctx
        kept = loaded.config.store
        self.store = Store(self.ctx.state_dir, retention=Retention(kept.retention_days, kept.prune_interval))
        self.ctx.use_store(self.store)
        cfg = loaded.config.agent
        # The one-way flow (osiris.flow), built from its end:
        # sources/executors -> engine -> ladder -> evidence -> sinks.
        # The evidence log's key and file are checked here, so a key that
        # is loose or does not match its pin stops the agent before anything
        # runs (EvidenceError is a StoreError: exit 1 with the file named).
        self.evidence: EvidenceService | None = None
        if loaded.config.evidence.enabled:
            self.evidence = EvidenceService.open(
                self.ctx, loaded.config.evidence, plugins={n: i.version for n, i in loaded.pm.infos.items()}
            )
        self.ctx.evidence = self.evidence
        self.ladder = Ladder(self.ctx, loaded.pm, loaded.registry, self.store, loaded.config.healing,
                             loaded.targets, evidence=self.evidence, scrub=self.ctx.scrub)
        self.engine = Engine(
            loaded.registry, self.store, loaded.targets, downstream=self.ladder,
            max_concurrent_targets=cfg.max_concurrent_targets, tick=cfg.tick,
        )
        self.notifier = Notifier()
        self.stop = asyncio.Event()
        self.http_port: int | None = None
        self.sources: list[Source] = []
        self.sinks: list[EvidenceSink] = []
        self.channels: list[EscalationChannel] = []
        self.update_backends: list[UpdateBackend] = []
        self._status = "starting"
        self.last_error: str | None = None

    def notify(self, *lines: str) -> None:
        self.notifier.notify(*lines)

    def set_status(self, text: str) -> None:
        self._status = text
        self.notify(f"STATUS={text}")

    def status(self) -> dict[str, Any]:
        """What ``/status`` shows: scrubbed like everything that leaves the
        evidence path (reasons and errors can quote facts)."""
        return self.ctx.scrub(self._status_raw())

    def _status_raw(self) -> dict[str, Any]:
        latest = self.store.latest()
        per_target: dict[str, dict[str, Any]] = {}
        for row in latest:
            t = per_target.setdefault(row["target"], {"pass": 0, "fail": 0, "error": 0, "checks": {}})
            t[row["status"]] += 1
            t["checks"][row["check_id"]] = {"status": row["status"], "reason": row["reason"], "observed_at": row["observed_at"]}
        return {
            "site": self.ctx.site.model_dump(),
            "status": self._status,
            "alive": self.engine.alive(),
            "targets": per_target,
            "incidents": self.store.count_incidents(),
            "in_flight": self.engine.in_flight(),
            "last_error": self.last_error or self.engine.last_error or self.ladder.last_error,
            "store": self.store.upkeep(),
            "healing": {
                "mode": self.loaded.config.healing.mode,
                "rules": len(self.ladder.rules.rules),
                "rule_errors": self.ladder.rule_errors,
                "active": self.ladder.active_incidents(),
            },
        }

    def _summary(self) -> str:
        counts = self.store.count_incidents()
        fails = self.store.count_status("fail")
        return f"watching {len(self.engine.targets)} targets; {fails} failing checks; {counts['open']} open incidents"

    async def _watchdog(self, interval: float) -> None:
        while True:
            if self.engine.alive():
                self.notify("WATCHDOG=1")
            else:
                log.error("check loop heartbeat is stale; withholding WATCHDOG=1")
            await asyncio.sleep(interval)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(max(self.engine.tick, 5.0))
            self.set_status(self._summary())

    async def _start_http(self) -> web.AppRunner | None:
        http = self.loaded.config.agent.http
        if not http.enabled:
            return None
        from .web.auth import require_access

        # Off loopback: TLS and accounts, or no start (ConfigError, exit 2).
        tls = require_access(http, self.store, self.loaded.source)
        runner = web.AppRunner(make_app(self), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, http.listen, http.port, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.loaded.source}: section 'agent', key 'http.listen'/'http.port'"
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            if exc.errno == errno.EADDRINUSE:
                raise ListenError(f"{where}: cannot listen on {http.listen} port {http.port}: {reason} "
                                  "(another process holds it: is another osiris agent running?)", True) from None
            raise ListenError(f"{where}: cannot listen on {http.listen} port {http.port}: {reason} "
                              "(expected an address of this machine and a port the agent may bind)", False) from None
        sock = site._server.sockets[0] if site._server and site._server.sockets else None  # noqa: SLF001
        self.http_port = sock.getsockname()[1] if sock else http.port
        log.info("status page and HTTP API on %s://%s:%s/", "https" if tls else "http", http.listen, self.http_port)
        return runner

    def _background(self, coro: Any, name: str) -> asyncio.Task:
        """A long-lived task whose failure is logged and shown in /status,
        never lost silently."""
        task = asyncio.create_task(coro, name=name)

        def done(t: asyncio.Task) -> None:
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                self.last_error = f"{name} stopped: {type(exc).__name__}: {exc}"
                log.error("%s stopped", name, exc_info=exc)

        task.add_done_callback(done)
        return task

    def _collect(self, hook: str, typ: type) -> list[Any]:
        return [item for _plugin, item in self.loaded.pm.collect(hook, typ, ctx=self.ctx)]

    async def run(self, *, once: bool = False) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        tasks: list[asyncio.Task] = []
        runner = None
        pm = self.loaded.pm
        try:
            await pm.call_lifecycle("osiris_startup", ctx=self.ctx)
            self.sources = self._collect("osiris_sources", Source)
            self.sinks = self._collect("osiris_evidence_sinks", EvidenceSink)
            self.channels = self._collect("osiris_escalation_channels", EscalationChannel)
            self.update_backends = self._collect("osiris_update_backends", UpdateBackend)
            if self.evidence is not None:
                await self.evidence.start(self.sinks)
            self.ladder.channels = self.channels
            if not self.channels:
                log.warning("no escalation channel is configured: drift that no rule or planner heals is "
                            "recorded and shown, but nobody is told")
            self.ladder.start()
            if self.evidence is not None:
                await self.evidence.record("agent_start", start_statement(self.loaded, self.ladder.rule_digests()))
            runner = await self._start_http()
            for source in self.sources:
                tasks.append(self._background(source.run(self.engine.submit), f"source:{source.name}"))
            interval = watchdog_interval()
            if interval:
                tasks.append(self._background(self._watchdog(interval), "watchdog"))
            self.notify("READY=1", f"STATUS=started; watching {len(self.engine.targets)} targets")
            self._status = "running"
            if once:
                await self.engine.sweep(force=True)
                await self.ladder.drain()
                if self.evidence is not None:
                    await self.evidence.flush()
                self.set_status(self._summary())
            else:
                tasks.append(self._background(self._status_loop(), "status"))
                tasks.append(self._background(self.ladder.run(self.stop), "ladder"))
                await self.engine.run(self.stop)
            return 0
        finally:
            self.notify("STOPPING=1", "STATUS=stopping")
            self.notifier.close()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Heals in flight finish (bounded) and are recorded before the
            # evidence log and the store close.
            await self.ladder.shutdown()
            if runner is not None:
                await runner.cleanup()
            try:
                await pm.call_lifecycle("osiris_shutdown", ctx=self.ctx)
            finally:
                try:
                    if self.evidence is not None:
                        await self.evidence.close()
                finally:
                    self.ctx.close()
                    self.store.close()


def start_statement(loaded: Loaded, rule_digests: Mapping[str, str | None]) -> dict[str, Any]:
    """The ``agent_start`` bundle: what this run is, so an auditor can tell
    which code, configuration, rules and checks produced what follows."""
    from .evidence.canonical import canonical as canonical_json

    def digest(value: Any) -> str:
        return hashlib.sha256(canonical_json(value)).hexdigest()

    catalogue = [
        {"id": c.id, "plugin": contributed.plugin, "target_kind": c.target_kind, "hipaa": list(c.hipaa),
         "interval": c.interval, "params": dict(c.params),
         "script_sha256": hashlib.sha256(c.script.encode()).hexdigest() if c.script else None}
        for cid, contributed in sorted(loaded.registry.checks.items()) for c in [contributed.spec]
    ]
    return {
        "agent_version": loaded.ctx.agent_version,
        "plugins": {n: i.version for n, i in sorted(loaded.pm.infos.items())},
        "config_sha256": digest(loaded.config.model_dump(mode="json")),
        "rules": dict(sorted(rule_digests.items())),
        "rules_sha256": digest(dict(sorted(rule_digests.items()))),
        "checks": len(catalogue),
        "disabled_checks": sorted(loaded.registry.disabled),
        "checks_sha256": digest(catalogue),
        "targets": [{"name": t.name, "kind": t.kind, "role": t.role} for t in loaded.targets],
    }
