"""One WinRS round trip with pywinrm: Create (with the batch in the shell's
environment), Command, Receive until Done, Delete.

Blocking: the executor runs it in the agent's thread pool. Every failure
becomes :class:`Transient` (worth retrying: connection refused or reset,
HTTP 5xx without a WS-Man fault, the WS-Man operation-timeout fault
2150858793 outside Receive, a shell quota) or :class:`Failed` (not:
bad certificate, rejected credentials, a timeout, other faults), with a
message that is safe to record: it never carries the password, which only
pywinrm's transport holds.

Signal is sent only to stop a command that overran its deadline: once a
command is Done, deleting the shell releases it, and skipping the Signal
saves a request per host (each costs the agent about as much CPU as the
TLS handshake's remainder, see bench/sweep).
"""

from __future__ import annotations

import errno
import os
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import winrm
from requests.adapters import HTTPAdapter
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)

from .settings import Credentials, Settings, TargetOptions

OPERATION_TIMEOUT_FAULT = 2150858793
# Shell and operation quotas: the host is busy; a later attempt may pass.
QUOTA_FAULTS = {2150859173, 2150859174}


class Transient(Exception):
    """A failure worth retrying."""


class Failed(Exception):
    """A failure that retrying will not fix."""


@dataclass(frozen=True)
class Output:
    stdout: bytes
    stderr: bytes
    exit_code: int


def _transport(opts: TargetOptions) -> tuple[str, str]:
    """pywinrm's (transport, message_encryption) for our options."""
    if opts.problems():
        raise Failed("; ".join(f"options.{k}: expected {v}" for k, v in opts.problems()))
    if opts.transport == "https":
        return ("ssl" if opts.auth == "basic" else "ntlm"), "auto"
    if opts.transport == "ntlm":
        return "ntlm", "always"
    return "basic", "never"


def _connection_error(exc: requests.exceptions.ConnectionError) -> str:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH,
                                                  errno.ENETUNREACH):
            return {errno.ECONNREFUSED: "connection refused", errno.ECONNRESET: "connection reset by the host",
                    errno.EHOSTUNREACH: "host unreachable", errno.ENETUNREACH: "network unreachable"}[e.errno]
        text = str(e)
        if "Connection refused" in text:
            return "connection refused"
        if "reset" in text.lower() or "RemoteDisconnected" in text or "aborted" in text.lower():
            return "connection reset by the host"
        e = e.__cause__ or e.__context__ or (e.args[0] if e.args and isinstance(e.args[0], BaseException) else None)
    return f"connection failed ({type(exc).__name__})"


def read_timeout(operation_timeout: float) -> int:
    """HTTP read timeout: longer than the OperationTimeout a host may hold a
    request for, short enough to notice a host that stopped answering."""
    return int(operation_timeout * 1.5 + 1.5)


def _system_ca_file() -> str | None:
    """The system trust store (not requests' environment variables, so that
    every request of a round trip trusts the same CAs)."""
    return ssl.get_default_verify_paths().cafile


_CONTEXTS: dict[tuple[str, int, int], ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def verifying_context(ca_file: str) -> ssl.SSLContext:
    """A client SSLContext that trusts ``ca_file`` and checks the host name,
    shared by every connection that trusts the same file. Building one and
    loading the bundle costs more CPU than the TLS handshake itself, and
    urllib3 would do it for every connection: once per host per sweep. The
    file's mtime and size are part of the key, so a renewed bundle is read
    again."""
    st = os.stat(ca_file)
    key = (ca_file, st.st_mtime_ns, st.st_size)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        ctx = ssl.create_default_context(cafile=ca_file)  # CERT_REQUIRED, check_hostname, TLS >= 1.2
        with _CONTEXTS_LOCK:
            for old in [k for k in _CONTEXTS if k[0] == ca_file]:
                del _CONTEXTS[old]
            ctx = _CONTEXTS.setdefault(key, ctx)
    return ctx


class _VerifyingAdapter(HTTPAdapter):
    """requests' adapter with our shared SSLContext instead of a CA path
    (which makes urllib3 build a context and load the bundle per
    connection). Verification stays on: the context requires a certificate
    chaining to the CA and a name matching the address."""

    def __init__(self, context: ssl.SSLContext):
        self._context = context
        super().__init__()

    def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, True, cert)
        pool_kwargs.pop("ca_certs", None)
        pool_kwargs.pop("ca_cert_dir", None)
        pool_kwargs.update(cert_reqs="CERT_REQUIRED", ssl_context=self._context)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = conn.ca_cert_dir = None


class Session:
    """pywinrm's Protocol for one target, with our timeouts."""

    def __init__(self, endpoint: str, opts: TargetOptions, creds: Credentials, settings: Settings):
        transport, encryption = _transport(opts)
        self.endpoint = endpoint
        self.settings = settings
        # True from the moment the Command request is sent: if its reply is
        # lost (reset, 5xx, a hang), the host may have accepted it and the
        # script may be running, so a runbook must not be sent again.
        self.started = False
        self._responsive = True  # False once a request timed out or the connection broke
        op = max(1, int(settings.operation_timeout))
        self._ca_file = str(opts.ca_file) if opts.ca_file else _system_ca_file()
        self.protocol = winrm.Protocol(
            endpoint,
            transport=transport,
            username=creds.username,
            password=creds.password.reveal(),
            server_cert_validation="validate",
            ca_trust_path=self._ca_file,
            read_timeout_sec=read_timeout(op),
            operation_timeout_sec=op,
            message_encryption=encryption,
            proxy=None,  # hosts on the practice LAN; never an environment proxy
        )
        self._timeouts(op)

    def _timeouts(self, operation_timeout: int, connect: float | None = None) -> None:
        # pywinrm passes read_timeout_sec straight to requests: a (connect, read) pair works.
        self.protocol.operation_timeout_sec = operation_timeout
        self.protocol.transport.read_timeout_sec = (connect or self.settings.connect_timeout,
                                                    read_timeout(operation_timeout))

    def _fit(self, deadline: float, what: str) -> None:
        """Timeouts for the next request that end it by ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 1:
            raise Failed(what)
        self._timeouts(max(1, min(int(self.settings.operation_timeout), int(remaining / 1.5) - 1)),
                       min(self.settings.connect_timeout, remaining))

    def run(self, command: str, args: list[str], env: Mapping[str, str], deadline: float) -> Output:
        """Run one command in a fresh shell; raises Transient or Failed."""
        p = self.protocol
        shell_id = command_id = None
        try:
            # Build the requests session first (for NTLM this is the encryption
            # handshake) so that no request scans the environment for proxies.
            session = p.transport.build_session()
            session.trust_env = False
            if self._ca_file and self.endpoint.lower().startswith("https:"):
                try:
                    context = verifying_context(self._ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise Failed(f"TLS: cannot load the CA bundle {self._ca_file} ({type(exc).__name__})") from None
                session.mount("https://", _VerifyingAdapter(context))
            self._fit(deadline, "no time left in the host's time budget to start the script")
            shell_id = p.open_shell(env_vars=dict(env))
            self._fit(deadline, "no time left in the host's time budget to start the script")
            self.started = True  # from here on the script may run, whatever becomes of the reply
            try:
                command_id = p.run_command(shell_id, command, args)
            except WSManFaultError as exc:
                if (exc.wsman_fault_code or exc.wmierror_code) in QUOTA_FAULTS:
                    self.started = False  # the host answered that it refused the command
                raise
            out, err, code = [], [], -1
            while True:
                self._fit(deadline, "no result within the host's time budget (the script was still running); "
                                    "stopped it")
                try:
                    o, e, code, done = p.get_command_output_raw(shell_id, command_id)
                except WinRMOperationTimeoutError:
                    continue  # Receive polled for OperationTimeout with nothing new: ask again
                out.append(o)
                err.append(e)
                if done:
                    break
            command_id = None  # finished: deleting the shell is enough
            return Output(b"".join(out), b"".join(err), code)
        except (Transient, Failed):
            raise
        except WinRMOperationTimeoutError:
            raise Transient(f"WS-Man fault {OPERATION_TIMEOUT_FAULT}: the host did not complete the operation within "
                            "OperationTimeout") from None
        except WSManFaultError as exc:
            code = exc.wsman_fault_code or exc.wmierror_code
            reason = " ".join((exc.reason or "").split())
            msg = f"WS-Man fault {code or exc.fault_subcode or exc.fault_code}: {reason}"
            raise (Transient if code in QUOTA_FAULTS else Failed)(msg) from None
        except InvalidCredentialsError:
            raise Failed("the host rejected the credentials (HTTP 401)") from None
        except WinRMTransportError as exc:
            if exc.code >= 500:
                raise Transient(f"HTTP {exc.code} from the WinRM service") from None
            raise Failed(f"HTTP {exc.code} from the WinRM service") from None
        except requests.exceptions.SSLError as exc:
            self._responsive = False
            text = str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in text or "match" in text:
                raise Failed("TLS: the host's certificate did not verify (is options.ca_file the CA that issued "
                             "its WinRM certificate, and does the certificate name the target's address?)") from None
            if "EOF" in text or "reset" in text.lower():
                raise Transient("connection reset by the host (during TLS)") from None
            raise Failed(f"TLS handshake failed ({type(exc).__name__})") from None
        except requests.exceptions.ConnectTimeout:
            self._responsive = False
            raise Failed(f"no TCP connection within {self.settings.connect_timeout:g} s") from None
        except requests.exceptions.ReadTimeout:
            self._responsive = False
            raise Failed("the host stopped answering (HTTP read timed out)") from None
        except requests.exceptions.ConnectionError as exc:
            self._responsive = False
            raise Transient(_connection_error(exc)) from None
        except AssertionError:
            raise Failed("a WS-Man response did not relate to its request (RelatesTo)") from None
        except WinRMError as exc:
            raise Failed(f"WinRM error: {exc}") from None
        finally:
            self._cleanup(shell_id, command_id)

    def _cleanup(self, shell_id: str | None, command_id: str | None) -> None:
        """Stop a command still running and delete the shell, unless the host
        stopped answering (its IdleTimeout reaps the shell then)."""
        p = self.protocol
        try:
            if not self._responsive:
                return
            self._timeouts(2)
            if shell_id is not None and command_id is not None:
                p.cleanup_command(shell_id, command_id)  # Signal terminate: the command is still running
            if shell_id is not None:
                p.close_shell(shell_id)
        except Exception:  # noqa: BLE001 - best effort; the host's idle timeout reaps what is left
            pass
        finally:
            p.transport.close_session()
