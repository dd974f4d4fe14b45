"""The endpoint agent: runs the catalogue's checks on this machine, queues
what it finds durably, and streams the queue to the appliance over mutual
TLS until each event is acknowledged.

Two loops share the queue. The check loop runs due checks through the
:class:`~osiris_endpoint.host.Host` and queues a result when it differs
from the last one queued for that check (or is older than ``refresh``).
The stream loop connects (full-jitter backoff between attempts, the
appliance's retry hint when it gives one), says Hello, learns from Welcome
what the appliance already has, forgets that, sends everything after it
in batches (at most ``window`` batches unacknowledged), heartbeats when
idle, and renews its certificate when told to or when it nears expiry.
When the stream port refuses it in the TLS handshake (grpc says only
UNAVAILABLE), its own handshake names why (:mod:`osiris_endpoint.diagnose`).
Every way a stream can end (a status, a cut, a write into a call the
appliance already ended, anything grpc raises) is a reconnect: only the
``stop`` event ends the stream loop.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import random
import ssl
import time
from pathlib import Path
from typing import Any

import grpc

from osiris_endpoint_proto import MAX_BATCH, MAX_FACTS, MAX_MESSAGE, RETRY_AFTER_MS
from osiris_endpoint_proto import agent_pb2 as pb
from osiris_endpoint_proto import agent_pb2_grpc as rpc

from . import __version__
from .diagnose import why_refused
from .host import Check, Host, Result
from .identity import EnrolError, Identity, csr_for, new_key, pinned_ca, read_token
from .queue import Queue

log = logging.getLogger("osiris_endpoint")
CATALOGUE = "catalogue.json"
QUEUE = "queue.sqlite3"
# Errors after which trying again soon cannot help: the appliance said no.
FINAL = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}


def channel_options(host: str) -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.ssl_target_name_override", host), ("grpc.enable_retries", 0)]


def save_catalogue(directory: Path, catalogue: pb.Catalogue) -> None:
    doc = {"version": catalogue.version, "checks": [
        {"id": c.id, "script": c.script, "params": json.loads(c.params_json or "{}"), "interval": c.interval_seconds,
         "timeout": c.timeout_seconds} for c in catalogue.checks]}
    tmp = directory / f"{CATALOGUE}.tmp"
    tmp.write_text(json.dumps(doc))
    tmp.replace(directory / CATALOGUE)


def load_catalogue(directory: Path) -> tuple[str, dict[str, Check]]:
    try:
        doc = json.loads((directory / CATALOGUE).read_text())
    except (FileNotFoundError, ValueError):
        return "", {}
    return doc["version"], {c["id"]: Check(c["id"], c["script"], c["params"], c["interval"], c["timeout"])
                            for c in doc["checks"]}


async def enrol(directory: Path | str, token: str, name: str, role: str = "workstation",
                version: str = __version__) -> Identity:
    """Enrol this machine: the token's pin decides whom to trust, the key
    is made here, the appliance signs its request."""
    directory = Path(directory)
    info = read_token(token)
    ca = await asyncio.to_thread(pinned_ca, info.host, info.port, info.pin)
    key, key_pem = new_key()
    address = f"[{info.host}]:{info.port}" if ":" in info.host else f"{info.host}:{info.port}"
    async with grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca),
                                       options=channel_options(info.host)) as channel:
        try:
            resp = await rpc.EndpointAgentStub(channel).Enroll(pb.EnrollRequest(
                token=info.text, csr=csr_for(key, name), name=name, role=role, agent_version=version), timeout=30)
        except grpc.aio.AioRpcError as exc:
            raise EnrolError(f"the appliance refused enrolment: {exc.code().name}: {exc.details()}") from None
    identity = Identity(name, resp.site, info.host, info.port, resp.stream_port, key_pem, resp.certificate, ca)
    identity.save(directory)
    save_catalogue(directory, resp.catalogue)
    return identity


class Refused(Exception):
    """The appliance refused this endpoint (revoked, not enrolled): retrying
    soon cannot help."""


class EndpointAgent:
    def __init__(self, directory: Path | str, host: Host, *, version: str = __version__, window: int = 4,
                 batch: int = MAX_BATCH, check_interval: float = 60.0, refresh: float = 900.0,
                 backoff: float = 0.5, backoff_cap: float = 60.0, max_age: float | None = None,
                 max_bytes: int | None = None, renew_margin: float = 0.3, address: str | None = None):
        """``address``: HOST:PORT to stream to instead of the enrolled one
        (the lab puts a proxy in between)."""
        self.dir = Path(directory)
        self.address = address
        self.identity = Identity.load(self.dir)
        bounds = {k: v for k, v in (("max_age", max_age), ("max_bytes", max_bytes)) if v is not None}
        self.queue = Queue(self.dir / QUEUE, **bounds)
        self.host, self.version = host, version
        self.window, self.batch = window, min(batch, MAX_BATCH)
        self.check_interval, self.refresh = check_interval, refresh
        self.backoff, self.backoff_cap = backoff, backoff_cap
        self.renew_margin = renew_margin
        self.catalogue_version, self.checks = load_catalogue(self.dir)
        self.offset_ms = 0
        self.queued = asyncio.Event()
        self.connected = asyncio.Event()
        self.last_status: tuple[str, str] | None = None  # (code, details) of the last failed attempt
        self.statuses: collections.deque[tuple[str, str]] = collections.deque(maxlen=32)  # the last failures
        self._welcomed = False
        self.connects = 0
        self._last: dict[str, tuple[str, float]] = {}

    # -- checks ------------------------------------------------------------------------

    async def run_checks(self, stop: asyncio.Event) -> None:
        next_due: dict[str, float] = {}
        while not stop.is_set():
            now = time.monotonic()
            due = [c for c in self.checks.values() if next_due.get(c.id, 0.0) <= now]
            if due:
                try:
                    results = await self.host.run(due)
                except Exception as exc:  # noqa: BLE001 - a broken host is every check's error, not a crash
                    results = [Result(c.id, None, f"{type(exc).__name__}: {exc}") for c in due]
                for r in results:
                    await self.report(r)
                for c in due:
                    next_due[c.id] = now + max(0.01, min(c.interval, self.check_interval))
            wait = min(next_due.values(), default=now + 1.0) - time.monotonic()
            await _sleep(stop, max(0.01, min(wait, 5.0)))

    async def report(self, result: Result) -> int | None:
        """Queue a result if it says something new; its sequence number."""
        if result.check_id not in self.checks:
            return None
        facts = "{}" if result.facts is None else json.dumps(dict(result.facts), sort_keys=True, default=str)
        if len(facts) > MAX_FACTS:
            facts, error = "{}", f"the check's facts exceed {MAX_FACTS} bytes"
        else:
            error = result.error[:500]
        digest = hashlib.sha256(f"{facts}\0{error}".encode()).hexdigest()
        last = self._last.get(result.check_id)
        now = time.monotonic()
        if last is not None and last[0] == digest and now - last[1] < self.refresh:
            return None
        seq = await asyncio.to_thread(self.queue.put, result.check_id, int(result.observed_at * 1000), facts, error,
                                      result.duration_ms)
        self._last[result.check_id] = (digest, now)
        self.queued.set()
        return seq

    # -- what the lab's faults replace ------------------------------------------------------

    def now(self) -> float:
        """This machine's clock (the host stamps its results with the same
        one); the appliance's Welcome says how far off it is."""
        return time.time()

    async def send(self, call: Any, message: pb.EndpointMessage) -> None:
        """Every message to the appliance goes through here, one at a time
        (the lab duplicates, reorders or stalls them)."""
        await call.write(message)

    async def _send(self, call: Any, message: pb.EndpointMessage) -> None:
        try:
            await self.send(call, message)
        except asyncio.InvalidStateError:
            # The appliance ended the call before this write: its status says why.
            code = await call.code()
            raise grpc.aio.AioRpcError(code, await call.initial_metadata(), await call.trailing_metadata(),
                                       await call.details()) from None

    # -- stream ------------------------------------------------------------------------

    def _credentials(self) -> grpc.ChannelCredentials:
        i = self.identity
        return grpc.ssl_channel_credentials(i.ca_pem, i.key_pem, i.cert_pem)

    def _address(self) -> str:
        if self.address:
            return self.address
        i = self.identity
        return f"[{i.host}]:{i.stream_port}" if ":" in i.host else f"{i.host}:{i.stream_port}"

    def _host_port(self) -> tuple[str, int]:
        host, _, port = self._address().rpartition(":")
        return host.strip("[]"), int(port)

    async def _refusal(self) -> tuple[str, str] | None:
        """Why the stream port refused this endpoint in the TLS handshake
        (grpc says only UNAVAILABLE), if that is what happened."""
        i = self.identity
        host, port = self._host_port()
        try:
            found = await why_refused(host, port, i.ca_pem, i.key_pem, i.cert_pem, workdir=self.dir)
        except (ValueError, OSError, ssl.SSLError) as exc:  # a damaged identity file: say so, do not crash
            return ("UNAUTHENTICATED", f"this endpoint's identity cannot be used ({type(exc).__name__}: {exc}); "
                                       "enrol again")
        return None if found is None else (found.code, found.details)

    async def run_stream(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            hint = 0.0
            started = time.monotonic()
            self._welcomed = False
            try:
                await self._session(stop)
                self.last_status = None
            except grpc.aio.AioRpcError as exc:
                status = (exc.code().name, exc.details() or "")
                for key, value in exc.trailing_metadata() or ():
                    if key == RETRY_AFTER_MS:
                        hint = int(value) / 1000.0
                refusal = None
                if exc.code() == grpc.StatusCode.UNAVAILABLE and not self._welcomed:
                    refusal = await self._refusal()
                if refusal is not None or exc.code() in FINAL:
                    status = refusal or status
                    log.error("the appliance refused this endpoint: %s: %s", *status)
                    attempt = max(attempt, 6)
                else:
                    log.warning("stream ended: %s: %s", *status)
                self.last_status = status
                self.statuses.append(status)
            except (OSError, asyncio.TimeoutError, EnrolError) as exc:
                self.last_status = ("UNAVAILABLE", str(exc))
                self.statuses.append(self.last_status)
            except asyncio.CancelledError:
                if _cancelling():
                    raise
                # grpc raises this for a call it cancelled itself: a stream end like any other.
                self.last_status = ("CANCELLED", "the call was cancelled by grpc")
                self.statuses.append(self.last_status)
                log.warning("stream ended: CANCELLED by grpc")
            except Exception as exc:  # the endpoint survives any stream end; logged with its traceback
                self.last_status = ("UNKNOWN", f"{type(exc).__name__}: {exc}")
                self.statuses.append(self.last_status)
                log.warning("stream ended: %s", self.last_status[1], exc_info=True)
            finally:
                self.connected.clear()
            if stop.is_set():
                return
            if time.monotonic() - started > 30:
                attempt = 0  # it was up for a while: this is a new outage
            delay = max(hint, random.uniform(0, min(self.backoff_cap, self.backoff * 2 ** attempt)))
            attempt += 1
            await _sleep(stop, delay)

    async def _session(self, stop: asyncio.Event) -> None:
        if self.identity.not_after - self.now() < 0:
            raise EnrolError("this endpoint's certificate has expired: enrol again with a new token")
        async with grpc.aio.secure_channel(self._address(), self._credentials(),
                                           options=channel_options(self.identity.host)) as channel:
            call = rpc.EndpointAgentStub(channel).Stream()
            await self._send(call, pb.EndpointMessage(hello=pb.Hello(
                queue_id=self.queue.queue_id, agent_version=self.version, catalogue_version=self.catalogue_version,
                queue_depth=self.queue.depth())))
            first = await asyncio.wait_for(call.read(), timeout=60)
            if first is grpc.aio.EOF:
                await call.code()  # raises the status the appliance ended with
                return
            welcome = first.welcome
            self._welcomed = True
            self.connects += 1
            self.offset_ms = welcome.server_time_ms - int(self.now() * 1000)
            if welcome.HasField("catalogue"):
                self._take_catalogue(welcome.catalogue)
            self.connected.set()
            try:
                await self._exchange(stop, call, welcome, channel)
            finally:
                call.cancel()

    def _take_catalogue(self, catalogue: pb.Catalogue) -> None:
        save_catalogue(self.dir, catalogue)
        self.catalogue_version, self.checks = load_catalogue(self.dir)

    async def _exchange(self, stop: asyncio.Event, call: Any, welcome: pb.Welcome, channel: Any) -> None:
        heartbeat = max(1, welcome.heartbeat_seconds or 60)
        limit = min(self.batch, welcome.max_batch or MAX_BATCH)
        local = self.queue.acked
        extra_gap: list[pb.Gap] = []
        if welcome.acked_seq < local:
            # The appliance does not remember what it acknowledged (its state
            # was restored from an older copy): say these are gone, not pending.
            extra_gap.append(pb.Gap(from_seq=welcome.acked_seq + 1, to_seq=local,
                                    reason="acknowledged before; the appliance no longer has them"))
        else:
            await asyncio.to_thread(self.queue.ack, welcome.acked_seq)
        sent = max(welcome.acked_seq, local)
        inflight: list[int] = []
        acked_event = asyncio.Event()
        renew = asyncio.Event()
        if self.identity.not_after - self.now() < self.renew_margin * _lifetime(self.identity):
            renew.set()

        async def reader() -> None:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                kind = message.WhichOneof("kind")
                if kind == "ack":
                    through = message.ack.through_seq
                    await asyncio.to_thread(self.queue.ack, through)
                    inflight[:] = [s for s in inflight if s > through]
                    acked_event.set()
                elif kind == "order":
                    if message.order.HasField("catalogue"):
                        self._take_catalogue(message.order.catalogue)
                    if message.order.renew:
                        renew.set()

        reading = asyncio.create_task(reader())
        stopping = asyncio.create_task(stop.wait())
        try:
            last_write = time.monotonic()
            while True:
                if renew.is_set():
                    await self._renew(channel)
                    return  # reconnect with the new certificate
                if len(inflight) < self.window:
                    message, top = self._next_batch(sent, limit, extra_gap)
                    extra_gap = []
                    if message is not None:
                        await self._send(call, pb.EndpointMessage(batch=message))
                        sent = top
                        inflight.append(top)
                        last_write = time.monotonic()
                        continue
                self.queued.clear()
                acked_event.clear()
                waiters = [asyncio.create_task(self.queued.wait()), asyncio.create_task(acked_event.wait()),
                           asyncio.create_task(renew.wait())]
                timeout = max(0.05, heartbeat - (time.monotonic() - last_write))
                done, _ = await asyncio.wait([reading, stopping, *waiters], timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                if stopping in done:
                    await call.done_writing()
                    return
                if reading in done:
                    reading.result()  # raises the stream's error, if any
                    await call.code()
                    return
                if not done:
                    await self._send(call, pb.EndpointMessage(heartbeat=pb.Heartbeat(
                        sent_at_ms=int(self.now() * 1000) + self.offset_ms, queue_depth=self.queue.depth())))
                    last_write = time.monotonic()
        finally:
            reading.cancel()
            stopping.cancel()
            await asyncio.gather(reading, stopping, return_exceptions=True)

    def _next_batch(self, after: int, limit: int, extra: list[pb.Gap]) -> tuple[pb.Batch | None, int]:
        """The next batch after sequence ``after`` and the highest sequence
        it covers (events and gaps)."""
        events, gaps = self.queue.pending(after, limit)
        if not events and not gaps and not extra:
            return None, after
        batch = pb.Batch(gaps=list(extra))
        batch.gaps.extend(pb.Gap(from_seq=g.from_seq, to_seq=g.to_seq, reason=g.reason) for g in gaps)
        for e in events:
            if e.check_id not in self.checks:
                # The appliance no longer has this check: counted, not sent.
                batch.gaps.append(pb.Gap(from_seq=e.seq, to_seq=e.seq,
                                         reason=f"check {e.check_id} left the catalogue"))
            else:
                batch.events.append(pb.Event(seq=e.seq, check_id=e.check_id,
                                             observed_at_ms=e.observed_at_ms + self.offset_ms,
                                             facts_json=e.facts_json, error=e.error, duration_ms=e.duration_ms))
        top = max([after, *(e.seq for e in events), *(g.to_seq for g in batch.gaps)])
        return batch, top

    async def _renew(self, channel: Any) -> None:
        key, key_pem = new_key()
        resp = await rpc.EndpointAgentStub(channel).Renew(pb.RenewRequest(csr=csr_for(key, self.identity.name)),
                                                         timeout=30)
        self.identity.key_pem, self.identity.cert_pem = key_pem, resp.certificate
        self.identity.save(self.dir)
        log.info("certificate renewed until %s", time.strftime("%Y-%m-%d %H:%M", time.gmtime(resp.not_after_ms / 1000)))

    # -- everything --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self.run_checks(stop), self.run_stream(stop))

    def close(self) -> None:
        self.queue.close()


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _lifetime(identity: Identity) -> float:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(identity.cert_pem)
    return (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass

