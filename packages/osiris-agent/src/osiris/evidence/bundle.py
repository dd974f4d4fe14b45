"""Evidence bundles: what is signed, and the envelope sinks receive.

A bundle is one RFC 8785 JSON object (docs/evidence.md lists the members)::

    {"v": 1, "type": "osiris.evidence.bundle", "id": "<uuid>", "kind": "sweep",
     "recorded_at": "2024-05-01T10:22:33.123456Z",
     "site": {"id": ..., "name": ...}, "appliance": ..., "host": "dc01",
     "agent": {"version": ..., "api": ..., "plugins": {name: version}},
     "policy": {...}, "payload": {...}, "scrubbed": {"ssn": 1, ...},
     "log": "<origin>", "seq": 41, "prev": "<hex leaf hash of entry 40>"}

``payload`` and ``policy`` are scrubbed of PHI before the bundle is
canonicalised and signed; ``log``, ``seq`` and ``prev`` are added by the log
when it appends (:meth:`osiris.evidence.log.EvidenceLog.append`).

Sinks receive a *signed-bundle envelope* (:class:`SignedBundle`), JSON that
carries the exact signed bytes as a string, so nothing has to be
re-canonicalised to check the signature::

    {"format": "osiris.signed-bundle/1", "log": ..., "index": 41, "id": ...,
     "bundle": "<the signed JSON text>", "signature": "<base64>",
     "key_id": "<hex>", "leaf": "<hex>"}
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .canonical import canonical, utc_text
from .errors import VerificationError
from .keys import VerifyKey
from .merkle import leaf_hash
from .scrub import Scrubber

__all__ = ["BUNDLE_TYPE", "ENVELOPE_FORMAT", "Identity", "Statement", "build_statement", "new_bundle_id", "SignedBundle", "KIND"]

BUNDLE_TYPE = "osiris.evidence.bundle"
BUNDLE_VERSION = 1
ENVELOPE_FORMAT = "osiris.signed-bundle/1"
#: The kinds the agent records (docs/evidence.md, "Bundles"): ``agent_start``
#: (the runtime: version, plugins, digests of the effective config, the rules
#: and the check catalogue), ``sweep`` (the evidence service, one per target
#: per sweep, verification and re-check included), ``observation`` (pushed by
#: a source), ``healing_intent`` (osiris.healing.ladder, before a runbook is
#: dispatched), ``healing_attempt`` (every attempt, dry runs and interrupted
#: ones included), ``escalation`` (who was told, through which channel, with
#: what result), ``incident_resolved`` (outcome, tier, who), ``rule_decision``
#: (a healing rule approved or refused, from the API and the CLI),
#: ``health_gate`` (a boot's health verdict, osiris.health),
#: ``risk_accepted`` and ``risk_acceptance_removed`` (an exception: who
#: approved it, why, until when; osiris.actions), ``account`` (a status page
#: account added, removed or its password changed), ``report`` (a
#: compliance report's digest, osiris.report). Later features add their own
#: names here.
KIND = frozenset({"agent_start", "sweep", "observation", "healing_intent", "healing_attempt", "escalation",
                  "incident_resolved", "rule_decision", "health_gate", "risk_accepted", "risk_acceptance_removed",
                  "account", "report"})


@dataclass(frozen=True)
class Identity:
    """Who records: the site, the appliance, the agent and its plugins."""

    site_id: str
    site_name: str
    appliance: str
    agent_version: str
    api_version: str
    plugins: Mapping[str, str]

    def as_json(self) -> dict[str, Any]:
        return {
            "site": {"id": self.site_id, "name": self.site_name},
            "appliance": self.appliance,
            "agent": {"version": self.agent_version, "api": self.api_version, "plugins": dict(sorted(self.plugins.items()))},
        }


def new_bundle_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits.
    Ids sort by time, and the log's id index grows at its right edge instead
    of at random places (which matters for a log of millions)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def build_statement(identity: Identity, scrubber: Scrubber, kind: str, payload: Any, *, host: str | None = None,
                    policy: Any = None, now: datetime | None = None, bundle_id: str | None = None) -> Statement:
    """A bundle statement, scrubbed and ready for :meth:`EvidenceLog.append`
    (which sets ``recorded_at`` to the time it appends, and adds the chain)."""
    if not isinstance(kind, str) or not kind or len(kind) > 64:
        raise ValueError(f"evidence kind {kind!r}: expected a short non-empty string such as 'sweep'")
    counts: dict[str, int] = {}
    clean_payload, c1 = scrubber.scrub_json(payload)
    clean_policy, c2 = scrubber.scrub_json(policy) if policy is not None else (None, {})
    for c in (c1, c2):
        for k, n in c.items():
            counts[k] = counts.get(k, 0) + n
    return Statement({
        "v": BUNDLE_VERSION,
        "type": BUNDLE_TYPE,
        "id": bundle_id or new_bundle_id(),
        "kind": kind,
        "recorded_at": utc_text(now or datetime.now(timezone.utc)),
        **identity.as_json(),
        "host": host,
        "policy": clean_policy,
        "payload": clean_payload,
        "scrubbed": dict(sorted(counts.items())),
    })


#: Members the log adds when it appends; in a statement's template they
#: hold unique placeholders that the writer replaces.
CHAIN = ("log", "prev", "recorded_at", "seq")


def _placeholder(name: str) -> str:
    return f"\x00osiris-chain:{name}\x00"


_MARKS = {name: canonical(_placeholder(name)) for name in CHAIN}


class Statement(Mapping[str, Any]):
    """A bundle statement, canonicalised once when it is built: ``template``
    is its RFC 8785 text with a unique placeholder for each chain member
    (``log``, ``prev``, ``recorded_at``, ``seq``), so the log's writer only
    substitutes those and signs; the time it holds the write lock per bundle
    is a signature and little else. Immutable: derive variants with
    :meth:`replace`. ``template`` is None in the (theoretical) case that the
    content itself contains a placeholder; the writer then canonicalises the
    whole statement."""

    __slots__ = ("_members", "template")

    def __init__(self, members: Mapping[str, Any]):
        self._members = {k: v for k, v in members.items() if k not in CHAIN}
        t = canonical({**self._members, **{name: _placeholder(name) for name in CHAIN}})
        self.template = t if all(t.count(m) == 1 for m in _MARKS.values()) else None

    def fill(self, **chain: bytes) -> bytes:
        """The signed bytes: the template with the chain members' canonical bytes."""
        assert self.template is not None
        body = self.template
        for name, value in chain.items():
            body = body.replace(_MARKS[name], value, 1)
        return body

    def replace(self, **changes: Any) -> Statement:
        return Statement({**self._members, **changes})

    def __getitem__(self, key: str) -> Any:
        return self._members[key]

    def __iter__(self):
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)


@dataclass(frozen=True)
class SignedBundle:
    log: str
    index: int
    bundle_id: str
    body: bytes  # the exact signed bytes (RFC 8785 JSON)
    signature: bytes
    key_id: bytes

    @property
    def leaf(self) -> bytes:
        return leaf_hash(self.body)

    def statement(self) -> dict[str, Any]:
        return json.loads(self.body)

    def verify(self, key: VerifyKey) -> dict[str, Any]:
        """Check the signature and that the signed JSON is what the envelope
        says it is; returns the statement."""
        if not key.verify(self.signature, self.body):
            raise VerificationError(f"bundle {self.bundle_id}: signature does not verify")
        st = self.statement()
        for member, want in (("id", self.bundle_id), ("seq", self.index), ("log", self.log)):
            if st.get(member) != want:
                raise VerificationError(f"bundle {self.bundle_id}: signed {member} is {st.get(member)!r}, "
                                        f"envelope says {want!r}")
        return st

    def to_envelope(self) -> bytes:
        return json.dumps({
            "format": ENVELOPE_FORMAT,
            "log": self.log,
            "index": self.index,
            "id": self.bundle_id,
            "bundle": self.body.decode("utf-8"),
            "signature": base64.b64encode(self.signature).decode(),
            "key_id": self.key_id.hex(),
            "leaf": self.leaf.hex(),
        }, sort_keys=True, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_envelope(cls, payload: bytes) -> SignedBundle:
        try:
            d = json.loads(payload)
            if d.get("format") != ENVELOPE_FORMAT:
                raise VerificationError(f"envelope format {d.get('format')!r}, expected {ENVELOPE_FORMAT!r}")
            return cls(d["log"], int(d["index"]), d["id"], d["bundle"].encode("utf-8"),
                       base64.b64decode(d["signature"], validate=True), bytes.fromhex(d["key_id"]))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise VerificationError(f"not a signed-bundle envelope: {exc}") from None
