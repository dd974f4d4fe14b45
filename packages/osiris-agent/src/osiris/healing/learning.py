"""The learning loop: outcomes per pattern, promotion candidates, approval.

A pattern is (check, role, runbook, tier). An L2 plan that has healed the
same pattern often enough and reliably enough (``healing.promotion``)
becomes a candidate; a human approves it (CLI or HTTP API), which writes a
promoted L1 rule file under ``<state_dir>/rules`` that the running agent
picks up without a restart. Who approved and when is kept with the
candidate.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..store import PatternSample, Store, StoreError
from .rules import dump_rule

PROMOTED_PREFIX = "promoted-"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        rows = [dict(r) for r in self.store.db.execute(
            "SELECT * FROM pattern_stats ORDER BY check_id, role, runbook, tier")]
        for r in rows:
            r["mean_time_to_heal_s"] = round(r["heal_seconds_total"] / r["successes"], 3) if r["successes"] else None
            r["last_params"] = json.loads(r["last_params"])
        return rows

    def _refresh_candidate(self, check_id: str, role: str, runbook: str) -> None:
        row = self.store.db.execute(
            "SELECT attempts, successes, last_params, param_sets FROM pattern_stats WHERE check_id = ? AND role = ? "
            "AND runbook = ? AND tier = 'L2'", (check_id, role, runbook)).fetchone()
        if row is None:
            return
        attempts, successes = int(row["attempts"]), int(row["successes"])
        # Promote only what was proven: enough successes, reliably, and all
        # with the same parameters (the rule will always use those).
        eligible = (successes >= self.min_successes and successes / attempts >= self.min_success_rate
                    and int(row["param_sets"]) == 1)
        with self.store.transaction() as db:
            existing = db.execute(
                "SELECT id, state FROM rule_candidates WHERE check_id = ? AND role = ? AND runbook = ?",
                (check_id, role, runbook)).fetchone()
            if existing is None:
                if eligible:
                    db.execute(
                        """INSERT INTO rule_candidates (check_id, role, runbook, params, attempts, successes,
                               state, created_at) VALUES (?, ?, ?, ?, ?, ?, 'candidate', ?)""",
                        (check_id, role, runbook, row["last_params"], attempts, successes, _now()))
            elif existing["state"] == "candidate" and not eligible:
                # It slipped below the bar: withdraw it until it earns it again.
                db.execute("DELETE FROM rule_candidates WHERE id = ?", (existing["id"],))
            elif existing["state"] == "candidate":
                db.execute("UPDATE rule_candidates SET attempts = ?, successes = ?, params = ? WHERE id = ?",
                           (attempts, successes, row["last_params"], existing["id"]))

    def candidates(self, state: str | None = "candidate") -> list[Candidate]:
        sql = "SELECT * FROM rule_candidates"
        args: tuple = ()
        if state:
            sql += " WHERE state = ?"
            args = (state,)
        out = []
        for r in self.store.db.execute(sql + " ORDER BY id", args):
            d = dict(r)
            d["params"] = json.loads(d["params"])
            out.append(Candidate(**d))
        return out

    def candidate(self, cid: int) -> Candidate:
        for c in self.candidates(None):
            if c.id == cid:
                return c
        raise StoreError(f"rule candidate {cid}: no such candidate")

    def _undecided(self, cid: int, by: str, decision: str) -> Candidate:
        if not by.strip():
            raise StoreError(f"{decision} needs the name of who decides (--by)")
        c = self.candidate(cid)
        if c.state != "candidate":
            raise StoreError(f"rule candidate {cid}: already {c.state}")
        return c

    def approve(self, cid: int, by: str) -> Candidate:
        """Write the promoted rule file, then record the decision."""
        c = self._undecided(cid, by, "approval")
        rule = {
            "id": f"promoted-{c.id}-{c.check_id}",
            "description": f"Promoted from L2 after {c.successes}/{c.attempts} successful heals",
            # The role it was proven on, even the empty one: an empty list
            # would mean every role, e.g. DCs for a fix seen on workstations.
            "match": {"check": c.check_id, "roles": [c.role]},
            "action": {"runbook": c.runbook, "params": c.params},
            "promoted_from": c.id,
        }
        when = _now()
        header = f"Promoted L1 rule, written by osiris.\nApproved by {by} at {when} (candidate {c.id})."
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        path = self.rules_dir / f"{PROMOTED_PREFIX}{c.id}.yaml"
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(dump_rule(rule, header))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # readers never see half a rule
        self._decide(cid, "approved", by, when, str(path))
        return self.candidate(cid)

    def reject(self, cid: int, by: str) -> Candidate:
        self._undecided(cid, by, "rejection")
        self._decide(cid, "rejected", by, _now(), None)
        return self.candidate(cid)

    def _decide(self, cid: int, state: str, by: str, when: str, rule_file: str | None) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE rule_candidates SET state = ?, decided_by = ?, decided_at = ?, rule_file = ? "
                       "WHERE id = ?", (state, by, when, rule_file, cid))
