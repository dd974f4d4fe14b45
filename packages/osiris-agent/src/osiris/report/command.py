"""``osiris report``: gather, write, sign, record."""

from __future__ import annotations

import hashlib
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

from ..paths import DataPaths


def _day(text: str | None, option: str, default: datetime, end: bool) -> datetime:
    """A date (``--to`` a date holds through that day) or an ISO time with zone."""
    if text is None:
        return default
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            at = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
            return at + timedelta(days=1) if end else at
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected a date (YYYY-MM-DD) or an ISO time with a zone",
                                 param_hint=option) from None
    if at.tzinfo is None:
        raise click.BadParameter(f"{text!r}: a time needs its zone (e.g. {text}Z)", param_hint=option)
    return at.astimezone(timezone.utc)


def evidence_summary(paths: DataPaths, since: datetime, until: datetime) -> dict[str, Any]:
    """What the appendix says about the evidence log, read without changing it."""
    from ..evidence.canonical import utc_text
    from ..evidence.log import EvidenceLog

    if not paths.evidence_log.exists():
        return {}
    log = EvidenceLog(paths.evidence_log, create=False)
    try:
        lo, hi = log.index_range(utc_text(since), utc_text(until))
        kinds = log.kind_counts(lo, hi)
        cp = log.latest_checkpoint()
        return {"origin": log.origin, "entries": log.size(), "period_entries": hi - lo, "first_index": lo,
                "last_index": max(lo, hi - 1), "kinds": dict(kinds),
                "checkpoint_size": cp.size if cp else 0, "checkpoint_root": cp.root.hex() if cp else "none",
                "checkpoint_time": cp.time if cp else None, "key_fingerprint": log.verify_key.fingerprint}
    finally:
        log.close()


@click.command("report")
@click.option("--from", "from_", help="First day (YYYY-MM-DD, UTC) or ISO time. Default: 30 days before --to.")
@click.option("--to", "to", help="Last day, inclusive (YYYY-MM-DD), or ISO time. Default: now.")
@click.option("--format", "fmt", type=click.Choice(["html", "pdf"]), default="html", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write it. Default: osiris-report-SITE-FROM-TO.FORMAT here.")
@click.pass_obj
def report_command(state: Any, from_: str | None, to: str | None, fmt: str, output: str | None) -> None:
    """The compliance report for an auditor: per HIPAA specification and per
    host, drift and time to fix, exceptions, evidence gaps; offline, with a
    signed manifest, its digest recorded as evidence."""
    from ..evidence.errors import EvidenceError
    from ..evidence.keys import load_or_create
    from . import ReportError, build, write

    now = datetime.now(timezone.utc)
    until = _day(to, "--to", now, end=True)
    since = _day(from_, "--from", until - timedelta(days=30), end=False)
    if since >= until:
        raise click.BadParameter("must be before --to", param_hint="--from")
    loaded = state.loaded()
    store = state.store()
    registry = loaded.registry
    catalogue = {cid: c.spec for cid, c in registry.checks.items()}
    applicable = {t.name: [c.id for c in registry.checks_for(t)] for t in loaded.targets}
    intervals = {t.name: max((c.interval for c in registry.checks_for(t)), default=3600) for t in loaded.targets}
    site = {"id": loaded.config.site.id, "name": loaded.config.site.name}
    report = build(store, catalogue, applicable, site, since, until, now, intervals)
    paths = loaded.ctx.paths
    try:
        summary = evidence_summary(paths, since, until)
    except EvidenceError as exc:
        click.echo(f"osiris: evidence log: {exc}; the report says so", err=True)
        summary = {}
    key = None
    if loaded.config.evidence.enabled:
        try:
            key = load_or_create(paths.key_dir, create=False)
        except EvidenceError as exc:
            click.echo(f"osiris: the manifest is not signed: {exc}", err=True)
    name = output or f"osiris-report-{site['id']}-{since:%Y%m%d}-{until - timedelta(seconds=1):%Y%m%d}.{fmt}"
    try:
        written = write(report, Path(name), fmt, scrub=loaded.ctx.scrub, evidence=summary, key=key)
    except ReportError as exc:
        click.echo(f"osiris: {exc}", err=True)
        sys.exit(1)
    if key is not None:
        written.path.with_name(written.path.name + ".key.pem").write_bytes(key.verify_key.pem())
    recorded = None
    if loaded.config.evidence.enabled:
        from ..evidence.service import EvidenceService

        try:
            service = EvidenceService.open(loaded.ctx, loaded.config.evidence,
                                           plugins={n: i.version for n, i in loaded.pm.infos.items()})
            try:
                recorded = service.record_now("report", {
                    "file": written.path.name, "format": fmt, "sha256": written.sha256,
                    "manifest_sha256": hashlib.sha256(written.manifest.read_bytes()).hexdigest(),
                    "period": {"from": since.isoformat(), "to": until.isoformat()},
                    "hosts": len(report.hosts), "episodes": len(report.episodes)})
            finally:
                service.log.close()
        except EvidenceError as exc:
            click.echo(f"osiris: the report's digest was not recorded as evidence: {exc}", err=True)
    click.echo(f"report: {written.path} ({fmt}, sha256 {written.sha256[:16]}...)")
    click.echo(f"manifest: {written.manifest}" + (f" signed in {written.signature.name}" if written.signature else
                                                 " (not signed)"))
    if recorded is not None:
        click.echo(f"evidence: report bundle {recorded.bundle_id} at index {recorded.index}")
