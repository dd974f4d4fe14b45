"""Stamping, upgrading and verifying OpenTimestamps proofs of checkpoints,
with the ``opentimestamps`` library (python-opentimestamps) doing the work.

What is timestamped is the checkpoint file itself, byte for byte (the
signed note, as kept in the log and written to exports as
``checkpoints/<size>.note``): the proof is a standard detached timestamp
(``.ots``) of that file, so the standard ``ots`` client verifies it too, and
through the checkpoint's Merkle root it dates every bundle the checkpoint
covers.

* :func:`stamp` does what ``ots stamp`` does: SHA-256 of the file, a random
  nonce appended (so calendars learn nothing about the checkpoint), SHA-256
  again, submitted to every calendar at once (one overall deadline); the
  answers are merged into one proof.
* :func:`upgrade` asks the calendar named in each pending attestation for
  the rest of the path; once a Bitcoin block header attestation is in, the
  proof is complete. Only calendars on the whitelist are asked (a proof can
  name any URL; the library's default whitelist plus our configured
  calendars).
* :func:`verify` checks a proof offline against block headers the auditor
  supplies: the proof must be for this exact file, each Bitcoin attestation's
  digest must be the header's Merkle root (``verify_against_blockheader``),
  and, unless told otherwise, the header must carry valid mainnet proof of
  work for its difficulty.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor, wait
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from bitcoin.core import CBlockHeader, CheckProofOfWork, CheckProofOfWorkError, b2lx
from opentimestamps.calendar import DEFAULT_CALENDAR_WHITELIST, RemoteCalendar, UrlWhitelist
from opentimestamps.core.notary import BitcoinBlockHeaderAttestation, PendingAttestation, VerificationError
from opentimestamps.core.op import OpAppend, OpSHA256
from opentimestamps.core.serialize import (
    BytesDeserializationContext,
    BytesSerializationContext,
    DeserializationError,
)
from opentimestamps.core.timestamp import DetachedTimestampFile, Timestamp

__all__ = ["StampError", "ProofError", "Anchor", "stamp", "upgrade", "verify", "whitelist", "describe"]

USER_AGENT = "osiris-evidence-ots"


class StampError(Exception):
    """Too few calendars took the digest."""


class ProofError(Exception):
    """A proof that does not check out (or is not a proof)."""


@dataclass(frozen=True)
class Anchor:
    height: int
    time: int  # block time, seconds since the epoch
    block_hash: str  # as block explorers show it

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.time, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def whitelist(calendars: Iterable[str], extra: Iterable[str] = ()) -> UrlWhitelist:
    wl = UrlWhitelist(list(calendars) + list(extra))
    for pattern in DEFAULT_CALENDAR_WHITELIST:
        wl.add(pattern.geturl())
    return wl


def _load(data: bytes) -> DetachedTimestampFile:
    try:
        return DetachedTimestampFile.deserialize(BytesDeserializationContext(data))
    except (DeserializationError, ValueError, TypeError) as exc:
        raise ProofError(f"not an OpenTimestamps proof: {exc}") from None


def _dump(proof: DetachedTimestampFile) -> bytes:
    ctx = BytesSerializationContext()
    proof.serialize(ctx)
    return ctx.getbytes()


def stamp(data: bytes, calendars: Iterable[str], *, min_calendars: int = 1, timeout: float = 15.0,
          deadline: float | None = None) -> tuple[bytes, list[str], list[str]]:
    """A pending proof for ``data``; returns (proof, calendars that took it, errors).

    The calendars are asked at the same time, each request with ``timeout``
    seconds, and whatever has answered after ``deadline`` seconds (default
    ``timeout``) is what counts: four slow calendars cost one timeout, not
    four, so a delivery finishes well inside the outbox's timeout instead
    of being cancelled (and re-submitted) every time."""
    calendars = list(calendars)
    deadline = timeout if deadline is None else deadline
    proof = DetachedTimestampFile(OpSHA256(), Timestamp(hashlib.sha256(data).digest()))
    tip = proof.timestamp.ops.add(OpAppend(os.urandom(16))).ops.add(OpSHA256())
    msg = tip.msg

    per_request = min(timeout, deadline)

    def submit(url: str) -> Timestamp:
        return RemoteCalendar(url, user_agent=USER_AGENT).submit(msg, timeout=per_request)

    ok, errors = [], []
    pool = ThreadPoolExecutor(max_workers=max(1, len(calendars)), thread_name_prefix="ots-stamp")
    try:
        futures = [pool.submit(submit, url) for url in calendars]
        wait(futures, timeout=deadline)
        for url, fut in zip(calendars, futures):
            if not fut.done():
                fut.cancel()
                errors.append(f"{url}: no answer within {deadline:g} s")
                continue
            try:
                tip.merge(fut.result())
                ok.append(url)
            except Exception as exc:  # noqa: BLE001 - any calendar failure: the others may do
                if _timed_out(exc):
                    # Said as for one still running at the deadline: with the
                    # default deadline, the request's own timeout and the
                    # deadline are the same length, and which of them ends
                    # first is a matter of thread scheduling.
                    errors.append(f"{url}: no answer within {per_request:g} s")
                else:
                    errors.append(f"{url}: {type(exc).__name__}: {exc}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a straggler ends at its own timeout
    if len(ok) < min_calendars:
        raise StampError(f"{len(ok)} of {min_calendars} required calendars took the digest: " + "; ".join(errors))
    return _dump(proof), ok, errors


def _timed_out(exc: BaseException) -> bool:
    """A socket timeout, bare or as urllib wraps one (URLError's reason)."""
    return isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)


def _walk(ts: Timestamp) -> Iterator[Timestamp]:
    yield ts
    for sub in ts.ops.values():
        yield from _walk(sub)


def is_complete(proof: DetachedTimestampFile) -> bool:
    return any(isinstance(a, BitcoinBlockHeaderAttestation) for _, a in proof.timestamp.all_attestations())


def upgrade(data: bytes, allowed: UrlWhitelist, *, timeout: float = 15.0) -> tuple[bytes, bool, int]:
    """Ask the calendars for the rest of each pending path.

    Returns (proof, complete, how many paths were extended). A calendar that
    is unreachable or has no block yet is simply asked again next time.
    """
    proof = _load(data)
    pending = [(sub, att) for sub in _walk(proof.timestamp) for att in sub.attestations
               if isinstance(att, PendingAttestation)]
    changed = 0
    for sub, att in pending:
        if att.uri not in allowed:
            continue
        try:
            more = RemoteCalendar(att.uri, user_agent=USER_AGENT).get_timestamp(sub.msg, timeout=timeout)
        except Exception:  # noqa: BLE001 - not there yet (404) or unreachable: later
            continue
        before = _dump(proof)
        sub.merge(more)
        changed += _dump(proof) != before
    return _dump(proof), is_complete(proof), changed


def verify(data: bytes, proof_bytes: bytes, headers: Mapping[int, bytes], *, require_pow: bool = True) -> list[Anchor]:
    """Check a proof of ``data`` offline against block headers (height ->
    80-byte header). Returns the anchors that verified; raises ProofError."""
    proof = _load(proof_bytes)
    if proof.file_digest != hashlib.sha256(data).digest():
        raise ProofError("the proof is for another file (SHA-256 differs)")
    anchors, missing = [], []
    for msg, att in proof.timestamp.all_attestations():
        if not isinstance(att, BitcoinBlockHeaderAttestation):
            continue
        raw = headers.get(att.height)
        if raw is None:
            missing.append(att.height)
            continue
        if len(raw) != 80:
            raise ProofError(f"header for block {att.height}: {len(raw)} bytes, expected 80")
        header = CBlockHeader.deserialize(raw)
        if require_pow:
            try:
                CheckProofOfWork(header.GetHash(), header.nBits)
            except CheckProofOfWorkError as exc:
                raise ProofError(f"header for block {att.height} has no valid proof of work: {exc}") from None
        try:
            when = att.verify_against_blockheader(msg, header)
        except VerificationError as exc:
            raise ProofError(f"block {att.height}: {exc}") from None
        anchors.append(Anchor(att.height, int(when), b2lx(header.GetHash())))
    if not anchors:
        if missing:
            raise ProofError(f"no header supplied for block(s) {', '.join(map(str, sorted(missing)))}")
        raise ProofError("the proof has no Bitcoin attestation yet (still pending)")
    return sorted(anchors, key=lambda a: a.height)


def describe(proof_bytes: bytes) -> str:
    """The proof's tree, as ``ots info`` prints it."""
    proof = _load(proof_bytes)
    return f"File sha256 hash: {proof.file_digest.hex()}\nTimestamp:\n{proof.timestamp.str_tree()}"
