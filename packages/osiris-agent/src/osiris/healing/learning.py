"""The learning loop: outcomes per pattern, promotion candidates, approval.

A pattern is (check, role, runbook, tier). An L2 plan that has healed the
same pattern often enough and reliably enough (``healing.promotion``)
becomes a candidate; a human approves it (CLI or HTTP API), which writes a
promoted L1 rule file under ``<state_dir>/rules`` that the running agent
picks up without a restart. Who approved and when is kept with the
candidate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import PatternSample, Store, StoreError
from .rules import dump_rule

PROMOTED_PREFIX = "promoted-"


@dataclass(frozen=True)
class Candidate:
    id: int
    check_id: str
    role: str
    runbook: str
    params: dict[str, Any]
    attempts: int
    successes: int
    state: str
    created_at: str
    decided_by: str | None
    decided_at: str | None
    rule_file: str | None

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "success_rate": round(self.success_rate, 3)}


class Learning:
    def __init__(self, store: Store, rules_dir: Path, min_successes: int = 5, min_success_rate: float = 0.9):
        self.store = store
        self.rules_dir = Path(rules_dir)
        self.min_successes = min_successes
        self.min_success_rate = min_success_rate

    def record(self, check_id: str, role: str, runbook: str, tier: str, ok: bool, heal_seconds: float,
               params: dict[str, Any]) -> None:
        """Count one attempt (the ladder counts its own attempts through
        ``Store.finish_attempt``, together with closing the attempt)."""
        self.store.count_pattern(PatternSample(check_id, role, runbook, tier, ok, heal_seconds, params))
        self.refresh(check_id, role, runbook, tier)

    def refresh(self, check_id: str, role: str, runbook: str, tier: str) -> None:
        if tier == "L2":
            self._refresh_candidate(check_id, role, runbook)

    def patterns(self) -> list[dict[str, Any]]:
        rows = self.store.patterns()
        for r in rows:
            r["mean_time_to_heal_s"] = round(r["heal_seconds_total"] / r["successes"], 3) if r["successes"] else None
        return rows

    def _refresh_candidate(self, check_id: str, role: str, runbook: str) -> None:
        # Promote only what was proven: enough successes, reliably, and all
        # with the same parameters (the rule will always use those).
        def eligible(attempts: int, successes: int, param_sets: int) -> bool:
            return (successes >= self.min_successes and successes / attempts >= self.min_success_rate
                    and param_sets == 1)

        self.store.refresh_candidate(check_id, role, runbook, eligible)

    def candidates(self, state: str | None = "candidate") -> list[Candidate]:
        return [Candidate(**d) for d in self.store.candidates(state)]

    def candidate(self, cid: int) -> Candidate:
        found = self.store.candidates(None, cid)
        if not found:
            raise StoreError(f"rule candidate {cid}: no such candidate")
        return Candidate(**found[0])

    def approve(self, cid: int, by: str) -> Candidate:
        """Record the decision and write the promoted rule file in one
        transaction: a rejection at the same moment cannot also succeed,
        and a file that could not be written leaves the candidate undecided."""
        by = decider(by, "approval")
        c = self.candidate(cid)
        rule = {
            "id": f"promoted-{c.id}-{c.check_id}",
            "description": f"Promoted from L2 after {c.successes}/{c.attempts} successful heals",
            # The role it was proven on, even the empty one: an empty list
            # would mean every role, e.g. DCs for a fix seen on workstations.
            "match": {"check": c.check_id, "roles": [c.role]},
            "action": {"runbook": c.runbook, "params": c.params},
            "promoted_from": c.id,
        }
        path = self.rules_dir / f"{PROMOTED_PREFIX}{c.id}.yaml"

        def write(when: str) -> None:
            header = f"Promoted L1 rule, written by osiris.\nApproved by {by} at {when} (candidate {c.id})."
            self.rules_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".yaml.tmp")
            tmp.write_text(dump_rule(rule, header))
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)  # readers never see half a rule

        self.store.decide_candidate(cid, "approved", by, str(path), write)
        return self.candidate(cid)

    def reject(self, cid: int, by: str) -> Candidate:
        self.store.decide_candidate(cid, "rejected", decider(by, "rejection"), None)
        return self.candidate(cid)


def decider(by: str, decision: str) -> str:
    """The name of who decides, as it will be written into a rule file's
    header and the evidence: one line of printable text."""
    name = by.strip()
    if not name:
        raise StoreError(f"{decision} needs the name of who decides (--by)")
    if len(name) > 200 or not name.isprintable():
        raise StoreError(f"{decision}: --by must be one line of printable text of at most 200 characters "
                         "(no control characters)")
    return name
