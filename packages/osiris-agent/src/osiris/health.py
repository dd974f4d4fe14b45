"""The post-boot health gate (``osiris health-gate``).

On the appliance, ``osiris-health-gate.service`` runs this once per boot,
before ``boot-complete.target``: when it exits 0, ``systemd-bless-boot``
marks the boot entry good; otherwise the entry is not blessed and, while
the boot is still a trial, the machine reboots and systemd-boot counts the
try down (docs/image.md).

So the gate must never pass a boot whose checks did not all run. Every
check (the built-in ones below and every ``osiris_health_checks`` hook's)
has a deadline; one that hangs is cut and fails under its name, a hook that
raises fails under its plugin's name, and if the event loop itself is
stuck (a plugin blocking it) a watchdog thread ends the process with every
unfinished check named. The verdict (versions, boot id, each result) is
recorded as signed evidence either way.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from . import __version__
from .records import HealthCheck, HealthResult

T = TypeVar("T")

CORE = "core"  # the plugin column of the built-in checks
DEFAULT_TIMEOUT = 30.0
#: Beyond every deadline, how long the watchdog waits for a stuck loop.
WATCHDOG_GRACE = 5.0
#: No appliance clock is right before this (the gate's own release era):
#: an RTC that lost its battery starts in 1970 or 2000.
TIME_FLOOR = datetime(2025, 1, 1, tzinfo=timezone.utc)
#: A clock this far behind the last signed checkpoint was stepped back.
CLOCK_BACK_TOLERANCE = timedelta(minutes=5)
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
OS_RELEASE = Path("/etc/os-release")
# systemd-boot's vendor GUID (Boot Loader Interface): which entry was booted.
LOADER_ENTRY_SELECTED = Path(
    "/sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f")


@dataclass(frozen=True)
class Result:
    """One check's outcome, as printed and recorded."""

    name: str
    plugin: str
    ok: bool
    detail: str
    duration_ms: float = 0.0


@dataclass
class Verdict:
    passed: bool
    results: list[Result]
    agent_version: str
    image_version: str | None
    boot_id: str | None
    boot_entry: str | None
    recorded: str | None = None  # the evidence bundle id, once recorded
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "agent_version": self.agent_version,
            "image_version": self.image_version,
            "boot_id": self.boot_id,
            "boot_entry": self.boot_entry,
            "results": [asdict(r) for r in self.results],
        }


# -- where this boot is ------------------------------------------------------------------


def boot_id(path: Path = BOOT_ID_FILE) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def image_version(path: Path = OS_RELEASE) -> str | None:
    """``IMAGE_VERSION`` from os-release (NixOS sets it from
    ``system.image.version``, which the image module sets)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() == "IMAGE_VERSION":
            return value.strip().strip("\"'") or None
    return None


def boot_entry(path: Path = LOADER_ENTRY_SELECTED) -> str | None:
    """The boot loader entry systemd-boot booted (UTF-16LE after 4 attribute bytes)."""
    try:
        raw = path.read_bytes()[4:]
    except OSError:
        return None
    return raw.decode("utf-16-le", errors="replace").rstrip("\x00") or None


# -- running blocking code with a deadline -------------------------------------------------


def _guarded(fn: Callable[[], HealthResult]) -> Callable[[], HealthResult]:
    """A built-in check's error is its failure, said plainly (a StoreError
    already names its file)."""
    from .store import StoreError

    def call() -> HealthResult:
        try:
            return fn()
        except StoreError as exc:
            return HealthResult(False, str(exc))
        except Exception as exc:  # noqa: BLE001 - a damaged file, a vanished directory...
            return HealthResult(False, f"{type(exc).__name__}: {exc}")

    return call


async def in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a daemon thread of its own. A ThreadPoolExecutor's
    threads are joined at interpreter exit, so one hung call (a locked
    database, a stuck mount) would keep the gate from ever exiting; a
    daemon thread is simply left behind when the deadline cuts it."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(setter: Callable[[Any], None], value: Any) -> None:
        if not fut.done():
            setter(value)

    def work() -> None:
        try:
            value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, fut.set_exception, exc)
        else:
            loop.call_soon_threadsafe(settle, fut.set_result, value)

    threading.Thread(target=work, name="osiris-health", daemon=True).start()
    return await fut


# -- the built-in checks --------------------------------------------------------------------


def _loopback(listen: str) -> str:
    """Where to reach an API bound to ``listen`` from this machine."""
    if listen == "0.0.0.0":
        return "127.0.0.1"
    if listen == "::":
        return "[::1]"
    return f"[{listen}]" if ":" in listen else listen


def agent_answers(listen: str, port: int, *, enabled: bool = True, cert: Path | None = None) -> HealthCheck:
    """``cert``: the agent serves HTTPS with this certificate (agent.http.tls):
    the gate trusts exactly it, reached on loopback whatever names it carries."""
    async def run() -> HealthResult:
        if not enabled:
            return HealthResult(False, "agent.http.enabled is false: the gate cannot ask the agent whether it "
                                       "runs (enable the local HTTP API)")
        tls: Any = True
        if cert is not None:
            import ssl

            try:
                tls = ssl.create_default_context(cafile=str(cert))
            except (OSError, ssl.SSLError) as exc:
                return HealthResult(False, f"agent.http.tls.cert {cert}: cannot read it: {exc}")
            tls.check_hostname = False
            tls.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the served certificate itself is the anchor
        url = f"{'https' if cert else 'http'}://{_loopback(listen)}:{port}/health"
        try:
            async with aiohttp.ClientSession() as session, session.get(url, ssl=tls) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return HealthResult(False, f"{url}: {type(exc).__name__}: {exc}")
        if not isinstance(body, dict):
            return HealthResult(False, f"{url}: answered {resp.status} with something other than a JSON object")
        if resp.status != 200 or body.get("alive") is not True:
            return HealthResult(False, f"{url}: answered {resp.status}, status {body.get('status')!r} "
                                       f"(heartbeat {body.get('heartbeat_age_s')} s old)")
        if body.get("version") != __version__:
            return HealthResult(False, f"{url}: the agent answering is version {body.get('version')!r}, "
                                       f"this system's is {__version__!r}")
        return HealthResult(True, f"{url}: alive, version {__version__}")

    return HealthCheck("agent.answers", run)


def state_database(state_dir: Path) -> HealthCheck:
    def check() -> HealthResult:
        from .paths import DataPaths
        from .store import Store

        path = DataPaths.of(state_dir).state_db
        if not path.exists():
            # Opening would create it: a fresh file proves nothing about the agent's.
            return HealthResult(False, f"{path}: missing (the agent has not created its state database here)")
        store = Store(state_dir)
        try:
            problems = store.integrity()
        finally:
            store.close()
        if problems:
            return HealthResult(False, f"{store.path}: integrity check: {'; '.join(problems[:3])}")
        return HealthResult(True, f"{store.path}: opens, integrity ok")

    async def run() -> HealthResult:
        return await in_thread(_guarded(check))

    return HealthCheck("state.database", run)


def evidence_log(log_path: Path, key_dir: Path, *, enabled: bool = True) -> HealthCheck:
    """The evidence log opens with the pinned key and its newest checkpoint
    verifies: its signature, and the tree it signs is the tree on disk."""

    def check() -> HealthResult:
        from .evidence.keys import load_public
        from .evidence.log import EvidenceLog
        from .evidence.note import parse_checkpoint

        if not enabled:
            return HealthResult(True, "evidence is disabled in the config (evidence.enabled: false)")
        key = load_public(key_dir)
        log = EvidenceLog(log_path, verify_key=key, create=False)
        try:
            cp = log.latest_checkpoint()
            if cp is None:
                return HealthResult(True, f"{log_path}: opens; {log.size()} entries, no checkpoint yet")
            parse_checkpoint(cp.note, key=key, origin=log.origin)
            root = log.root(cp.size)
            if root != cp.root:
                return HealthResult(False, f"{log_path}: the tree at size {cp.size} does not match its signed "
                                           "checkpoint (run `osiris evidence verify`)")
            return HealthResult(True, f"{log_path}: checkpoint {cp.size} of {cp.time} verifies")
        finally:
            log.close()

    async def run() -> HealthResult:
        return await in_thread(_guarded(check))

    return HealthCheck("evidence.log", run)


def writable(directories: Mapping[str, Path]) -> HealthCheck:
    """Each directory takes a file, durably: a data partition mounted
    read-only (or full, or gone) fails here instead of in the first sweep."""

    def check() -> HealthResult:
        done = []
        for what, directory in directories.items():
            if os.statvfs(directory).f_flag & os.ST_RDONLY:
                return HealthResult(False, f"{what} {directory}: on a read-only file system")
            fd, name = tempfile.mkstemp(prefix=".health-gate-", dir=directory)
            try:
                os.write(fd, b"osiris health gate\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(name)
            done.append(str(directory))
        return HealthResult(True, f"writable: {', '.join(done)}")

    async def run() -> HealthResult:
        return await in_thread(_guarded(check))

    return HealthCheck("data.writable", run)


def clock_sane(log_path: Path, *, enabled: bool = True, now: Callable[[], datetime] | None = None) -> HealthCheck:
    """The clock is past :data:`TIME_FLOOR` and not before the evidence
    log's last signed checkpoint (evidence times must not go backwards)."""

    def check() -> HealthResult:
        from .evidence.log import EvidenceLog

        t = (now or (lambda: datetime.now(timezone.utc)))()
        if t < TIME_FLOOR:
            return HealthResult(False, f"the clock says {t:%Y-%m-%dT%H:%M:%SZ}, before {TIME_FLOOR:%Y-%m-%d}: "
                                       "the real-time clock was reset and time is not synchronised yet")
        if enabled and log_path.exists():
            log = EvidenceLog(log_path, create=False)
            try:
                cp = log.latest_checkpoint()
            finally:
                log.close()
            if cp is not None and cp.time and t < cp.datetime - CLOCK_BACK_TOLERANCE:
                return HealthResult(False, f"the clock says {t:%Y-%m-%dT%H:%M:%SZ}, before the evidence log's "
                                           f"last checkpoint ({cp.time}): it was stepped back")
        return HealthResult(True, f"{t:%Y-%m-%dT%H:%M:%SZ}")

    async def run() -> HealthResult:
        return await in_thread(_guarded(check))

    return HealthCheck("clock.sane", run)


def builtin_checks(loaded: Any, *, agent_port: int | None = None) -> list[HealthCheck]:
    """What every appliance needs, whatever plugins it runs. Not a plugin
    of its own: disabling plugins must not be a way to pass the gate."""
    cfg = loaded.config
    paths = loaded.ctx.paths
    http = cfg.agent.http
    dirs = {"state directory": paths.state_dir}
    if cfg.evidence.enabled:
        dirs["evidence directory"] = paths.evidence_dir
    return [
        agent_answers(http.listen, http.port if agent_port is None else agent_port, enabled=http.enabled,
                      cert=http.tls.cert if http.tls else None),
        state_database(paths.state_dir),
        evidence_log(paths.evidence_log, paths.key_dir, enabled=cfg.evidence.enabled),
        writable(dirs),
        clock_sane(paths.evidence_log, enabled=cfg.evidence.enabled),
    ]


# -- the gate ---------------------------------------------------------------------------------------


class Gate:
    """Collect the checks, run them all at once with one deadline, decide.

    ``results`` fills in as checks finish; the watchdog reads it (under
    ``_lock``) when the loop is stuck, so a hard cut reports what did run.
    """

    def __init__(self, loaded: Any, *, timeout: float = DEFAULT_TIMEOUT, agent_port: int | None = None,
                 boot_id: str | None = None):
        self.loaded = loaded
        self.timeout = timeout
        self.agent_port = agent_port
        self.boot_id = boot_id
        self._lock = threading.Lock()
        self._done: dict[int, Result] = {}
        self._checks: list[tuple[str, HealthCheck]] = []
        self._calling: str | None = None  # the plugin whose hook is being called
        self.cut = False  # a check was cut at the deadline (its thread may still run)

    # -- collecting

    def collect(self) -> list[Result]:
        """Built-in checks, then each plugin's; returns failures of the
        collection itself (a hook that raised or returned junk)."""
        failures: list[Result] = []
        checks = [(CORE, c) for c in builtin_checks(self.loaded, agent_port=self.agent_port)]
        pm = self.loaded.pm
        for impl in pm.impls("osiris_health_checks"):
            plugin = impl.plugin_name
            where = f"{plugin}: osiris_health_checks"
            with self._lock:
                self._calling = plugin
            started = time.perf_counter()
            try:
                got = impl.function(**{a: self.loaded.ctx for a in impl.argnames})
            except Exception as exc:  # noqa: BLE001 - a plugin's bug fails the gate, named
                failures.append(Result(where, plugin, False, f"the hook raised {type(exc).__name__}: {exc}",
                                       _ms(started)))
                continue
            finally:
                with self._lock:
                    self._calling = None
            for item in (got if isinstance(got, (list, tuple)) else [] if got is None else [got]):
                if not isinstance(item, HealthCheck) or not callable(item.run):
                    failures.append(Result(where, plugin, False,
                                           f"returned {type(item).__name__}, expected HealthCheck"))
                else:
                    checks.append((plugin, item))
        seen: set[str] = set()
        for plugin, c in checks:
            if c.name in seen:
                failures.append(Result(c.name, plugin, False, "a second health check with this name"))
            seen.add(c.name)
        self._checks = checks
        return failures

    # -- running

    async def _one(self, i: int, plugin: str, check: HealthCheck, deadline: float) -> None:
        started = time.perf_counter()
        try:
            res = await asyncio.wait_for(_awaitable(check.run), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            self.cut = True
            out = Result(check.name, plugin, False, f"did not finish within {self.timeout:g} s: cut", _ms(started))
        except Exception as exc:  # noqa: BLE001 - a check's failure, named
            out = Result(check.name, plugin, False, f"{type(exc).__name__}: {exc}", _ms(started))
        else:
            if isinstance(res, HealthResult):
                out = Result(check.name, plugin, bool(res.ok), str(res.detail), _ms(started))
            else:
                out = Result(check.name, plugin, False,
                             f"returned {type(res).__name__}, expected HealthResult", _ms(started))
        with self._lock:
            self._done[i] = out

    async def _run_all(self, deadline: float) -> None:
        await asyncio.gather(*(self._one(i, p, c, deadline) for i, (p, c) in enumerate(self._checks)))

    def results(self, failures: list[Result], *, cut_after: float | None = None) -> list[Result]:
        """Every check's result in order; one without a result (the loop
        was stuck) fails as not finished."""
        with self._lock:
            out = list(failures)
            if self._calling is not None:
                out.append(Result(f"{self._calling}: osiris_health_checks", self._calling, False,
                                  f"the hook did not return within {cut_after:g} s: cut"))
            for i, (plugin, c) in enumerate(self._checks):
                r = self._done.get(i)
                out.append(r if r is not None else Result(
                    c.name, plugin, False, f"did not finish within {cut_after:g} s (the event loop was blocked): cut"))
        return out

    def verdict(self, results: list[Result]) -> Verdict:
        # Passed only if every collected check ran and passed, and the
        # built-in ones were among them.
        names = {r.name for r in results if r.plugin == CORE}
        builtin = {c.name for p, c in self._checks if p == CORE}
        passed = bool(results) and bool(builtin) and builtin <= names and all(r.ok for r in results)
        return Verdict(passed, results, __version__, image_version(), self.boot_id or boot_id(), boot_entry())

    def run(self, on_stuck: Callable[[Verdict], None]) -> Verdict:
        """Collect and run every check. If the process is still here
        :data:`WATCHDOG_GRACE` seconds after the deadline, ``on_stuck`` is
        called from a watchdog thread with the verdict so far (it must end
        the process)."""
        limit = self.timeout + WATCHDOG_GRACE
        finished = threading.Event()
        failures: list[Result] = []

        def watchdog() -> None:
            if not finished.wait(limit):
                on_stuck(self.verdict(self.results(failures, cut_after=self.timeout)))

        threading.Thread(target=watchdog, name="osiris-health-watchdog", daemon=True).start()
        deadline = time.monotonic() + self.timeout
        failures.extend(self.collect())
        asyncio.run(self._run_all(deadline))
        finished.set()
        return self.verdict(self.results(failures, cut_after=self.timeout))


async def _awaitable(run: Callable[[], Awaitable[HealthResult]]) -> Any:
    result = run()
    if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
        return await result
    return result  # a plain function: tolerated, its result checked like any


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


# -- the verdict as evidence and text ------------------------------------------------------------


def record(loaded: Any, verdict: Verdict) -> str | None:
    """Append the verdict to the evidence log (kind ``health_gate``) and
    sign a checkpoint covering it; returns the bundle id, or None when
    evidence is disabled. Raises EvidenceError when it cannot."""
    if not loaded.config.evidence.enabled:
        return None
    from .evidence.service import EvidenceService

    service = EvidenceService.open(loaded.ctx, loaded.config.evidence,
                                   plugins={n: i.version for n, i in loaded.pm.infos.items()})
    try:
        ref = service.record_now("health_gate", verdict.as_dict(), host=loaded.config.site.appliance)
        service.log.checkpoint(service.key)
    finally:
        service.log.close()
    return ref.bundle_id


def render(verdict: Verdict) -> str:
    width = max([len(r.name) for r in verdict.results] + [5])
    pwidth = max([len(r.plugin) for r in verdict.results] + [6])
    lines = [f"{'CHECK'.ljust(width)}  {'PLUGIN'.ljust(pwidth)}  RESULT  {'MS':>8}  DETAIL"]
    for r in verdict.results:
        lines.append(f"{r.name.ljust(width)}  {r.plugin.ljust(pwidth)}  {'pass' if r.ok else 'FAIL':6}  "
                     f"{r.duration_ms:8.1f}  {r.detail}")
    failed = [r.name for r in verdict.results if not r.ok]
    where = f"version {verdict.agent_version}"
    if verdict.image_version:
        where += f", image {verdict.image_version}"
    if verdict.boot_entry:
        where += f", entry {verdict.boot_entry}"
    where += f", boot {verdict.boot_id or 'unknown'}"
    if verdict.passed:
        lines.append(f"health gate: PASSED ({len(verdict.results)} checks; {where})")
    else:
        lines.append(f"health gate: FAILED ({', '.join(failed) or 'no checks ran'}; {where})")
    return "\n".join(lines)


def to_json(verdict: Verdict) -> str:
    return json.dumps({**verdict.as_dict(), "evidence": verdict.recorded, "notes": verdict.notes}, indent=2)
