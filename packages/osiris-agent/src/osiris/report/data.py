"""The compliance report's figures, from the state store (each check's
changes of status, hourly coverage, incidents, exceptions) over a period.

Time is divided, per host and check, into stretches of one state: passing,
drifting, accepted (failing under an exception), not reporting (errors,
or no result yet). A host at an instant is in its worst state (drifting,
not reporting, accepted, passing); an implementation specification's
figures are its hosts' time over the checks that cite it. "Compliant" is
the share of the period a host (or a specification on a host) was passing
on every check.

All of it is arithmetic over changes of status, never over every
observation: a year of 50 hosts is a few hundred thousand rows at most.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .. import hipaa

STATES = ("drifting", "not reporting", "accepted", "passing")
_RANK = {s: i for i, s in enumerate(STATES)}
_STATUS = {"pass": "passing", "fail": "drifting", "error": "not reporting"}


def _t(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Span:
    start: float
    end: float
    state: str


@dataclass
class Episode:
    host: str
    check: str
    title: str
    hipaa: list[str]
    start: float
    end: float | None  # None: still drifting at the end of the period
    fixed_by: str
    detail: str = ""

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass
class Figures:
    """Seconds of the period in each state."""

    seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STATES})

    def add(self, state: str, seconds: float) -> None:
        self.seconds[state] += seconds

    def percent(self, state: str = "passing") -> float:
        total = sum(self.seconds.values())
        return 100.0 * self.seconds[state] / total if total else 0.0


def _exception_spans(exceptions: Sequence[Mapping[str, Any]], host: str, check: str) -> list[tuple[float, float]]:
    out = []
    for e in exceptions:
        if e["check_id"] == check and e["target"] in (None, host):
            end = min(_t(e["expires_at"]), _t(e["removed_at"])) if e["removed_at"] else _t(e["expires_at"])
            out.append((_t(e["created_at"]), end))
    return out


def timeline(changes: Sequence[Mapping[str, Any]], excepted: Sequence[tuple[float, float]], t0: float,
             t1: float) -> list[Span]:
    """One host and check's spans over [t0, t1): before its first result it
    is not reporting; a failure inside an exception is accepted."""
    spans: list[Span] = []
    state, at = "not reporting", t0
    for c in changes:
        when = _t(c["since"])
        if when > at and when > t0:
            spans.append(Span(max(at, t0), min(when, t1), state))
        state, at = _STATUS.get(c["status"], "not reporting"), max(when, t0)
        if at >= t1:
            break
    if at < t1:
        spans.append(Span(at, t1, state))
    spans = [s for s in spans if s.end > s.start]
    if not excepted:
        return spans
    out: list[Span] = []
    for s in spans:
        if s.state != "drifting":
            out.append(s)
            continue
        cuts = sorted({s.start, s.end, *(x for a, b in excepted for x in (a, b) if s.start < x < s.end)})
        for a, b in zip(cuts, cuts[1:]):
            covered = any(ea <= a and b <= eb for ea, eb in excepted)
            out.append(Span(a, b, "accepted" if covered else "drifting"))
    return out


def worst(spans_by_check: Iterable[list[Span]], t0: float, t1: float) -> Figures:
    """Seconds in each state of the worst state across checks at each instant."""
    events: dict[float, list[tuple[str, int]]] = defaultdict(list)
    for spans in spans_by_check:
        for s in spans:
            events[s.start].append((s.state, 1))
            events[s.end].append((s.state, -1))
    counts = {s: 0 for s in STATES}
    fig = Figures()
    times = sorted(events)
    for a, b in zip(times, times[1:]):
        for st, d in events[a]:
            counts[st] += d
        state = next((s for s in STATES if counts[s] > 0), None)
        if state is not None:
            fig.add(state, b - a)
    return fig


def how_fixed(incidents: Sequence[Any], ended: bool) -> tuple[str, str]:
    """How a drift episode ended, from the incidents it had."""
    healed = [i for i in incidents if i.outcome == "healed"]
    if healed:
        i = healed[-1]
        if i.tier in ("L1", "L2"):
            return i.tier, i.detail
        return "person", i.detail
    if any(i.outcome == "accepted" for i in incidents) and not ended:
        return "accepted risk", next(i.detail for i in incidents if i.outcome == "accepted")
    if not ended:
        return "still drifting", incidents[-1].detail if incidents else ""
    if any(i.outcome in ("escalated", "failed", "dismissed", "suppressed") for i in incidents):
        return "person", "fixed after it was escalated or set aside"
    return "recovered", "passed again without a recorded fix"


@dataclass
class Report:
    site: Mapping[str, Any]
    since: datetime
    until: datetime
    generated_at: datetime
    hosts: list[dict[str, Any]]
    specs: list[dict[str, Any]]
    episodes: list[Episode]
    exceptions: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    overall: Figures
    months: list[dict[str, Any]]
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def fixed_counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for e in self.episodes:
            out[e.fixed_by] += 1
        return dict(out)


def build(store: Any, catalogue: Mapping[str, Any], applicable: Mapping[str, Sequence[str]],
          site: Mapping[str, Any], since: datetime, until: datetime, now: datetime,
          max_interval: Mapping[str, float] | None = None) -> Report:
    """The report's figures. ``catalogue``: check id -> spec (title, hipaa,
    interval); ``applicable``: host -> check ids that apply to it."""
    from ..store import iso

    t0, t1 = since.timestamp(), min(until, now).timestamp()
    changes: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in store.history_until(iso(until)):
        changes[(row["target"], row["check_id"])].append(row)
    exceptions = [e for e in store.exceptions() if e["created_at"] < iso(until) and
                  (e["removed_at"] or e["expires_at"]) > iso(since)]
    incidents: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for inc in store.incidents_between(iso(since), iso(until)):
        incidents[(inc.target, inc.check_id)].append(inc)

    # Time before a host's first result is not counted: monitoring had not
    # begun (the report says from when each host was watched).
    started: dict[str, float | None] = {}
    for host, checks in applicable.items():
        firsts = [_t(changes[(host, c)][0]["since"]) for c in checks if changes.get((host, c))]
        started[host] = min(firsts) if firsts else None
    spans: dict[tuple[str, str], list[Span]] = {}
    for host, checks in applicable.items():
        h0 = started[host]
        for check in checks:
            spans[(host, check)] = [] if h0 is None or h0 >= t1 else timeline(
                changes.get((host, check), []), _exception_spans(exceptions, host, check), max(t0, h0), t1)

    hosts = []
    for host, checks in sorted(applicable.items()):
        fig = worst((spans[(host, c)] for c in checks), t0, t1)
        h0 = started[host]
        hosts.append({"host": host, "figures": fig, "checks": len(checks),
                      "monitored_from": None if h0 is None else datetime.fromtimestamp(max(t0, h0), timezone.utc)})
    cites: dict[str, set[str]] = defaultdict(set)
    for cid in {c for checks in applicable.values() for c in checks}:
        for cite in getattr(catalogue.get(cid), "hipaa", ()):
            cites[cite].add(cid)
    specs = []
    for cite in sorted(cites, key=hipaa.sort_key):
        total = Figures()
        per_host = []
        for host, checks in sorted(applicable.items()):
            mine = [c for c in checks if c in cites[cite]]
            if not mine:
                continue
            fig = worst((spans[(host, c)] for c in mine), t0, t1)
            per_host.append({"host": host, "figures": fig})
            for st, sec in fig.seconds.items():
                total.add(st, sec)
        specs.append({"citation": cite, "title": hipaa.title(cite), "checks": sorted(cites[cite]),
                      "figures": total, "hosts": per_host})
    overall = Figures()
    for h in hosts:
        for st, sec in h["figures"].seconds.items():
            overall.add(st, sec)

    episodes = []
    for (host, check), sp in spans.items():
        runs: list[list[Span]] = []
        for s in sp:
            if s.state in ("drifting", "accepted") and runs and runs[-1][-1].end == s.start:
                runs[-1].append(s)
            elif s.state in ("drifting", "accepted"):
                runs.append([s])
        spec = catalogue.get(check)
        for run in runs:
            start, end = run[0].start, run[-1].end
            ended = end < t1
            mine = [i for i in incidents.get((host, check), [])
                    if start - 1 <= _t(i.opened_at) <= end + 1]
            fixed_by, detail = how_fixed(mine, ended)
            if not ended and all(s.state == "accepted" for s in run[-1:]):
                fixed_by = "accepted risk"
            episodes.append(Episode(host, check, getattr(spec, "title", check), list(getattr(spec, "hipaa", ())),
                                    start, end if ended else None, fixed_by, detail))
    episodes.sort(key=lambda e: (e.start, e.host, e.check))

    gaps = _gaps(store, applicable, since, until, now, max_interval or {})
    months = _months(spans, applicable, since, min(until, now))
    return Report(site, since, until, now, hosts, specs, episodes, exceptions, gaps, overall, months)


def _gaps(store: Any, applicable: Mapping[str, Sequence[str]], since: datetime, until: datetime, now: datetime,
          max_interval: Mapping[str, float]) -> list[dict[str, Any]]:
    """Runs of hours with no result from a host (longer than its longest
    check interval plus an hour), and runs when no host at all reported
    (the agent down), within the period and after monitoring began."""
    from ..store import iso

    last = min(until, now)
    upto = iso(last + timedelta(hours=1))
    any_seen = set(store.covered_hours(iso(since), upto))
    hours = []  # the hour under way counts: it has results or is a gap so far
    h = since.replace(minute=0, second=0, microsecond=0)
    while h < last:
        hours.append(iso(h)[:13])
        h += timedelta(hours=1)
    first_any = min(any_seen, default=None)
    out = []

    def runs(missing: Iterable[bool]) -> list[tuple[int, int]]:
        res, start = [], None
        for i, m in enumerate(missing):
            if m and start is None:
                start = i
            elif not m and start is not None:
                res.append((start, i))
                start = None
        if start is not None:
            res.append((start, len(hours)))
        return res

    for a, b in runs([hr not in any_seen and first_any is not None and hr >= first_any for hr in hours]):
        if b - a >= 2:
            out.append({"host": "all hosts (agent not running)", "start": hours[a], "end": hours[b - 1], "hours": b - a,
                        "kind": "agent down"})
    for host in sorted(applicable):
        limit = max(2, int(max_interval.get(host, 3600) // 3600) + 1)
        rows = store.coverage_of(host, iso(since), upto)  # one host at a time: memory stays flat
        mine = {h for h, _n, _e in rows}
        errors = {h for h, n, e in rows if e and e >= n}
        first = min(mine) if mine else None
        flags = [first is not None and hr >= first and hr in any_seen and (hr not in mine or hr in errors)
                 for hr in hours]
        for a, b in runs(flags):
            if b - a >= limit:
                out.append({"host": host, "start": hours[a], "end": hours[b - 1], "hours": b - a,
                            "kind": "not reporting"})
        if first is None:
            out.append({"host": host, "start": hours[0] if hours else "", "end": hours[-1] if hours else "",
                        "hours": len(hours), "kind": "never reported"})
    return sorted(out, key=lambda g: (g["start"], g["host"]))


def _months(spans: Mapping[tuple[str, str], list[Span]], applicable: Mapping[str, Sequence[str]], since: datetime,
            until: datetime) -> list[dict[str, Any]]:
    """Percent compliant per calendar month (the report's trend chart)."""
    out = []
    start = since
    while start < until:
        nxt = (start.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = min(nxt, until)
        a, b = start.timestamp(), end.timestamp()
        total = Figures()
        for host, checks in applicable.items():
            clipped = [[Span(max(s.start, a), min(s.end, b), s.state) for s in spans[(host, c)]
                        if s.end > a and s.start < b] for c in checks]
            fig = worst(clipped, a, b)
            for st, sec in fig.seconds.items():
                total.add(st, sec)
        out.append({"month": start.strftime("%Y-%m"), "figures": total})
        start = end
    return out
