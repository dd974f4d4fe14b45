"""The lab: emulated Windows hosts answering WS-Management over real HTTP(S).

One asyncio process serves a whole practice (the benchmark runs 200 hosts):
each host has its own HTTP (NTLM with message encryption) and HTTPS
(Basic or NTLM, certificate from the lab's test CA) listener on loopback,
its own state, shells and commands, its own latency and faults. The WinRS
resource (``windows/shell/cmd``) implements Create, Command, Send, Receive,
Signal and Delete, plus Get of the ``config`` resource, with the quotas and
faults Windows applies (see :mod:`.soap`).

Chaos and fault injection are methods of :class:`Lab` (safe to call from
any thread) and, for a lab in another process, an HTTP control API
(:mod:`.control`). Latency: ``request_latency`` delays every HTTP request,
``ps_start_latency`` every powershell.exe start.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
import socket
import struct
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from . import auth, emulation, pki, processes, soap
from .batch import ScriptRunner
from .state import ROLES, HostState

log = logging.getLogger("osiris_lab")

_PROCESS_PASSWORD = secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")
FAULT_KINDS = ("refused", "reset", "http500", "operation_timeout", "hang")
# WS-Man requests a fault can be limited to (the last segment of the request's Action URI).
FAULT_ACTIONS = ("Create", "Command", "Receive", "Send", "Signal", "Delete", "Get")
_TERMINATE = {soap.SIGNAL_TERMINATE.lower(), soap.SIGNAL_CTRL_C.lower(), soap.SIGNAL_CTRL_BREAK.lower()}

OS_BY_ROLE = {
    "dc": ("Microsoft Windows Server 2022 Standard", "10.0.20348", "5.1.20348.2849"),
    "server": ("Microsoft Windows Server 2019 Standard", "10.0.17763", "5.1.17763.6414"),
    "workstation": ("Microsoft Windows 11 Pro", "10.0.22631", "5.1.22621.4391"),
}


@dataclass(frozen=True)
class Quotas:
    """WinRM's limits (``winrm get winrm/config``), defaults as on Windows."""

    max_envelope_kb: int = 500
    max_timeout_ms: int = 60000
    max_shells_per_user: int = 30
    max_processes_per_shell: int = 25
    max_concurrent_operations_per_user: int = 1500
    idle_timeout_ms: int = 180000


@dataclass
class Fault:
    kind: str
    count: int | None = None  # requests it still affects; None: until cleared or expired
    until: float | None = None  # time.monotonic() deadline
    action: str | None = None  # only requests with this WS-Man action, after the host handled them

    def live(self, now: float) -> bool:
        return (self.count is None or self.count > 0) and (self.until is None or now < self.until)


@dataclass
class HostSpec:
    name: str
    role: str
    settings: Mapping[str, Any] = field(default_factory=dict)


class Command:
    def __init__(self, command_id: str, line: str):
        self.id = command_id
        self.line = line
        self.stdin = bytearray()
        self.stdin_done = asyncio.Event()
        self.out: list[tuple[str, bytes]] = []
        self.done = False
        self.exit_code: int | None = None
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def read_stdin(self) -> bytes:
        await self.stdin_done.wait()
        return bytes(self.stdin)

    def finish(self, outcome: processes.Outcome) -> None:
        if outcome.stdout:
            self.out.append(("stdout", outcome.stdout))
        if outcome.stderr:
            self.out.append(("stderr", outcome.stderr))
        self.exit_code, self.done = outcome.exit_code, True
        self.wake.set()


@dataclass
class Shell:
    id: str
    owner: str
    codepage: int
    env: dict[str, str]
    input_streams: str
    output_streams: str
    last_used: float
    commands: dict[str, Command] = field(default_factory=dict)


class LabHost:
    """One emulated Windows machine."""

    def __init__(self, lab: Lab, spec: HostSpec):
        self.lab = lab
        self.name = spec.name
        self.role = spec.role
        self.state = HostState(spec.name, spec.role, spec.settings)
        self.os_caption, self.os_version, self.ps_version = OS_BY_ROLE[spec.role]
        self.request_latency: float | None = None  # None: the lab's
        self.ps_start_latency: float | None = None
        self.allow_unencrypted = False  # AllowUnencrypted (Basic or plain NTLM over HTTP)
        self.basic_auth = True
        self.http_port = 0
        self.https_port = 0
        self.faults: list[Fault] = []
        self.unit_delays_ms: dict[str, float] = {}
        self.unit_errors: set[str] = set()
        self.shells: dict[str, Shell] = {}
        self.operations: dict[str, int] = {}
        self.requests = 0
        self.encrypted_requests = 0  # bodies that arrived as NTLM-sealed multipart/encrypted
        self.commands_run = 0
        # Every runbook unit that reached this host, in order, as it started:
        # what a test compares with the appliance's evidence.
        self.runbooks_run: list[str] = []
        self.runbooks_ended = 0  # of those, how many have finished (or failed)
        self._sites: list[web.TCPSite] = []
        # While the host refuses connections: its ports, bound but not
        # listening, so that nothing else can take them before it listens again.
        self._holds: list[socket.socket] = []
        self._transports: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()

    # -- what the client connects to ------------------------------------------------

    def endpoint(self, scheme: str = "https") -> str:
        port = self.https_port if scheme == "https" else self.http_port
        return f"{scheme}://{self.lab.bind}:{port}/wsman"

    def target(self, transport: str = "https") -> dict[str, Any]:
        """This host as an entry of the agent config's ``targets``."""
        opts: dict[str, Any] = {"transport": transport}
        if transport == "https":
            opts.update(port=self.https_port, ca_file=str(self.lab.ca_file))
        else:
            opts["port"] = self.http_port
            if transport == "basic":
                opts["allow_insecure_basic_for_lab"] = True
        return {"name": self.name, "kind": "windows", "role": self.role, "address": self.lab.bind,
                "credential": self.lab.credential_name, "options": opts}

    # -- chaos ------------------------------------------------------------------------

    def unit_cost(self, unit_id: str, default_ms: float) -> float:
        return self.unit_delays_ms.get(unit_id, default_ms)

    def unit_throws(self, unit_id: str) -> bool:
        return unit_id in self.unit_errors

    def take_fault(self, kinds: Iterable[str], action: str | None = None) -> str | None:
        """The first live fault of one of ``kinds`` for this request (one
        use of its count): faults without an action when ``action`` is None,
        else the faults limited to that WS-Man action."""
        now = time.monotonic()
        with self._lock:
            self.faults = [f for f in self.faults if f.live(now)]
            for f in self.faults:
                if f.kind in kinds and f.action == action:
                    if f.count is not None:
                        f.count -= 1
                    return f.kind
        return None

    def refused(self) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(f.kind == "refused" and f.live(now) for f in self.faults)


class _LostReply(Exception):
    """The host handled the request; its reply is lost (a fault limited to an action)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


class Lab:
    """A practice of emulated Windows hosts. Use :meth:`start`/:meth:`stop`
    in an event loop, or :meth:`running` to serve it from a background
    thread (what tests with blocking clients do)."""

    def __init__(
        self,
        hosts: int | Sequence[HostSpec | tuple[str, str]] = 3,
        *,
        ps_start_latency: float = 0.0,
        request_latency: float = 0.0,
        workdir: str | Path | None = None,
        username: str = "osiris",
        password: str | None = None,
        domain: str = "LAB",
        quotas: Quotas | None = None,
        bind: str = "127.0.0.1",
        credential_name: str = "lab-winrm",
    ):
        emulation.load()
        self.bind = bind
        self.ps_start_latency = ps_start_latency
        self.request_latency = request_latency
        self.quotas = quotas or Quotas()
        self.username, self.domain = username, domain
        # Labs in one process share a default password: the NTLM acceptor
        # knows one password per user name (see auth.register_ntlm_user).
        self.password = password or _PROCESS_PASSWORD
        self.credential_name = credential_name
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="osiris-lab-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        specs = practice(hosts) if isinstance(hosts, int) else [h if isinstance(h, HostSpec) else HostSpec(*h) for h in hosts]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"lab: host names must be unique, got {names}")
        self.hosts: dict[str, LabHost] = {s.name: LabHost(self, s) for s in specs}
        self.pki = pki.create(self.workdir / "pki")
        self.ca_file = self.pki.ca_file
        self.credential_file = self.workdir / credential_name
        self.credential_file.touch(mode=0o600)
        self.credential_file.write_text(f"{self.username}:{self.password}\n")
        auth.register_ntlm_user(domain, username, self.password)
        self._ssl = self.pki.server_context()
        self._cbt = self.pki.channel_binding_hash()
        self._ports: dict[int, tuple[LabHost, str]] = {}
        self._conns: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._reaper: asyncio.Task | None = None
        self.control_port = 0
        self._control: web.AppRunner | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, control: bool = False) -> Lab:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/wsman", self._handle)
        app.router.add_post("/wsman/", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        for host in self.hosts.values():
            await self._listen(host)
        self._reaper = asyncio.create_task(self._reap_idle_shells(), name="osiris-lab-reaper")
        if control:
            from .control import control_app

            self._control = web.AppRunner(control_app(self), access_log=None, handle_signals=False,
                                          shutdown_timeout=0.5)
            await self._control.setup()
            site = web.TCPSite(self._control, self.bind, 0)
            await site.start()
            self.control_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._reaper is not None:
            self._reaper.cancel()
        for host in self.hosts.values():
            for shell in host.shells.values():
                for cmd in shell.commands.values():
                    if cmd.task is not None:
                        cmd.task.cancel()
            host.shells.clear()
            _release(host)
        for runner in (self._control, self._runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._control = None

    async def _listen(self, host: LabHost) -> None:
        assert self._runner is not None
        host._sites = []
        for scheme in ("http", "https"):
            port = host.http_port if scheme == "http" else host.https_port
            site = web.TCPSite(self._runner, self.bind, port, ssl_context=self._ssl if scheme == "https" else None,
                               backlog=256)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            if scheme == "http":
                host.http_port = port
            else:
                host.https_port = port
            self._ports[port] = (host, scheme)
            host._sites.append(site)
        _release(host)  # listening again on the ports it held

    def _unlisten(self, host: LabHost) -> None:
        """Connection refused from now on: close the listeners and drop
        established connections. Each port stays bound (not listening, so a
        connection is refused) until :meth:`_listen` takes it back: a port
        let go would be the kernel's to hand out again, to another
        listener or as the local port of an outgoing connection (even one
        to this very port, which then connects to itself)."""
        for site in host._sites:
            server = site._server
            if server is not None:
                addrs = [(sock.family, sock.getsockname()) for sock in server.sockets or ()]
                server.close()
                for family, addr in addrs:
                    try:
                        host._holds.append(_hold(family, addr))
                    except OSError as exc:  # taken in the instant it was free: listening again will say so
                        log.warning("lab: %s: cannot hold port %s while refusing: %s", host.name, addr[1], exc)
        host._sites = []
        for tr in list(host._transports):
            tr.abort()

    @contextlib.contextmanager
    def running(self, control: bool = False) -> Iterator[Lab]:
        """Serve the lab from a background thread for the duration of the block."""
        ready = threading.Event()
        box: dict[str, Any] = {}

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start(control=control))
            except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                box["error"] = exc
                ready.set()
                return
            box["loop"] = loop
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=main, name="osiris-lab", daemon=True)
        thread.start()
        ready.wait()
        if "error" in box:
            raise box["error"]
        try:
            yield self
        finally:
            box["loop"].call_soon_threadsafe(box["loop"].stop)
            thread.join(timeout=10)

    def _in_loop(self, fn, *args) -> None:
        """Run ``fn`` on the lab's loop; wait for it when called from another thread."""
        loop = self._loop
        if loop is None or not loop.is_running():
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result.close()  # not serving: the listeners are made at start()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                loop.create_task(result)
            return

        async def call() -> None:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                await result

        asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    # -- the practice ---------------------------------------------------------------------

    def host(self, name: str) -> LabHost:
        try:
            return self.hosts[name]
        except KeyError:
            raise KeyError(f"lab: no host {name!r} (hosts: {', '.join(self.hosts)})") from None

    def targets(self, transport: str = "https") -> list[dict[str, Any]]:
        return [h.target(transport) for h in self.hosts.values()]

    def summary(self) -> dict[str, Any]:
        return {
            "hosts": [{"name": h.name, "role": h.role, "os": h.os_caption, "https": h.endpoint("https"),
                       "http": h.endpoint("http")} for h in self.hosts.values()],
            "ca_file": str(self.ca_file),
            "username": f"{self.domain}\\{self.username}",
            "password": self.password,
            "credential_file": str(self.credential_file),
            "control": f"http://{self.bind}:{self.control_port}" if self.control_port else None,
        }

    # -- chaos API (thread-safe) -------------------------------------------------------------

    def break_setting(self, host: str, path: str) -> Any:
        """Drift: set ``path`` on ``host`` to its declared broken value."""
        return self.host(host).state.break_(path)

    def set_setting(self, host: str, path: str, value: Any) -> None:
        self.host(host).state.set(path, value)

    def restore(self, host: str, path: str | None = None) -> None:
        self.host(host).state.restore(path)

    def inject_fault(self, host: str, kind: str, *, count: int | None = None, duration: float | None = None,
                     action: str | None = None) -> None:
        """Make ``host`` misbehave: ``refused`` (nothing listens), ``reset``
        (TCP reset on each request), ``http500`` (bare HTTP 500),
        ``operation_timeout`` (the WS-Man OperationTimeout fault), ``hang``
        (never answers). ``count`` limits it to that many requests (not for
        ``refused``), ``duration`` to that many seconds.

        ``action`` (one of :data:`FAULT_ACTIONS`, e.g. ``"Command"``) limits
        the fault to requests with that WS-Man action, and ``reset``,
        ``http500`` and ``hang`` then strike *after* the host handled the
        request: it took effect (a Command started its process) but the reply
        is lost, the case where a client cannot tell. ``operation_timeout``
        is answered instead of handling the request. Not for ``refused``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        if count is not None and (not isinstance(count, int) or kind == "refused" or count < 1):
            raise ValueError("count: a positive number of requests, and not for 'refused' (use duration)")
        if action is not None:
            if kind == "refused":
                raise ValueError("action: not for 'refused' (nothing listens, there is no request)")
            match = [a for a in FAULT_ACTIONS if isinstance(action, str) and a.lower() == action.lower()]
            if not match:
                raise ValueError(f"action {action!r}: expected one of {', '.join(FAULT_ACTIONS)}")
            action = match[0]
        h = self.host(host)
        until = time.monotonic() + duration if duration is not None else None
        with h._lock:
            h.faults.append(Fault(kind, count, until, action))
        if kind == "refused":
            self._in_loop(self._refuse, h, duration)

    def _refuse(self, h: LabHost, duration: float | None) -> None:
        self._unlisten(h)
        if duration is not None and self._loop is not None:
            self._loop.call_later(duration, lambda: asyncio.ensure_future(self._relisten_if_clear(h)))

    async def _relisten_if_clear(self, h: LabHost) -> None:
        if not h.refused() and not h._sites:
            await self._listen(h)

    def clear_faults(self, host: str) -> None:
        h = self.host(host)
        with h._lock:
            was_refused = any(f.kind == "refused" for f in h.faults)
            h.faults.clear()
        if was_refused:
            self._in_loop(self._relisten_if_clear, h)

    def set_latency(self, host: str | None = None, *, request: float | None = None,
                    ps_start: float | None = None) -> None:
        """Latency of every HTTP request and of each powershell.exe start,
        for one host or (``host=None``) the whole lab."""
        targets = [self.host(host)] if host else list(self.hosts.values())
        for h in targets:
            if request is not None:
                h.request_latency = request
            if ps_start is not None:
                h.ps_start_latency = ps_start

    def reset(self) -> None:
        """Every host back to its healthy self: state at the role defaults,
        no faults, the lab's latencies, no slow or throwing units."""
        for name, h in self.hosts.items():
            self.clear_faults(name)
            h.state.restore()
            h.request_latency = h.ps_start_latency = None
            h.allow_unencrypted = False
            h.unit_delays_ms.clear()
            h.unit_errors.clear()

    def slow_unit(self, host: str, unit_id: str, ms: float) -> None:
        """Make one check or runbook take ``ms`` on ``host`` (to exceed its budget)."""
        self.host(host).unit_delays_ms[unit_id] = ms

    def fail_unit(self, host: str, unit_id: str, fail: bool = True) -> None:
        """Make one check or runbook throw on ``host``."""
        (self.host(host).unit_errors.add if fail else self.host(host).unit_errors.discard)(unit_id)

    # -- HTTP -------------------------------------------------------------------------------

    async def _reap_idle_shells(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            limit = time.monotonic() - self.quotas.idle_timeout_ms / 1000.0
            for host in self.hosts.values():
                for sid in [s.id for s in host.shells.values() if s.last_used < limit]:
                    self._delete_shell(host, sid)

    def _conn(self, request: web.Request) -> auth.Connection:
        tr = request.transport
        conn = self._conns.get(tr)
        if conn is None:
            conn = self._conns[tr] = auth.Connection()
        return conn

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        tr = request.transport
        sock = tr.get_extra_info("sockname") if tr is not None else None
        entry = self._ports.get(sock[1]) if sock else None
        if entry is None or tr is None:
            return web.Response(status=404)
        host, scheme = entry
        host._transports.add(tr)
        host.requests += 1
        fault = host.take_fault(("reset", "hang", "http500"))
        if fault is not None:
            return await self._misbehave(fault, tr)
        latency = host.request_latency if host.request_latency is not None else self.request_latency
        if latency:
            await asyncio.sleep(latency)
        body = await request.read()
        limit = self.quotas.max_envelope_kb * 1024
        if len(body) > limit + 4096:  # encryption framing on top of the envelope
            return web.Response(status=413, headers={"Server": "Microsoft-HTTPAPI/2.0"})
        conn = self._conn(request)
        try:
            user, final_token = self._authenticate(request, host, scheme, conn)
        except auth.AuthFailed as exc:
            return self._unauthorized(host, scheme, exc.challenge)
        encrypted = request.headers.get("Content-Type", "").startswith("multipart/encrypted")
        try:
            if encrypted:
                body = auth.unwrap(conn, body)
                host.encrypted_requests += 1
            elif body and scheme == "http" and not host.allow_unencrypted:
                return self._unauthorized(host, scheme, None)
        except auth.AuthFailed as exc:
            return self._unauthorized(host, scheme, exc.challenge)
        except ValueError:
            return web.Response(status=400)
        if len(body) > limit:
            return web.Response(status=413, headers={"Server": "Microsoft-HTTPAPI/2.0"})
        headers = {"Server": "Microsoft-HTTPAPI/2.0"}
        if final_token:
            headers["WWW-Authenticate"] = "Negotiate " + base64.b64encode(final_token).decode()
        if not body:  # the empty POST that sets up an encrypted session
            return web.Response(status=200, headers=headers)
        try:
            status, payload = await self._soap(host, scheme, user, body, request)
        except _LostReply as lost:
            return await self._misbehave(lost.kind, tr)
        if encrypted:
            headers["Content-Type"] = auth.CONTENT_TYPE
            return web.Response(status=status, body=auth.wrap(conn, payload), headers=headers)
        headers["Content-Type"] = "application/soap+xml;charset=UTF-8"
        return web.Response(status=status, body=payload, headers=headers)

    async def _misbehave(self, fault: str, tr: asyncio.BaseTransport) -> web.Response:
        """Answer a request with a reset, a hang or a bare HTTP 500."""
        if fault == "reset":
            raw = tr.get_extra_info("socket")
            if raw is not None:
                with contextlib.suppress(OSError):
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            tr.abort()
            return web.Response(status=500)
        if fault == "hang":
            assert self._stopping is not None
            await self._stopping.wait()
            tr.abort()
            return web.Response(status=500)
        return web.Response(status=500, body=b"", headers={"Server": "Microsoft-HTTPAPI/2.0"})

    def _authenticate(self, request: web.Request, host: LabHost, scheme: str,
                      conn: auth.Connection) -> tuple[str, bytes | None]:
        header = request.headers.get("Authorization", "")
        kind = header.split(" ", 1)[0].lower()
        if kind == "basic":
            if not host.basic_auth or (scheme == "http" and not host.allow_unencrypted):
                raise auth.AuthFailed("Basic is not allowed here")
            creds = auth.basic_credentials(header)
            if creds is None or not self._valid(*creds):
                raise auth.AuthFailed("bad Basic credentials")
            return creds[0], None
        if kind in ("negotiate", "kerberos"):
            final = auth.negotiate_step(conn, header, self._cbt if scheme == "https" else None)
            return conn.user or "?", final
        if conn.user is not None:
            return conn.user, None
        raise auth.AuthFailed("no credentials")

    def _valid(self, name: str, password: str) -> bool:
        domain, user = auth.split_user(name)
        return (user.lower() == self.username.lower() and domain.upper() in ("", ".", self.domain.upper())
                and secrets.compare_digest(password, self.password))

    def _unauthorized(self, host: LabHost, scheme: str, challenge: bytes | None) -> web.Response:
        resp = web.Response(status=401, headers={"Server": "Microsoft-HTTPAPI/2.0"})
        if challenge:
            resp.headers.add("WWW-Authenticate", "Negotiate " + base64.b64encode(challenge).decode())
        else:
            resp.headers.add("WWW-Authenticate", "Negotiate")
            if host.basic_auth and (scheme == "https" or host.allow_unencrypted):
                resp.headers.add("WWW-Authenticate", 'Basic realm="WSMAN"')
        return resp

    # -- WS-Management ---------------------------------------------------------------------------

    async def _soap(self, host: LabHost, scheme: str, user: str, body: bytes,
                    request: web.Request) -> tuple[int, bytes]:
        machine = host.name.upper()
        try:
            req = soap.parse_request(body)
        except soap.SoapError as exc:
            return 500, soap.invalid_request(machine, str(exc)).render("")
        owner = auth.split_user(user)[1].lower()  # LAB\osiris, osiris@lab and osiris are one user
        action = req.action.rsplit("/", 1)[-1]
        try:
            if host.take_fault(("operation_timeout",)) or host.take_fault(("operation_timeout",), action):
                raise soap.operation_timeout(machine)
            ops = host.operations.get(owner, 0)
            if ops >= self.quotas.max_concurrent_operations_per_user:
                raise soap.operations_per_user(machine, self.quotas.max_concurrent_operations_per_user)
            host.operations[owner] = ops + 1
            try:
                status, payload = 200, await self._dispatch(host, scheme, owner, req, request)
            finally:
                host.operations[owner] -= 1
        except soap.WSManFault as fault:
            status, payload = 500, fault.render(req.message_id)
        lost = host.take_fault(("reset", "hang", "http500"), action)
        if lost is not None:
            raise _LostReply(lost)  # handled, but the client never hears of it
        return status, payload

    async def _dispatch(self, host: LabHost, scheme: str, owner: str, req: soap.Request,
                        request: web.Request) -> bytes:
        machine = host.name.upper()
        action = req.action
        if action == soap.ACTION_GET and req.resource_uri.rstrip("/") == soap.CONFIG_URI:
            return soap.config_response(req.message_id, self._config(host))
        if req.resource_uri != soap.SHELL_CMD_URI:
            raise soap.WSManFault("s:Sender", "w:DestinationUnreachable",
                                  f"The WS-Management service cannot process the request because the resource URI "
                                  f"{req.resource_uri} is not supported. ", 2150858770, machine)
        if action == soap.ACTION_CREATE:
            return self._create(host, scheme, owner, req, request)
        shell = self._shell(host, req, owner)
        shell.last_used = time.monotonic()
        if action == soap.ACTION_DELETE:
            self._delete_shell(host, shell.id)
            return soap.delete_response(req.message_id)
        if action == soap.ACTION_COMMAND:
            return self._command(host, shell, owner, req)
        if action == soap.ACTION_SEND:
            return self._send(host, shell, req)
        if action == soap.ACTION_RECEIVE:
            return await self._receive(host, shell, req)
        if action == soap.ACTION_SIGNAL:
            return self._signal(host, shell, req)
        raise soap.action_not_supported(machine, action)

    def _config(self, host: LabHost) -> dict[str, Any]:
        q = self.quotas
        return {
            "MaxEnvelopeSizekb": q.max_envelope_kb, "MaxTimeoutms": q.max_timeout_ms, "MaxBatchItems": 32000,
            "MaxProviderRequests": 4294967295,
            "Service": {"MaxConcurrentOperations": 4294967295,
                        "MaxConcurrentOperationsPerUser": q.max_concurrent_operations_per_user,
                        "EnumerationTimeoutms": 240000, "MaxConnections": 300,
                        "AllowUnencrypted": str(host.allow_unencrypted).lower()},
            "Winrs": {"AllowRemoteShellAccess": "true", "IdleTimeout": q.idle_timeout_ms,
                      "MaxConcurrentUsers": 2147483647, "MaxShellRunTime": 2147483647,
                      "MaxProcessesPerShell": q.max_processes_per_shell, "MaxMemoryPerShellMB": 2147483647,
                      "MaxShellsPerUser": q.max_shells_per_user},
        }

    def _shell(self, host: LabHost, req: soap.Request, owner: str) -> Shell:
        sid = req.selectors.get("ShellId", "")
        shell = host.shells.get(sid.upper())
        if shell is None or shell.owner != owner:
            raise soap.shell_not_found(host.name.upper(), sid)
        return shell

    def _create(self, host: LabHost, scheme: str, owner: str, req: soap.Request, request: web.Request) -> bytes:
        machine = host.name.upper()
        if sum(1 for s in host.shells.values() if s.owner == owner) >= self.quotas.max_shells_per_user:
            raise soap.shells_per_user(machine, self.quotas.max_shells_per_user)
        el = req.find("rsp:Shell")
        if el is None:
            raise soap.invalid_request(machine, "Create has no rsp:Shell")
        env = {v.get("Name", ""): v.text or "" for v in el.findall("rsp:Environment/rsp:Variable", soap.NS)}
        for name, value in env.items():
            if not name or len(name) + len(value) + 2 > processes.ENV_VAR_MAX:
                raise soap.invalid_parameter(machine)
        istreams = (el.findtext("rsp:InputStreams", "", soap.NS) or "stdin").strip()
        ostreams = (el.findtext("rsp:OutputStreams", "", soap.NS) or "stdout stderr").strip()
        codepage = req.options.get("WINRS_CODEPAGE", "437").strip()
        sid = str(uuid.uuid4()).upper()
        host.shells[sid] = Shell(sid, owner, int(codepage) if codepage.isdigit() else 437, env, istreams, ostreams,
                                 time.monotonic())
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return soap.create_response(req.message_id, host.endpoint(scheme), sid, owner, peer[0] if peer else "",
                                    self.quotas.idle_timeout_ms / 1000.0, istreams, ostreams)

    def _delete_shell(self, host: LabHost, shell_id: str) -> None:
        shell = host.shells.pop(shell_id, None)
        if shell is not None:
            for cmd in shell.commands.values():
                if cmd.task is not None:
                    cmd.task.cancel()

    def _command(self, host: LabHost, shell: Shell, owner: str, req: soap.Request) -> bytes:
        machine = host.name.upper()
        if len(shell.commands) >= self.quotas.max_processes_per_shell:
            raise soap.processes_per_shell(machine, self.quotas.max_processes_per_shell)
        cl = req.find("rsp:CommandLine")
        if cl is None:
            raise soap.invalid_request(machine, "Command has no rsp:CommandLine")
        command = (cl.findtext("rsp:Command", "", soap.NS) or "").strip()
        arguments = [a.text or "" for a in cl.findall("rsp:Arguments", soap.NS)]
        line = processes.join_command(command, arguments)
        skip = req.options.get("WINRS_SKIP_CMD_SHELL", "FALSE").strip().upper() == "TRUE"
        if len(line) >= processes.CREATE_PROCESS_MAX_LINE:
            raise soap.filename_too_long(machine)
        cid = (cl.get("CommandId") or str(uuid.uuid4())).upper()
        cmd = Command(cid, line)
        shell.commands[cid] = cmd
        host.commands_run += 1
        latency = host.ps_start_latency if host.ps_start_latency is not None else self.ps_start_latency
        ctx = processes.ProcessContext(host.name.upper(), f"{self.domain}\\{owner}", dict(shell.env), cmd.read_stdin,
                                       latency, ScriptRunner(host))

        async def run() -> None:
            try:
                outcome = await processes.run(line, skip, ctx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lab bug shows as a failed process, not a hung one
                log.exception("lab process failed on %s", host.name)
                outcome = processes.Outcome(stderr=f"osiris-lab: {type(exc).__name__}: {exc}\r\n".encode(),
                                            exit_code=1)
            cmd.finish(outcome)

        cmd.task = asyncio.create_task(run(), name=f"lab:{host.name}:{cid}")
        return soap.command_response(req.message_id, cid)

    def _send(self, host: LabHost, shell: Shell, req: soap.Request) -> bytes:
        machine = host.name.upper()
        for stream in req.findall("rsp:Send/rsp:Stream"):
            cid = (stream.get("CommandId") or "").upper()
            cmd = shell.commands.get(cid)
            if cmd is None:
                raise soap.invalid_request(machine, f"no command {cid} in shell {shell.id}")
            if stream.get("Name", "stdin") != "stdin":
                raise soap.invalid_request(machine, f"stream {stream.get('Name')!r} is not an input stream")
            if cmd.stdin_done.is_set():
                raise soap.WSManFault("s:Sender", "w:InvalidParameter",
                                      "The Windows Remote Shell received a request to send input after the end of "
                                      "the input stream. ", 2150858881, machine)
            try:
                cmd.stdin += base64.b64decode(stream.text or "", validate=True)
            except binascii.Error:
                raise soap.invalid_request(machine, "stdin stream is not base64") from None
            if (stream.get("End") or "").strip().lower() in ("true", "1"):
                cmd.stdin_done.set()
        return soap.send_response(req.message_id)

    async def _receive(self, host: LabHost, shell: Shell, req: soap.Request) -> bytes:
        machine = host.name.upper()
        ds = req.find("rsp:Receive/rsp:DesiredStream")
        cid = ((ds.get("CommandId") if ds is not None else None) or "").upper()
        cmd = shell.commands.get(cid)
        if cmd is None:
            raise soap.invalid_request(machine, f"no command {cid} in shell {shell.id}")
        wait = min(req.operation_timeout or 60.0, self.quotas.max_timeout_ms / 1000.0)
        if not cmd.out and not cmd.done:
            cmd.wake.clear()
            try:
                await asyncio.wait_for(cmd.wake.wait(), wait)
            except asyncio.TimeoutError:
                raise soap.operation_timeout(machine) from None
        max_env = min(req.max_envelope_size or self.quotas.max_envelope_kb * 1024, self.quotas.max_envelope_kb * 1024)
        budget = max(1024, (max_env - 2048) * 3 // 4)
        chunks: list[tuple[str, str]] = []
        while cmd.out and budget > 0:
            name, data = cmd.out[0]
            piece, rest = data[:budget], data[budget:]
            chunks.append((name, base64.b64encode(piece).decode("ascii")))
            budget -= len(piece)
            if rest:
                cmd.out[0] = (name, rest)
            else:
                cmd.out.pop(0)
        done = cmd.done and not cmd.out
        return soap.receive_response(req.message_id, cmd.id, chunks, done, cmd.exit_code if done else None)

    def _signal(self, host: LabHost, shell: Shell, req: soap.Request) -> bytes:
        machine = host.name.upper()
        sig = req.find("rsp:Signal")
        cid = ((sig.get("CommandId") if sig is not None else None) or "").upper()
        code = ((sig.findtext("rsp:Code", "", soap.NS) if sig is not None else "") or "").strip()
        cmd = shell.commands.get(cid)
        if cmd is None:
            raise soap.invalid_request(machine, f"no command {cid} in shell {shell.id}")
        if code.lower() not in _TERMINATE:
            raise soap.WSManFault("s:Sender", "w:InvalidParameter",
                                  f"The Windows Remote Shell received an unknown signal code {code}. ",
                                  2150858882, machine)
        if cmd.task is not None and not cmd.task.done():
            cmd.task.cancel()
        if code.lower() == soap.SIGNAL_TERMINATE.lower():
            shell.commands.pop(cid, None)
        return soap.signal_response(req.message_id)


def _hold(family: int, addr: Any) -> socket.socket:
    """A socket bound to ``addr`` and not listening: connections to it are
    refused, and the port is not free for anyone else."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener had it: TIME_WAIT is no obstacle
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


def _release(host: LabHost) -> None:
    for sock in host._holds:
        sock.close()
    host._holds = []


def practice(n: int) -> list[HostSpec]:
    """A small practice's estate: one domain controller, about one server
    in ten, workstations for the rest (``--hosts 3``: dc01, srv01, ws01)."""
    if n < 1:
        raise ValueError("a practice has at least one host")
    servers = 0 if n == 1 else max(1, (n - 1) // 10)
    ws = n - 1 - servers
    width = max(2, len(str(max(servers, ws))))
    specs = [HostSpec("dc01", "dc")]
    specs += [HostSpec(f"srv{i:0{width}d}", "server") for i in range(1, servers + 1)]
    specs += [HostSpec(f"ws{i:0{width}d}", "workstation") for i in range(1, ws + 1)]
    return specs


__all__ = ["Lab", "LabHost", "HostSpec", "Quotas", "Fault", "FAULT_KINDS", "FAULT_ACTIONS", "ROLES", "practice"]
