"""``osiris report``: the compliance report a practice hands its auditor.

From the state store and the evidence log, offline: a summary page, then
per HIPAA implementation specification (to the paragraph) and per host the
share of the period compliant, drift episodes with time to fix and how each
was fixed (L1, L2, a person), exceptions with their justification, approver
and expiry, evidence gaps, and an appendix on verifying the evidence. HTML
(Jinja2, inline SVG charts) or PDF (WeasyPrint, with the system's Pango).

Next to the report: ``FILE.manifest.json`` (its SHA-256, the period, the
evidence log's size and root when it was made) and
``FILE.manifest.json.sig`` (Ed25519 by the appliance's evidence key, the
key that signs every bundle); the digest is recorded as a ``report`` bundle.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

from .. import hipaa
from .data import STATES, Report, build

__all__ = ["ReportError", "Written", "build", "render_html", "write"]

_env = jinja2.Environment(loader=jinja2.PackageLoader("osiris.report", "templates"),
                          autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                          undefined=jinja2.StrictUndefined)
MAX_LISTED = 300
COLORS = {"passing": "#1a7f37", "drifting": "#c62828", "accepted": "#bf8700", "not reporting": "#8c959f"}


class ReportError(Exception):
    """A report that cannot be made; ``str()`` says why."""


@dataclass(frozen=True)
class Written:
    path: Path
    manifest: Path
    signature: Path | None
    sha256: str
    bundle: Any = None


def _when(ts: float | None) -> str:
    if ts is None:
        return "still open"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _bar(fig: Any, width: int = 220, height: int = 12) -> str:
    """A stacked bar of the states' shares, as inline SVG."""
    total = sum(fig.seconds.values()) or 1.0
    x, parts = 0.0, []
    for state in ("passing", "accepted", "not reporting", "drifting"):
        w = width * fig.seconds[state] / total
        if w > 0:
            parts.append(f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="{height}" fill="{COLORS[state]}"/>')
            x += w
    return (f'<svg class="bar" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img">{"".join(parts)}</svg>')


def _trend(months: list[dict[str, Any]], width: int = 640, height: int = 160) -> str:
    """Percent compliant per month, as an inline SVG column chart."""
    if not months:
        return ""
    n = len(months)
    gap, left, bottom = 6, 34, 20
    col = max(4.0, (width - left - gap * n) / n)
    parts = [f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#8c959f"/>']
    for pct in (0, 50, 100):
        y = (height - bottom) - (height - bottom - 10) * pct / 100
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{pct}%</text>')
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width}" y2="{y:.1f}" stroke="#d0d7de" stroke-width="0.5"/>')
    for i, m in enumerate(months):
        pct = m["figures"].percent()
        h = (height - bottom - 10) * pct / 100
        x = left + gap + i * (col + gap)
        parts.append(f'<rect x="{x:.1f}" y="{height - bottom - h:.1f}" width="{col:.1f}" height="{h:.1f}" '
                     f'fill="{COLORS["passing"]}"/>')
        parts.append(f'<text x="{x + col / 2:.1f}" y="{height - 6}" font-size="9" text-anchor="middle">'
                     f'{m["month"][2:]}</text>')
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img">{"".join(parts)}</svg>')


def render_html(report: Report, scrub: Any = None, evidence: Mapping[str, Any] | None = None) -> str:
    """The report as one self-contained HTML document (no outside
    resources: it opens offline and prints as it renders)."""
    scrub = scrub or (lambda v: v)
    fixed = report.fixed_counts
    # Healed automatically: one line per check (how often, how fast). The
    # rest, which a person should read, one line each (the newest first,
    # up to MAX_LISTED; every one of them is in the evidence export).
    auto: dict[str, dict[str, Any]] = {}
    for e in report.episodes:
        if e.fixed_by in ("L1", "L2"):
            a = auto.setdefault(e.check, {"check": e.check, "title": e.title, "hipaa": e.hipaa, "L1": 0, "L2": 0,
                                          "times": [], "hosts": set()})
            a[e.fixed_by] += 1
            a["times"].append(e.seconds or 0.0)
            a["hosts"].add(e.host)
    healed = []
    for a in sorted(auto.values(), key=lambda a: -(a["L1"] + a["L2"])):
        times = sorted(a["times"])
        healed.append({**a, "hosts": len(a["hosts"]), "median": _duration(times[len(times) // 2]),
                       "longest": _duration(times[-1])})
    rest = [e for e in report.episodes if e.fixed_by not in ("L1", "L2")]
    episodes = [{"host": e.host, "check": e.check, "title": e.title, "hipaa": e.hipaa, "start": _when(e.start),
                 "end": _when(e.end), "took": _duration(e.seconds), "fixed_by": e.fixed_by,
                 "detail": scrub(e.detail)[:200]} for e in reversed(rest[-MAX_LISTED:])]
    fixed_times = [e.seconds for e in report.episodes if e.seconds is not None and e.fixed_by in ("L1", "L2")]
    return _env.get_template("report.html").render(
        r=report, site=report.site, states=STATES, colors=COLORS, bar=_bar, trend=_trend(report.months),
        episodes=episodes, unlisted=max(0, len(rest) - MAX_LISTED), healed=healed, fixed=fixed, pct=lambda fig, s="passing": f"{fig.percent(s):.1f}",
        since=report.since.strftime("%Y-%m-%d"), until=report.until.strftime("%Y-%m-%d"),
        generated=report.generated_at.strftime("%Y-%m-%d %H:%M UTC"), evidence=scrub(dict(evidence or {})),
        exceptions=scrub(report.exceptions), gaps=report.gaps, duration=_duration,
        median_fix=_duration(sorted(fixed_times)[len(fixed_times) // 2]) if fixed_times else "-",
        worst_specs=sorted(report.specs, key=lambda s: s["figures"].percent())[:5],
        worst_hosts=sorted(report.hosts, key=lambda h: h["figures"].percent())[:5],
        title=hipaa.title, monitored_from=min(
            (h["monitored_from"] for h in report.hosts if h["monitored_from"]), default=None) and min(
            h["monitored_from"] for h in report.hosts if h["monitored_from"]).strftime("%Y-%m-%d %H:%M"))


def to_pdf(html: str, path: Path) -> None:
    """PDF through WeasyPrint (Pango from the system); offline: the HTML
    references nothing outside itself."""
    try:
        from weasyprint import HTML
    except (ImportError, OSError) as exc:  # OSError: the system's Pango is missing
        raise ReportError(f"PDF needs WeasyPrint and the system's Pango (Debian: apt-get install "
                          f"libpango-1.0-0 libpangoft2-1.0-0): {exc}") from None
    HTML(string=html, base_url=None).write_pdf(str(path))


def write(report: Report, path: Path, fmt: str, *, scrub: Any = None, evidence: Mapping[str, Any] | None = None,
          key: Any = None) -> Written:
    """Write the report and its manifest (signed with ``key``, the
    appliance's evidence key, when given)."""
    path = Path(path)
    html = render_html(report, scrub, evidence)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "pdf":
            to_pdf(html, path)
        else:
            path.write_text(html, encoding="utf-8")
        data = path.read_bytes()
    except OSError as exc:
        raise ReportError(f"{path}: cannot write the report: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    manifest = {
        "format": "osiris.report-manifest/1",
        "file": path.name,
        "sha256": digest,
        "bytes": len(data),
        "media_type": "application/pdf" if fmt == "pdf" else "text/html",
        "site": dict(report.site),
        "period": {"from": report.since.isoformat(), "to": report.until.isoformat()},
        "generated_at": report.generated_at.isoformat(),
        "evidence": dict(evidence or {}),
    }
    mpath = path.with_name(path.name + ".manifest.json")
    body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    mpath.write_bytes(body)
    spath = None
    if key is not None:
        spath = mpath.with_name(mpath.name + ".sig")
        spath.write_bytes(base64.b64encode(key.sign(body)) + b"\n")
    return Written(path, mpath, spath, digest)
