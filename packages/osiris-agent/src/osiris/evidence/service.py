"""What the agent runs: record bundles, make checkpoints, feed the sinks.

Plugins and later features use :meth:`EvidenceService.record` through the
context::

    ref = await ctx.evidence.record("healing_attempt", {"incident": 12, "runbook": ..., "verified": True},
                                    host="dc01", policy={"rule": "firewall-on", "mode": "standard"})

It scrubs and builds the bundle at once, then waits until the bundle is
durable: a single writer task takes everything queued (up to
``evidence.batch_max``) and appends it in one transaction, so many
concurrent records share one fsync (group commit). Log calls run in one
dedicated thread, so the event loop never waits on the disk.

Observations reach it as the last stage of the one-way flow
(:mod:`osiris.flow`, :meth:`EvidenceService.accept`): each target's
recorded results, whether the engine's sweep or the ladder's own look
after a runbook (``verify``) or after a restart (``recheck``), become one
``sweep`` bundle with its origin, the facts, the verdicts and the policy
(check specs, parameters, HIPAA citations, contributing plugins) that
applied. Observations that sources push (endpoint agents) become
``observation`` bundles.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, TypeVar

from ..paths import DataPaths
from .bundle import Identity, build_statement
from .errors import EvidenceError
from .keys import SigningKey, VerifyKey, load_or_create
from .log import Appended, EvidenceLog
from .note import Checkpoint
from .outbox import Outbox
from .scrub import Scrubber
from .settings import EvidenceSettings

__all__ = ["EvidenceService", "origin_for"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_STOP = object()


def origin_for(site_id: str, appliance: str) -> str:
    """The log's origin line and key name (C2SP: a schema-less URL)."""
    return f"osiris.evidence/{site_id}/{appliance}"


class EvidenceService:
    def __init__(self, log_: EvidenceLog, key: SigningKey, scrubber: Scrubber, identity: Identity,
                 settings: EvidenceSettings, *, registry: Any = None):
        self.log = log_
        self.key = key
        self.scrubber = scrubber
        self.identity = identity
        self.settings = settings
        self.registry = registry
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="osiris-evidence")
        self._queue: asyncio.Queue | None = None
        self._writer: asyncio.Task | None = None
        self._tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()
        self._closed = False
        self.outbox: Outbox | None = None
        self.appended = 0
        self.batches = 0
        self.last_error: str | None = None

    @classmethod
    def open(cls, ctx: Any, settings: EvidenceSettings, *, plugins: Mapping[str, str] | None = None) -> EvidenceService:
        """Load (or on first start create) the key and the log. Raises
        :class:`EvidenceError` with a message naming the file on any problem."""
        from .. import API_VERSION

        paths = DataPaths.of(ctx.state_dir, settings.directory)
        key = load_or_create(paths.key_dir)
        site = ctx.site
        log_ = EvidenceLog(paths.evidence_log, origin=origin_for(site.id, site.appliance),
                           verify_key=key.verify_key, retention_days=settings.retention_days)
        identity = Identity(site.id, site.name, site.appliance, ctx.agent_version, API_VERSION, dict(plugins or {}))
        return cls(log_, key, Scrubber.from_settings(settings.scrub), identity, settings,
                   registry=getattr(ctx, "registry", None))

    @property
    def verify_key(self) -> VerifyKey:
        """The appliance's public key (``.pem()``, ``.fingerprint``): what
        verifies every bundle and checkpoint this log signs."""
        return self.key.verify_key

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, functools.partial(fn, *args, **kwargs))

    # -- recording ---------------------------------------------------------------------

    def statement(self, kind: str, payload: Any, *, host: str | None = None, policy: Any = None,
                  now: datetime | None = None) -> dict[str, Any]:
        return build_statement(self.identity, self.scrubber, kind, payload, host=host, policy=policy, now=now)

    async def record(self, kind: str, payload: Any, *, host: str | None = None, policy: Any = None) -> Appended:
        """Scrub, sign and durably append one bundle; returns its index and id."""
        if self._closed:
            raise EvidenceError("the evidence log is closed")
        st = self.statement(kind, payload, host=host, policy=policy)
        if self._writer is None or self._writer.done():
            self._queue = asyncio.Queue()
            self._writer = asyncio.create_task(self._write_loop(), name="evidence-writer")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        assert self._queue is not None
        self._queue.put_nowait((st, fut))
        return await fut

    def record_now(self, kind: str, payload: Any, *, host: str | None = None, policy: Any = None) -> Appended:
        """Synchronous record (commands, tests): one bundle, one commit."""
        return self.log.append([self.statement(kind, payload, host=host, policy=policy)], self.key)[0]

    async def _write_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            item = await queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self.settings.batch_max and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            try:
                results = await self._run(self.log.append, [s for s, _ in batch], self.key)
            except Exception as exc:  # noqa: BLE001 - report to every waiter, keep the writer alive
                self.last_error = f"append failed: {type(exc).__name__}: {exc}"
                log.error("evidence: %d bundle(s) not recorded: %s", len(batch), exc)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(EvidenceError(f"evidence not recorded: {exc}"))
            else:
                self.appended += len(batch)
                self.batches += 1
                for (_, fut), res in zip(batch, results):
                    if not fut.done():
                        fut.set_result(res)
                if self.outbox is not None:
                    self.outbox.notify()
            if stop:
                return

    async def accept(self, batch: Any) -> None:
        """The flow's last stage: a pushed batch (one target's reports from
        a source) is one ``observation`` bundle; any other batch one
        ``sweep`` bundle."""
        if batch.origin == "push" or batch.target is None:
            await self._pushed(batch.observations)
        else:
            await self._sweep(batch.target, batch.checks, batch.observations, batch.origin)

    async def _sweep(self, target: Any, checks: Sequence[Any], observations: Sequence[Any], origin: str) -> None:
        payload = {
            "target": {"name": target.name, "kind": target.kind, "role": target.role, "address": target.address},
            "origin": origin,
            "observations": [self._observation(o) for o in observations],
        }
        try:
            await self.record("sweep", payload, host=target.name, policy=self.policy(checks))
        except Exception as exc:  # noqa: BLE001 - the observation is stored; say so loudly
            self.last_error = f"sweep of {target.name} not recorded: {exc}"
            log.error("evidence: sweep of %s not recorded: %s", target.name, exc)

    async def _pushed(self, observations: Sequence[Any]) -> None:
        """Observations a source pushed about one host (e.g. an endpoint
        agent's batch): one ``observation`` bundle, with the checks' policy."""
        if not observations:
            return
        host = observations[0].target
        checks = getattr(self.registry, "checks", {}) if self.registry is not None else {}
        specs = [checks[c].spec for c in dict.fromkeys(o.check for o in observations) if c in checks]
        payload = {"observations": [self._observation(o) for o in observations]}
        try:
            await self.record("observation", payload, host=host, policy=self.policy(specs) if specs else None)
        except Exception as exc:  # noqa: BLE001 - the observation is stored; say so loudly
            self.last_error = f"pushed observations from {host} not recorded: {exc}"
            log.error("evidence: pushed observations from %s not recorded: %s", host, exc)

    @staticmethod
    def _observation(o: Any) -> dict[str, Any]:
        return {"check": o.check, "status": o.status.value, "reason": o.reason, "facts": o.facts,
                "observed_at": o.observed_at, "duration_ms": round(o.duration_ms, 3)}

    def policy(self, checks: Sequence[Any]) -> dict[str, Any]:
        out = {}
        for c in checks:
            plugin = None
            if self.registry is not None and c.id in getattr(self.registry, "checks", {}):
                plugin = self.registry.plugin_of_check(c.id)
            out[c.id] = {
                "plugin": plugin, "title": c.title, "hipaa": list(c.hipaa), "cis": c.cis,
                "severity": c.severity.value, "interval": c.interval, "target_kind": c.target_kind,
                "roles": sorted(c.roles), "params": dict(c.params),
            }
            if c.source is not None:  # declared in a data file (a check pack): which one, and its digest
                out[c.id]["source"] = {"file": c.source.file, "line": c.source.line, "sha256": c.source.sha256}
        return {"checks": out}

    # -- checkpoints and attestations -------------------------------------------------------

    async def checkpoint(self, *, force: bool = False) -> Checkpoint | None:
        cp = await self._run(self.log.checkpoint, self.key, datetime.now(timezone.utc), force=force)
        if cp is not None and self.outbox is not None:
            self.outbox.notify()
        return cp

    async def attest(self, size: int, kind: str, data: bytes, *, complete: bool, detail: str = "") -> None:
        """Keep a proof about checkpoint ``size`` (e.g. an OpenTimestamps proof)."""
        await self._run(self.log.put_attestation, size, kind, data, complete=complete, detail=detail)

    async def checkpoint_at(self, size: int) -> Checkpoint | None:
        """The signed checkpoint of tree size ``size``, if one was made."""
        return await self._run(self.log.checkpoint_at, size)

    async def attestations(self, kind: str | None = None, *, complete: bool | None = None) -> list[dict[str, Any]]:
        return await self._run(self.log.attestations, kind, complete=complete)

    async def _checkpoint_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.checkpoint_interval)
            except asyncio.TimeoutError:
                pass
            if self._stop.is_set():
                return
            try:
                await self.checkpoint()
            except Exception as exc:  # noqa: BLE001
                self.last_error = f"checkpoint failed: {exc}"
                log.error("evidence: checkpoint failed: %s", exc)

    async def _maintain_loop(self, sink: Any) -> None:
        interval = float(getattr(sink, "maintain_interval", 600.0))
        while not self._stop.is_set():
            try:
                await sink.maintain()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                log.warning("evidence sink %s: maintenance failed: %s", sink.name, exc)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, sinks: Sequence[Any]) -> None:
        """Start the checkpoint schedule and one delivery loop per sink."""
        s = self.settings
        self.outbox = Outbox(self.log, list(sinks), timeout=s.delivery_timeout, backoff_initial=s.backoff_initial,
                             backoff_max=s.backoff_max, run=self._run)
        self._tasks.append(asyncio.create_task(self._checkpoint_loop(), name="evidence-checkpoints"))
        for sink in sinks:
            self._tasks.append(asyncio.create_task(self.outbox.run_sink(sink.name, self._stop),
                                                   name=f"evidence-sink:{sink.name}"))
            if callable(getattr(sink, "maintain", None)):
                self._tasks.append(asyncio.create_task(self._maintain_loop(sink), name=f"evidence-maintain:{sink.name}"))

    async def flush(self, timeout: float = 10.0) -> None:
        """Checkpoint now and give the sinks one bounded chance to catch up
        (what ``osiris run --once`` does before it exits)."""
        await self.checkpoint()
        if self.outbox is None:
            return
        try:
            await asyncio.wait_for(self.outbox.drain(), timeout=timeout)
        except asyncio.TimeoutError:
            log.info("evidence: sinks not caught up within %.0f s; the outbox keeps the rest", timeout)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._writer is not None and not self._writer.done():
            assert self._queue is not None
            self._queue.put_nowait(_STOP)
            await self._writer
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.checkpoint()
        except Exception as exc:  # noqa: BLE001
            log.error("evidence: final checkpoint failed: %s", exc)
        for sink in self.outbox.sinks.values() if self.outbox else ():
            close = getattr(sink, "close", None)
            if callable(close):
                try:
                    result = close()
                    if asyncio.iscoroutine(result):
                        await result
                except Exception as exc:  # noqa: BLE001
                    log.warning("evidence sink %s: close failed: %s", sink.name, exc)
        await self._run(self.log.close)
        self._io.shutdown(wait=True)

    def status(self) -> dict[str, Any]:
        cp = self.log.latest_checkpoint()
        return {
            "origin": self.log.origin,
            "entries": self.log.size(),
            "checkpoint": None if cp is None else {"size": cp.size, "time": cp.time},
            "appended": self.appended,
            "batches": self.batches,
            "last_error": self.last_error,
            "sinks": {name: self.outbox.pending(name) for name in self.outbox.sinks} if self.outbox else {},
        }
