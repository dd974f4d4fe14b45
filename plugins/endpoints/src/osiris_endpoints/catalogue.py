"""The check catalogue an endpoint runs: the appliance's checks of the
endpoints' target kind that apply to its role, with the site's parameters.
Its version is a digest of the entries, so an endpoint knows when its copy
is stale and an event can only name a check the appliance has."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from osiris import CheckSpec
from osiris.records import Target
from osiris_endpoint_proto import agent_pb2 as pb


@dataclass(frozen=True)
class Catalogue:
    version: str
    checks: Mapping[str, CheckSpec]

    def message(self) -> pb.Catalogue:
        return pb.Catalogue(version=self.version, checks=[
            pb.CheckDef(id=c.id, script=c.script or "", params_json=json.dumps(dict(c.params), sort_keys=True),
                        interval_seconds=c.interval, timeout_seconds=c.timeout)
            for c in self.checks.values()])


def build(checks: Mapping[str, CheckSpec], kind: str, role: str) -> Catalogue:
    """The catalogue for an endpoint of ``role``: the checks of ``kind``
    that have a script and apply to that role."""
    probe = Target("endpoint", kind, role)
    chosen = {cid: c for cid, c in sorted(checks.items()) if c.script and c.applies_to(probe)}
    doc = [[c.id, c.script, dict(c.params), c.interval, c.timeout] for c in chosen.values()]
    version = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Catalogue(version, chosen)
