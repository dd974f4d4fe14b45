"""The endpoint service (``osiris.agent.v1.EndpointAgent``) and the source
that runs it.

Two ports on one ``grpc.aio`` server, one certificate: the stream port
requires a client certificate from the appliance's endpoint CA (mutual
TLS: a client without one, or with one from another CA, fails the TLS
handshake and never reaches this code); the enrolment port does not (an
endpoint has no certificate yet) and serves only ``Enroll``. grpcio
cannot set a minimum TLS version, so every call checks the negotiated one
and refuses anything but TLS 1.3.

A stream: Hello -> Welcome (what is already stored of this queue, the
catalogue if the endpoint's is stale), then batches -> cumulative acks.
Each event becomes an observation with ``report_id``
``endpoint/<name>/<queue>/<seq>``; the ack is sent only once ``emit``
returned, i.e. once the store has the observations (the store records a
report id once, so a replay after a lost ack is not stored twice).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import math
import re
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from osiris.flow import evaluate
from osiris.records import Observation, Status, Target

from osiris_endpoint_proto import MAX_BATCH, MAX_FACTS, MAX_MESSAGE, RETRY_AFTER_MS
from osiris_endpoint_proto import agent_pb2 as pb
from osiris_endpoint_proto import agent_pb2_grpc as rpc

from . import tokens
from .catalogue import Catalogue, build
from .limits import Bucket, retry_hint_ms
from .pki import Authority, Peer, PKIError, peer_of
from .registry import Endpoints, new_record
from .settings import Settings

log = logging.getLogger("osiris.endpoints")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
QUEUE_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
REPORTING = "endpoints.reporting"
COMPLETE = "endpoints.events_complete"
Code = grpc.StatusCode
Emit = Callable[[Sequence[Observation]], Awaitable[None]]


class Refused(Exception):
    """A call refused with a status whose details say why."""

    def __init__(self, code: grpc.StatusCode, details: str, retry_ms: int | None = None):
        super().__init__(details)
        self.code, self.details, self.retry_ms = code, details, retry_ms


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _exact(text: str) -> int:
    value = int(text)
    if abs(value) > 2 ** 53 - 1:  # canonical JSON (RFC 8785) holds numbers as IEEE doubles
        raise ValueError(f"{text[:20]}... is out of range")
    return value


# One decoder for every event (json.loads with hooks builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite, parse_int=_exact)


def parse_facts(text: str) -> dict[str, Any]:
    """An event's facts: a JSON object that canonical JSON and UTF-8 can
    hold (finite numbers, integers within 2^53, no lone surrogates), or
    ValueError saying what is wrong."""
    try:
        facts = _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(facts, dict):
        raise ValueError("expected a JSON object")
    # The text itself is UTF-8 (protobuf checks); only a \\uD800-\\uDFFF
    # escape can make a string that is not: look closer only then.
    if _SURROGATE.search(text):
        try:
            json.dumps(facts, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, RecursionError):
            raise ValueError("not valid UTF-8 text (a lone surrogate), or nested too deeply") from None
    return facts


class _Stream:
    """One open stream: who, and how to end it from outside (revocation,
    a newer stream of the same endpoint)."""

    def __init__(self, peer: Peer, context: Any):
        self.peer, self.context = peer, context
        self.killed = asyncio.Event()
        self.reason: tuple[grpc.StatusCode, str] = (Code.ABORTED, "closed")
        self.write_lock = asyncio.Lock()
        self.renew_ordered = False
        self.target: Target | None = None  # what its reports are about
        self.gap_open = False  # an evidence gap was reported and not yet closed

    def close(self, code: grpc.StatusCode, details: str) -> None:
        if not self.killed.is_set():
            self.reason = (code, details)
            self.killed.set()

    async def write(self, message: pb.ApplianceMessage) -> None:
        async with self.write_lock:
            await self.context.write(message)


class Service(rpc.EndpointAgentServicer):
    def __init__(self, ctx: Any, settings: Settings, authority: Authority, emit: Emit):
        self.ctx, self.s, self.authority, self.emit = ctx, settings, authority, emit
        self.state = ctx.state("endpoints")
        self.endpoints = Endpoints(self.state)
        self.checks = ctx.checks
        self.targets = {t.name: t for t in ctx.targets}
        self._catalogues: dict[str, Catalogue] = {}
        self.handshakes = Bucket(settings.handshake_rate, settings.handshake_burst)
        self.rates: dict[str, Bucket] = {}
        self.pipeline = asyncio.Semaphore(settings.pipeline)
        self.streams: dict[str, _Stream] = {}
        self.stream_port = 0
        self._peers: dict[bytes, Peer] = {}
        self._seen: dict[str, float] = {}
        self.counts = {"events": 0, "duplicates": 0, "batches": 0, "refused": 0}

    # -- shared -------------------------------------------------------------------

    def catalogue(self, role: str) -> Catalogue:
        cat = self._catalogues.get(role)
        if cat is None:
            cat = self._catalogues[role] = build(self.checks, self.s.target_kind, role)
        return cat

    def _admit(self) -> None:
        wait = self.handshakes.take()
        if wait:
            hint = retry_hint_ms(wait)
            raise Refused(Code.RESOURCE_EXHAUSTED,
                          f"too many new connections at once; retry in {hint} ms", hint)

    async def _refuse(self, context: Any, refused: Refused, who: str | None = None) -> None:
        """End the call with the refusal's status, and say so in the log:
        a client writing while the call ends may only see grpc's local
        INTERNAL instead (the appliance's status is lost to it)."""
        self.counts["refused"] += 1
        log.log(logging.INFO if refused.code == Code.RESOURCE_EXHAUSTED else logging.WARNING,
                "endpoints: refused %s: %s: %s", f"endpoint {who!r}" if who else context.peer(), refused.code.name,
                refused.details)
        if refused.retry_ms is not None:
            context.set_trailing_metadata(((RETRY_AFTER_MS, str(refused.retry_ms)),))
        await context.abort(refused.code, refused.details)

    def _peer(self, context: Any) -> tuple[Peer, dict[str, Any]]:
        """The caller's verified certificate and its endpoint's record, or
        a refusal naming what is wrong."""
        auth = context.auth_context()
        version = (auth.get("ssl_tls_version") or [b""])[0].decode(errors="replace")
        if version != "TLSv1.3":
            raise Refused(Code.UNAUTHENTICATED, f"TLS 1.3 is required; this connection uses {version or 'no TLS'}")
        pems = auth.get("x509_pem_cert")
        if not pems:
            raise Refused(Code.UNAUTHENTICATED, "a client certificate is required: enrol first, then connect to "
                                                f"the stream port ({self.stream_port})")
        peer = self._peers.get(pems[0])
        if peer is None:
            peer = peer_of(pems[0])
            if len(self._peers) > 10000:
                self._peers.clear()
            self._peers[pems[0]] = peer
        rec = self.endpoints.get(peer.name)
        if rec is None:
            raise Refused(Code.PERMISSION_DENIED, f"endpoint {peer.name!r} is not enrolled at this appliance")
        refusal = self._revoked(peer, rec)
        if refusal:
            raise Refused(Code.PERMISSION_DENIED, refusal)
        return peer, rec

    @staticmethod
    def _revoked(peer: Peer, rec: dict[str, Any] | None) -> str | None:
        if rec is None:
            return f"endpoint {peer.name!r} is no longer enrolled"
        if rec.get("revoked_at"):
            return f"endpoint {peer.name!r} was revoked at {_utc(rec['revoked_at'])}"
        if str(peer.serial) not in rec.get("serials", []):
            return f"endpoint {peer.name!r}: certificate {peer.serial:x} was replaced or revoked"
        return None

    def _role(self, name: str, declared: str) -> str:
        target = self.targets.get(name)
        return target.role if target is not None and target.role else declared

    # -- Enroll / Renew -------------------------------------------------------------------

    async def Enroll(self, request: pb.EnrollRequest, context: Any) -> pb.EnrollResponse:
        try:
            self._admit()
            name = request.name
            if not NAME.match(name):
                raise Refused(Code.INVALID_ARGUMENT, f"name: expected a host name (letters, digits, '.', '_', '-', "
                                                     f"at most 63 characters), got {name[:80]!r}")
            role = self._role(name, request.role or "workstation")
            if role not in self.s.roles:
                raise Refused(Code.INVALID_ARGUMENT, f"role: expected one of {', '.join(self.s.roles)}, got {role[:40]!r}")
            try:
                token = tokens.decode(request.token)
            except tokens.TokenError as exc:
                raise Refused(Code.INVALID_ARGUMENT, f"token: {exc}") from None
            existing = self.endpoints.get(name)
            if existing is not None and not existing.get("revoked_at"):
                raise Refused(Code.ALREADY_EXISTS, f"endpoint {name!r} is already enrolled; revoke it first "
                                                   f"(osiris endpoints revoke {name})")
            try:
                issued = self.authority.sign_request(request.csr, name, dt.timedelta(seconds=self.s.cert_lifetime))
            except PKIError as exc:
                raise Refused(Code.INVALID_ARGUMENT, str(exc)) from None
            try:
                tokens.take(self.state, token, self.ctx.site.id)
            except tokens.TokenError as exc:
                raise Refused(Code.PERMISSION_DENIED, str(exc)) from None
            version = request.agent_version[:64]
            self.endpoints.put(new_record(name, role, issued.serial, issued.not_after.timestamp(), version))
            log.info("endpoint %s enrolled (role %s, certificate %x until %s)", name, role, issued.serial,
                     issued.not_after.isoformat())
            return pb.EnrollResponse(certificate=issued.pem, ca_certificate=self.authority.pem, site=self.ctx.site.id,
                                     not_after_ms=int(issued.not_after.timestamp() * 1000),
                                     catalogue=self.catalogue(role).message(), stream_port=self.stream_port)
        except Refused as refused:
            await self._refuse(context, refused)
            raise AssertionError("unreachable") from None

    async def Renew(self, request: pb.RenewRequest, context: Any) -> pb.RenewResponse:
        try:
            self._admit()
            peer, _rec = self._peer(context)
            try:
                issued = self.authority.sign_request(request.csr, peer.name, dt.timedelta(seconds=self.s.cert_lifetime))
            except PKIError as exc:
                raise Refused(Code.INVALID_ARGUMENT, str(exc)) from None
            self.endpoints.update(peer.name, lambda rec: {
                **rec, "serials": [str(issued.serial), str(peer.serial)], "not_after": issued.not_after.timestamp()})
            log.info("endpoint %s renewed its certificate (%x until %s)", peer.name, issued.serial,
                     issued.not_after.isoformat())
            return pb.RenewResponse(certificate=issued.pem, not_after_ms=int(issued.not_after.timestamp() * 1000))
        except Refused as refused:
            await self._refuse(context, refused)
            raise AssertionError("unreachable") from None

    # -- Stream -------------------------------------------------------------------------

    async def Stream(self, request_iterator: Any, context: Any) -> None:
        name = None
        try:
            # The first message is read before anything is checked: a caller
            # that is refused then reads the refusal as the call's status
            # instead of failing to write into a call already ended.
            try:
                first = await asyncio.wait_for(context.read(), self.s.silence_allowance)
            except asyncio.TimeoutError:
                raise Refused(Code.DEADLINE_EXCEEDED, "no Hello within "
                                                      f"{self.s.silence_allowance:.0f} s") from None
            if first is grpc.aio.EOF:
                return
            self._admit()
            peer, rec = self._peer(context)
            name = peer.name
            if len(self.streams) >= self.s.max_streams and peer.name not in self.streams:
                hint = retry_hint_ms(5.0)
                raise Refused(Code.RESOURCE_EXHAUSTED, f"the appliance has {len(self.streams)} streams open, its "
                                                       f"limit; retry in {hint} ms", hint)
            stream = _Stream(peer, context)
            old = self.streams.get(peer.name)
            if old is not None:
                old.close(Code.ABORTED, "replaced by a newer stream of the same endpoint")
            self.streams[peer.name] = stream
            try:
                await self._session(stream, rec, first)
            finally:
                if self.streams.get(peer.name) is stream:
                    del self.streams[peer.name]
        except Refused as refused:
            await self._refuse(context, refused, name)

    async def _next(self, stream: _Stream) -> Any:
        """The next message, None at the end of the stream; a refusal when
        the stream is closed from outside or the endpoint falls silent."""
        read = asyncio.ensure_future(stream.context.read())
        killed = asyncio.ensure_future(stream.killed.wait())
        try:
            done, _ = await asyncio.wait({read, killed}, timeout=self.s.silence_allowance,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            killed.cancel()
        if read not in done:
            read.cancel()
            if stream.killed.is_set():
                raise Refused(*stream.reason)
            raise Refused(Code.DEADLINE_EXCEEDED, f"nothing from endpoint {stream.peer.name!r} for "
                                                  f"{self.s.silence_allowance:.0f} s (heartbeat every "
                                                  f"{self.s.heartbeat:.0f} s)")
        message = read.result()
        return None if message is grpc.aio.EOF else message

    async def _session(self, stream: _Stream, rec: dict[str, Any], first: pb.EndpointMessage) -> None:
        name = stream.peer.name
        if first.WhichOneof("kind") != "hello":
            raise Refused(Code.INVALID_ARGUMENT, "the first message of a stream must be Hello")
        hello = first.hello
        if not QUEUE_ID.match(hello.queue_id):
            raise Refused(Code.INVALID_ARGUMENT, "hello.queue_id: expected 1 to 64 letters, digits or '-'")
        queue = hello.queue_id
        cat = self.catalogue(rec.get("role", "workstation"))
        acked = int(rec.get("acked", 0)) if rec.get("queue_id") == queue else 0
        observations = []
        if rec.get("queue_id") and rec["queue_id"] != queue:
            observations.append(self._gap(name, f"endpoint/{name}/{rec['queue_id']}/reset", {
                "dropped": None, "reason": "the endpoint's queue was replaced (reinstalled, or its queue file lost): "
                                           "what it had not delivered is gone",
                "previous_queue": rec["queue_id"], "acked": int(rec.get("acked", 0))}))
        if rec.get("silent"):
            observations.append(self._reporting(name, True, 0.0))
        if observations:
            async with self.pipeline:
                await self.emit(observations)
        now = time.time()
        self.endpoints.update(name, lambda r: {
            **r, "queue_id": queue, "acked": acked, "version": hello.agent_version[:64], "last_seen": now,
            "queue_depth": int(hello.queue_depth), "silent": False,
            "gap_open": r.get("gap_open", False) or any(o.check == COMPLETE for o in observations)})
        self._seen[name] = time.monotonic()
        stream.target = self.targets.get(name) or Target(name, self.s.target_kind, rec.get("role", "workstation"))
        stream.gap_open = bool(rec.get("gap_open")) or any(o.check == COMPLETE for o in observations)
        welcome = pb.Welcome(acked_seq=acked, server_time_ms=int(now * 1000),
                             heartbeat_seconds=max(1, int(self.s.heartbeat)), max_batch=MAX_BATCH)
        if hello.catalogue_version != cat.version:
            welcome.catalogue.CopyFrom(cat.message())
        await stream.write(pb.ApplianceMessage(welcome=welcome))
        await self._order_renewal(stream, rec)
        pending: list[tuple[int, int]] = []
        while True:
            message = await self._next(stream)
            if message is None:
                return
            kind = message.WhichOneof("kind")
            if kind == "heartbeat":
                self._heard(name, int(message.heartbeat.queue_depth))
                await stream.write(pb.ApplianceMessage(heartbeat=pb.Heartbeat(sent_at_ms=int(time.time() * 1000))))
            elif kind == "batch":
                acked = await self._batch(stream, queue, cat, acked, pending, message.batch)
                await stream.write(pb.ApplianceMessage(ack=pb.Ack(through_seq=acked)))
            elif kind == "hello":
                raise Refused(Code.INVALID_ARGUMENT, "Hello comes once, first")
            else:
                raise Refused(Code.INVALID_ARGUMENT, "an empty message (expected a batch or a heartbeat)")

    def _heard(self, name: str, depth: int) -> None:
        now = time.monotonic()
        if now - self._seen.get(name, 0.0) >= min(30.0, self.s.heartbeat):
            self._seen[name] = now
            wall = time.time()
            self.endpoints.update(name, lambda r: {**r, "last_seen": wall, "queue_depth": depth})

    async def _order_renewal(self, stream: _Stream, rec: dict[str, Any]) -> None:
        remaining = stream.peer.not_after.timestamp() - time.time()
        if remaining < self.s.renew_before and not stream.renew_ordered:
            stream.renew_ordered = True
            await stream.write(pb.ApplianceMessage(order=pb.Order(renew=True)))

    async def _batch(self, stream: _Stream, queue: str, cat: Catalogue, acked: int,
                     pending: list[tuple[int, int]], batch: pb.Batch) -> int:
        name = stream.peer.name
        if len(batch.events) > MAX_BATCH or len(batch.gaps) > MAX_BATCH:
            raise Refused(Code.INVALID_ARGUMENT, f"a batch holds at most {MAX_BATCH} events and {MAX_BATCH} gaps")
        rate = self.rates.get(name)
        if rate is None:
            rate = self.rates[name] = Bucket(self.s.event_rate, self.s.event_burst)
        wait = rate.debt(len(batch.events))
        if wait:
            await asyncio.sleep(min(wait, 30.0))  # back-pressure: this stream is read more slowly
        # Decoded inside the pipeline: a batch waiting for its turn is its
        # protobuf message only, not 50 observations with their facts (at
        # saturation every stream has one waiting).
        async with self.pipeline:
            target = stream.target
            observations, ranges = [], []
            now = time.time()
            for ev in batch.events:
                if ev.seq < 1:
                    raise Refused(Code.INVALID_ARGUMENT, "event.seq: sequence numbers start at 1")
                ranges.append((ev.seq, ev.seq))
                if ev.seq <= acked or any(a <= ev.seq <= b for a, b in pending):
                    self.counts["duplicates"] += 1
                    continue
                observations.append(self._observation(target, cat, queue, ev, now))
            for gap in batch.gaps:
                if gap.from_seq < 1 or gap.to_seq < gap.from_seq or gap.to_seq - gap.from_seq > 2 ** 40:
                    raise Refused(Code.INVALID_ARGUMENT, f"gap {gap.from_seq}..{gap.to_seq}: expected 1 <= from_seq <= "
                                                         "to_seq")
                ranges.append((gap.from_seq, gap.to_seq))
                if gap.to_seq > acked:
                    observations.append(self._gap(name, f"endpoint/{name}/{queue}/gap/{gap.from_seq}-{gap.to_seq}", {
                        "dropped": gap.to_seq - gap.from_seq + 1, "from_seq": gap.from_seq, "to_seq": gap.to_seq,
                        "reason": gap.reason[:200] or "dropped by the endpoint"}))
            rec_gap = any(o.check == COMPLETE for o in observations)
            if not rec_gap and batch.events and stream.gap_open:
                observations.append(self._gap(name, None, {"dropped": 0, "reason": "events arrive complete again"}))
            if observations:
                await self.emit(observations)
        self.counts["events"] += len(observations)
        self.counts["batches"] += 1
        pending.extend(ranges)
        acked = _advance(acked, pending)
        if len(pending) > 100_000:
            raise Refused(Code.INVALID_ARGUMENT, "too many events out of order (send the oldest unacknowledged first)")
        wall = time.time()
        self._seen[name] = time.monotonic()
        if rec_gap or batch.events:
            stream.gap_open = rec_gap
        gap_open = stream.gap_open
        self.endpoints.update(name, lambda r: {**r, "acked": acked, "last_seen": wall, "gap_open": gap_open})
        return acked

    def _observation(self, target: Target, cat: Catalogue, queue: str, ev: pb.Event, now: float) -> Observation:
        where = f"event seq {ev.seq}"
        spec = cat.checks.get(ev.check_id)
        if spec is None:
            raise Refused(Code.INVALID_ARGUMENT, f"{where}: check id {ev.check_id[:100]!r} is not in this "
                                                 f"appliance's catalogue (version {cat.version}) for this endpoint")
        when = ev.observed_at_ms / 1000.0
        if when > now + self.s.max_clock_skew:
            raise Refused(Code.INVALID_ARGUMENT, f"{where}: observed_at_ms is {when - now:.0f} s in the future "
                                                 f"(at most {self.s.max_clock_skew:.0f} s; correct by Welcome's "
                                                 "server_time_ms)")
        if when < now - self.s.max_event_age:
            raise Refused(Code.INVALID_ARGUMENT, f"{where}: observed_at_ms is older than "
                                                 f"{self.s.max_event_age / 86400:.0f} days")
        if not math.isfinite(ev.duration_ms) or not 0 <= ev.duration_ms <= 86_400_000:
            raise Refused(Code.INVALID_ARGUMENT, f"{where}: duration_ms: expected 0 to 86400000")
        observed_at = dt.datetime.fromtimestamp(when, dt.timezone.utc)
        report_id = f"endpoint/{target.name}/{queue}/{ev.seq}"
        if ev.error:
            return Observation(target.name, spec.id, Status.ERROR,
                               f"the endpoint could not run the check: {ev.error[:500]}", {}, observed_at,
                               ev.duration_ms, report_id)
        if len(ev.facts_json) > MAX_FACTS:
            raise Refused(Code.INVALID_ARGUMENT, f"{where}: facts_json: larger than {MAX_FACTS} bytes")
        try:
            facts = parse_facts(ev.facts_json)
        except ValueError as exc:
            raise Refused(Code.INVALID_ARGUMENT, f"{where}: facts_json: {exc}") from None
        obs = evaluate(target, spec, facts)
        return Observation(obs.target, obs.check, obs.status, obs.reason, obs.facts, observed_at, ev.duration_ms,
                           report_id)

    def _gap(self, name: str, report_id: str | None, facts: dict[str, Any]) -> Observation:
        spec = self.checks[COMPLETE]
        obs = evaluate(Target(name, "endpoint"), spec, facts)
        return dataclasses.replace(obs, report_id=report_id)

    def _reporting(self, name: str, reporting: bool, silent: float) -> Observation:
        spec = self.checks[REPORTING]
        return evaluate(Target(name, "endpoint"), spec, {
            "reporting": reporting, "silent_seconds": round(silent, 1), "allowance": self.s.silence_allowance})

    # -- watchers -------------------------------------------------------------------------

    async def watch(self) -> None:
        """Revocations reach open streams within ``revocation_poll``;
        renewal orders go out; an endpoint silent longer than its
        allowance becomes a 'not reporting' observation."""
        while True:
            await asyncio.sleep(self.s.revocation_poll)
            try:
                await self.sweep_streams()
                await self.sweep_silence()
            except Exception:
                # A broken round must not end revocation for good: logged, tried again.
                log.exception("endpoints: watcher round failed")

    async def sweep_streams(self) -> None:
        for name, stream in list(self.streams.items()):
            rec = self.endpoints.get(name)
            refusal = self._revoked(stream.peer, rec)
            if refusal:
                log.warning("endpoints: closing the stream of %s: %s", name, refusal)
                stream.close(Code.PERMISSION_DENIED, refusal)
            else:
                await self._order_renewal(stream, rec)

    async def sweep_silence(self) -> None:
        now = time.time()
        late = []
        for rec in self.endpoints.all():
            if rec.get("revoked_at") or rec.get("silent") or rec["name"] in self.streams:
                continue
            silent = now - float(rec.get("last_seen", now))
            if silent > self.s.silence_allowance:
                late.append((rec["name"], silent))
        if late:
            async with self.pipeline:
                await self.emit([self._reporting(name, False, silent) for name, silent in late])
            for name, _silent in late:
                self.endpoints.update(name, lambda r: {**r, "silent": True})


def _advance(acked: int, pending: list[tuple[int, int]]) -> int:
    """The highest sequence up to which everything has arrived; the
    ranges at or below it leave ``pending``."""
    pending.sort()
    keep = []
    for a, b in pending:
        if a <= acked + 1:
            acked = max(acked, b)
        else:
            keep.append((a, b))
    pending[:] = [(a, b) for a, b in keep if b > acked]
    return acked


def server_names(settings: Settings) -> list[str]:
    names = [settings.advertise or socket.getfqdn(), "localhost", "127.0.0.1", *settings.server_names]
    return list(dict.fromkeys(n for n in names if n))


class EndpointSource:
    """The plugin's source: serves both ports, emits what endpoints report."""

    name = "endpoints"

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.port = 0
        self.enrol_port = 0
        self.service: Service | None = None
        self.ready = asyncio.Event()

    async def run(self, emit: Emit) -> None:
        s: Settings = self.ctx.settings("endpoints")
        authority = await self.ctx.run_blocking(Authority.load_or_create, self.ctx.paths.key_dir, self.ctx.site.id)
        key, chain = authority.server_identity(server_names(s))
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_concurrent_streams", 8),
            ("grpc.keepalive_time_ms", 120_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.so_reuseport", 0),
        ])
        service = Service(self.ctx, s, authority, emit)
        rpc.add_EndpointAgentServicer_to_server(service, server)
        host = f"[{s.listen}]" if ":" in s.listen else s.listen
        mtls = grpc.ssl_server_credentials([(key, chain)], root_certificates=authority.pem, require_client_auth=True)
        tls = grpc.ssl_server_credentials([(key, chain)])
        try:
            self.port = server.add_secure_port(f"{host}:{s.port}", mtls)
            self.enrol_port = server.add_secure_port(f"{host}:{s.enrol_port}", tls)
        except RuntimeError:
            raise RuntimeError(f"{self.ctx.source}: section 'plugins.endpoints', keys 'listen'/'port'/'enrol_port': "
                               f"cannot listen on {s.listen} ports {s.port} and {s.enrol_port} (in use, or not an "
                               "address of this machine)") from None
        service.stream_port = self.port
        self.service = service
        await server.start()
        log.info("endpoints: streams on %s:%d (mutual TLS), enrolment on %s:%d", s.listen, self.port, s.listen,
                 self.enrol_port)
        self.ready.set()
        try:
            await service.watch()
        finally:
            for stream in list(service.streams.values()):
                stream.close(Code.UNAVAILABLE, "the appliance is stopping")
            await server.stop(grace=1.0)
