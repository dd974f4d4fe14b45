"""What the status page shows, as plain data read from the store and the
agent: one function per page, each result scrubbed by the caller before
it reaches a template.

Each (host, check) is in one of four states:

* ``passing``: its latest result passed;
* ``drifting``: it fails and no exception covers it (nothing healed it, or
  something is healing it now);
* ``accepted``: it fails and an exception covers it (accepted risk);
* ``not reporting``: its latest result is an error (the host did not
  answer), it was never observed, or its latest result is stale (older
  than twice its interval plus ``STALE_GRACE``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .. import hipaa, risk
from ..store import Store, iso

STATES = ("drifting", "not reporting", "accepted", "passing")
STALE_GRACE = 600.0  # seconds
RECENT_INCIDENTS = 30


def _age(then: str | None, now: datetime) -> str:
    if not then:
        return "never"
    seconds = (now - datetime.fromisoformat(then)).total_seconds()
    if seconds < 90:
        return f"{max(0, int(seconds))} s ago"
    if seconds < 5400:
        return f"{int(seconds // 60)} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def how_it_stands(row: Mapping[str, Any]) -> str:
    """What is being done about a drift, in words."""
    if row.get("exception"):
        return "accepted risk"
    outcome, state = row.get("outcome"), row.get("incident_state")
    if state == "open":
        return "being handled (incident open)"
    if outcome == "escalated":
        return "escalated: waiting for a person"
    if outcome == "failed":
        return "not healed, nobody told (no working escalation channel)"
    if outcome in ("dry-run",):
        return "dry-run: would have been healed"
    if outcome:
        return f"incident ended: {outcome}"
    return "not yet handled"


class Views:
    """Reads for the pages; ``agent`` is the running agent (store, ladder,
    engine, evidence, loaded config)."""

    def __init__(self, agent: Any, clock: Any = None):
        self.agent = agent
        self.store: Store = agent.store
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    # -- the catalogue ------------------------------------------------------------------

    def _targets(self) -> list[Any]:
        return list(self.agent.loaded.targets)

    def _checks(self) -> Mapping[str, Any]:
        return self.agent.loaded.registry.checks

    def _applicable(self) -> dict[str, list[Any]]:
        registry = self.agent.loaded.registry
        return {t.name: list(registry.checks_for(t)) for t in self._targets()}

    def pairs(self) -> list[dict[str, Any]]:
        """Every (host, check) that applies, with its state now."""
        now = self.clock()
        at = iso(now)
        latest = {(r["target"], r["check_id"]): r for r in self.store.latest()}
        exceptions = self.store.exceptions(active_at=at)
        out = []
        for host, specs in self._applicable().items():
            for spec in specs:
                row = latest.get((host, spec.id))
                exc = None
                if row is None:
                    state, reason, seen = "not reporting", "never observed", None
                else:
                    reason, seen = row["reason"], row["observed_at"]
                    stale = (now - datetime.fromisoformat(seen)).total_seconds() > 2 * spec.interval + STALE_GRACE
                    if row["status"] == "error" or stale:
                        state = "not reporting"
                        if stale and row["status"] != "error":
                            reason = f"no result since {_age(seen, now)} (last: {row['status']})"
                    elif row["status"] == "pass":
                        state = "passing"
                    else:
                        exc = risk.covering(exceptions, host, spec.id, at)
                        state = "accepted" if exc else "drifting"
                out.append({"host": host, "check": spec.id, "title": spec.title, "severity": spec.severity.value,
                            "hipaa": list(spec.hipaa), "state": state, "reason": reason, "observed_at": seen,
                            "seen": _age(seen, now), "exception": exc["id"] if exc else None})
        return out

    # -- pages ------------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        pairs = self.pairs()
        hosts: dict[str, dict[str, Any]] = {}
        roles = {t.name: t.role for t in self._targets()}
        for p in pairs:
            h = hosts.setdefault(p["host"], {"host": p["host"], "role": roles.get(p["host"], ""),
                                             **{s: 0 for s in STATES}, "last_seen": None})
            h[p["state"]] += 1
            if p["observed_at"] and (h["last_seen"] is None or p["observed_at"] > h["last_seen"]):
                h["last_seen"] = p["observed_at"]
        now = self.clock()
        for h in hosts.values():
            h["state"] = next((s for s in STATES if h[s]), "passing")
            h["seen"] = _age(h["last_seen"], now)
        controls: dict[str, dict[str, Any]] = {}
        for p in pairs:
            for cite in p["hipaa"]:
                c = controls.setdefault(cite, {"citation": cite, "title": hipaa.title(cite), "checks": set(),
                                               **{s: 0 for s in STATES}})
                c[p["state"]] += 1
                c["checks"].add(p["check"])
        control_rows = []
        for cite in sorted(controls, key=hipaa.sort_key):
            c = controls[cite]
            c["checks"] = len(c["checks"])
            c["state"] = next((s for s in STATES if c[s]), "passing")
            control_rows.append(c)
        totals = {s: sum(1 for p in pairs if p["state"] == s) for s in STATES}
        host_rows = sorted(hosts.values(), key=lambda h: (STATES.index(h["state"]), h["host"]))
        return {"hosts": host_rows, "controls": control_rows, "totals": totals, "drift": self.drift(pairs),
                "incidents": self.store.count_incidents(), "agent": self.agent_state()}

    def agent_state(self) -> dict[str, Any]:
        a = self.agent
        return {"alive": a.engine.alive(), "mode": a.loaded.config.healing.mode,
                "channels": [c.name for c in a.channels], "rules": len(a.ladder.rules.rules),
                "rule_errors": list(a.ladder.rule_errors),
                "last_error": a.last_error or a.engine.last_error or a.ladder.last_error,
                "candidates": len(a.ladder.learning.candidates("candidate"))}

    def drift(self, pairs: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Every failing check, accepted ones too, with how it stands."""
        now = self.clock()
        at = iso(now)
        exceptions = self.store.exceptions(active_at=at)
        checks = self._checks()
        out = []
        for row in self.store.drift():
            exc = risk.covering(exceptions, row["target"], row["check_id"], at)
            spec = checks.get(row["check_id"])
            since = row["since"] or row["observed_at"]
            item = {**row, "title": spec.spec.title if spec else row["check_id"],
                    "hipaa": list(spec.spec.hipaa) if spec else [],
                    "exception": None if exc is None else {"id": exc["id"], "expires_at": exc["expires_at"],
                                                           "approved_by": exc["approved_by"],
                                                           "reason": exc["reason"]},
                    "for": _duration((now - datetime.fromisoformat(since)).total_seconds())}
            item["stands"] = how_it_stands(item)
            out.append(item)
        out.sort(key=lambda r: (r["exception"] is not None, r["since"] or ""))
        return out

    def host(self, name: str) -> dict[str, Any] | None:
        if name not in {t.name for t in self._targets()}:
            return None
        pairs = [p for p in self.pairs() if p["host"] == name]
        pairs.sort(key=lambda p: (STATES.index(p["state"]), p["check"]))
        target = next(t for t in self._targets() if t.name == name)
        incidents = [i.as_dict() for i in self.store.incidents(None, limit=5000) if i.target == name][:RECENT_INCIDENTS]
        return {"host": name, "role": target.role, "kind": target.kind, "checks": pairs,
                "counts": {s: sum(1 for p in pairs if p["state"] == s) for s in STATES},
                "history": self.store.history(name, limit=100), "incidents": incidents}

    def incidents(self) -> dict[str, Any]:
        return {"open": [i.as_dict() for i in self.store.incidents("open")],
                "recent": [i.as_dict() for i in self.store.incidents("resolved", limit=RECENT_INCIDENTS)],
                "drift": self.drift()}

    def exceptions(self) -> dict[str, Any]:
        at = iso(self.clock())
        rows = self.store.exceptions()
        for r in rows:
            r["active"] = risk.covers(r, r["target"] or "", r["check_id"], at) if r["target"] else (
                r["created_at"] <= at < r["expires_at"] and (r["removed_at"] is None or at < r["removed_at"]))
        rows.sort(key=lambda r: (not r["active"], -r["id"]))
        return {"exceptions": rows, "checks": sorted(self._checks()), "hosts": [t.name for t in self._targets()]}

    def rules(self) -> dict[str, Any]:
        learning = self.agent.ladder.learning
        return {"candidates": [c.as_dict() for c in learning.candidates("candidate")],
                "decided": [c.as_dict() for c in learning.candidates(None) if c.state != "candidate"][-20:],
                "rules": [{"id": r.id, "check": r.model.match.check, "runbook": r.model.action.runbook,
                           "source": f"{Path(str(r.file)).name}:{r.line}"} for r in self.agent.ladder.rules.rules],
                "rule_errors": list(self.agent.ladder.rule_errors)}

    def evidence(self) -> dict[str, Any]:
        ev = self.agent.evidence
        if ev is None:
            return {"enabled": False}
        st = ev.status()
        path = Path(ev.log.path)
        size = sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())
        now = self.clock()
        cp = st["checkpoint"]
        cp_age = _age(cp["time"].replace("Z", "+00:00"), now) if cp else None
        unsealed = st["entries"] - (cp["size"] if cp else 0)
        backlog = []
        for sink, kinds in sorted(st["sinks"].items()):
            backlog.append({"sink": sink, **{k: v for k, v in kinds.items()}})
        return {"enabled": True, "entries": st["entries"], "bytes": size, "megabytes": round(size / 1e6, 1),
                "checkpoint": cp, "checkpoint_age": cp_age, "sinks": backlog, "last_error": st["last_error"],
                "fingerprint": ev.verify_key.fingerprint, "origin": st["origin"], "unsealed": unsealed}


    async def update(self) -> dict[str, Any] | None:
        """The appliance's update state from its update backend (None: no
        backend). Bounded: the page never waits on a backend more than 5 s."""
        from ..records import UpdateError, UpdateStatus
        from ..update_cli import progress_text

        backends = getattr(self.agent, "update_backends", [])
        if not backends:
            return None
        backend = backends[0]
        try:
            st = await asyncio.wait_for(backend.status(), 5.0)
        except UpdateError as exc:
            return {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a backend's bug or hang is shown, never breaks the page
            return {"error": f"update backend {backend.name!r}: {type(exc).__name__}: {exc}"}
        if not isinstance(st, UpdateStatus):
            return {"error": f"update backend {backend.name!r} returned {type(st).__name__}, expected UpdateStatus"}
        return {**st.to_json(), "progress": progress_text(st.running) if st.running else None,
                "checked": _age(st.last_check.isoformat(), self.clock()) if st.last_check else None}


def since_hours(hours: float, now: datetime) -> str:
    return iso(now - timedelta(hours=hours))
