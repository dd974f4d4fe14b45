"""``osiris evidence``: verify, export, show, checkpoint, status, key, prune, compact.

Exit statuses as the rest of the CLI: 0 fine, 1 verification failed or the
operation was refused (the message names the first bad index or the file),
2 bad usage.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

from ..paths import DataPaths
from .canonical import utc_text
from .errors import EvidenceError

EXIT_FAILED = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    click.echo(f"osiris: {message}", err=True)
    sys.exit(code)


def _paths(cctx: click.Context) -> DataPaths:
    """Where the loaded config keeps the evidence log and the keys."""
    return cctx.obj.loaded().ctx.paths


def _open_log(cctx: click.Context):
    from .log import EvidenceLog

    try:
        return EvidenceLog(_paths(cctx).evidence_log, create=False)
    except EvidenceError as exc:
        _fail(str(exc))


def _trusted_key(cctx: click.Context, key_file: str | None):
    from .keys import VerifyKey, load_public

    try:
        if key_file:
            return VerifyKey.from_pem(Path(key_file).read_bytes(), key_file)
        return load_public(_paths(cctx).key_dir)
    except OSError as exc:
        _fail(f"{key_file}: cannot read: {exc.strerror}")
    except EvidenceError as exc:
        _fail(str(exc))


def _signing_key(cctx: click.Context):
    from .keys import load_or_create

    return load_or_create(_paths(cctx).key_dir, create=False)


@click.group()
def evidence() -> None:
    """The signed evidence log: verify, export for an auditor, inspect."""


@evidence.command()
@click.argument("ref", required=False)
@click.option("--fast", is_flag=True,
              help="Through checkpoints: check signatures only of entries after the last checkpoint.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False),
              help="Trusted public key (PEM). Default: the key pinned on this appliance.")
@click.option("--jobs", type=click.IntRange(1, 64), default=min(os.cpu_count() or 1, 4), show_default=True,
              help="Processes that hash checkpointed entries.")
@click.option("--checkpoint", "kept", multiple=True, type=click.Path(dir_okay=False),
              help="A checkpoint note kept from an earlier export (checkpoints/<size>.note): the log must still "
                   "hold it. Repeatable.")
@click.option("--sinks/--no-sinks", default=True, show_default=True,
              help="Ask the configured sinks for the newest checkpoint they hold.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def verify(cctx: click.Context, ref: str | None, fast: bool, key_file: str | None, jobs: int, kept: tuple[str, ...],
           sinks: bool, fmt: str) -> None:
    """Verify the whole log, or one bundle (REF: bundle id or index).

    The whole log: every signature and the chain (skipped for checkpointed
    entries with --fast), every checkpoint's signature and root, the
    consistency between checkpoints, and the checkpoints held outside the
    log: what the outbox says each sink acknowledged, attested checkpoints,
    each sink's own newest copy, and every --checkpoint FILE. On failure
    the first bad index and what is wrong are printed, exit status 1.
    """
    from .errors import VerificationError
    from .verify import Witness, log_witnesses, verify_entry_in_log, verify_log

    log = _open_log(cctx)
    key = _trusted_key(cctx, key_file)
    if ref:
        try:
            out = verify_entry_in_log(log, ref, key)
        except VerificationError as exc:
            _fail(f"bundle {ref}: {exc}")
        except EvidenceError as exc:
            _fail(str(exc))
        cp = out["checkpoint"]
        where = (f"included in checkpoint {cp['size']} ({cp['time']}), proof of {len(cp['proof'])} hashes"
                 if cp else "not yet covered by a checkpoint")
        if fmt == "json":
            click.echo(json.dumps({k: v for k, v in out.items() if k != "statement"}, indent=2))
        else:
            click.echo(f"ok: bundle {out['id']} (index {out['index']}): signature and chain verify; {where}")
        return
    try:
        witnesses = [Witness.from_file(f) for f in kept]
    except EvidenceError as exc:
        _fail(str(exc), EXIT_USAGE)
    witnesses += log_witnesses(log)
    warnings: list[str] = []
    if sinks:
        found, warnings = _sink_witnesses(cctx, log)
        witnesses += found
    report = verify_log(log, key, signatures=not fast, jobs=jobs, witnesses=witnesses)
    if fmt == "json":
        click.echo(json.dumps({
            "ok": report.ok, "entries": report.entries, "checkpoints": report.checkpoints,
            "signatures": report.signatures, "pruned": report.pruned, "first_bad_index": report.first_bad_index,
            "outside_checkpoints": [w.source for w in witnesses],
            "problems": [str(p) for p in report.problems], "warnings": warnings,
        }, indent=2))
    else:
        click.echo(report.summary())
        for p in report.problems[1:]:
            click.echo(f"  also: {p}")
        for w in warnings:
            click.echo(f"osiris: warning: {w}", err=True)
    if not report.ok:
        sys.exit(EXIT_FAILED)


def _sink_witnesses(cctx: click.Context, log: Any, timeout: float = 30.0) -> tuple[list[Any], list[str]]:
    """The newest checkpoint each configured sink holds of this log (sinks
    with ``latest_checkpoint``); a sink that cannot answer is a warning."""
    import asyncio

    from ..records import EvidenceSink
    from .verify import Witness

    loaded = cctx.obj.loaded()
    kid = log.verify_key.key_id(log.origin).hex()
    found: list[Any] = []
    warnings: list[str] = []
    try:
        sinks = [s for _, s in loaded.pm.collect("osiris_evidence_sinks", EvidenceSink, ctx=loaded.ctx)]
    except Exception as exc:  # noqa: BLE001 - a plugin's error, named; the log is still verified
        return [], [f"evidence sinks not asked for their checkpoints: {exc}"]

    async def ask(sink: Any) -> bytes | None:
        return await asyncio.wait_for(sink.latest_checkpoint(log.origin, kid), timeout)

    for sink in sinks:
        if not callable(getattr(sink, "latest_checkpoint", None)):
            continue
        try:
            note = asyncio.run(ask(sink))
        except Exception as exc:  # noqa: BLE001 - unreachable now: say so, verify the rest
            warnings.append(f"sink {sink.name}: could not read the newest checkpoint it holds: "
                            f"{type(exc).__name__}: {exc}")
            continue
        if note:
            found.append(Witness(f"sink {sink.name} (its own copy)", 0, bytes(note)))
    return found, warnings


@evidence.command("verify-export")
@click.argument("path", type=click.Path(exists=True))
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True),
              help="The public key you trust (PEM). Default: the export's own public-key.pem (with a warning).")
def verify_export_cmd(path: str, key_file: str | None) -> None:
    """Verify an export (zip or unpacked directory) offline.

    Prints the SHA-256 fingerprint of the key everything was checked
    against; without --key that is the export's own key, and a warning says
    so (an export re-signed with another key would verify against itself).
    """
    from .keys import VerifyKey
    from .verify import verify_export

    key = None
    if key_file:
        try:
            key = VerifyKey.from_pem(Path(key_file).read_bytes(), key_file)
        except OSError as exc:
            _fail(f"{key_file}: cannot read: {exc.strerror}", EXIT_USAGE)
        except EvidenceError as exc:
            _fail(f"--key {exc}", EXIT_USAGE)
    try:
        report = verify_export(path, key)
    except EvidenceError as exc:
        _fail(str(exc))
    click.echo(report.summary())
    for p in report.problems[1:]:
        click.echo(f"  also: {p}")
    if report.key_fingerprint:
        source = key_file if key_file else "the export's own public-key.pem"
        click.echo(f"key: SHA-256 fingerprint {report.key_fingerprint} ({source})")
    for w in report.warnings:
        click.echo(f"osiris: warning: {w}", err=True)
    if not report.ok:
        sys.exit(EXIT_FAILED)


def _bound(text: str | None, *, end: bool) -> tuple[str, Any] | None:
    """An index ("123") or a time ("2024-05-01", "2024-05-01T10:00:00Z")."""
    if text is None:
        return None
    if text.isdigit():
        return ("index", int(text) + (1 if end else 0))
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            dt = datetime(d.year, d.month, d.day, tzinfo=timezone.utc) + (timedelta(days=1) if end else timedelta())
        else:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected an index, a date (YYYY-MM-DD) or an ISO time") from None
    return ("time", utc_text(dt))


@evidence.command("export")
@click.option("--from", "from_", help="First bundle: index, date (YYYY-MM-DD) or ISO time. Default: the first.")
@click.option("--to", "to", help="Last bundle: index (inclusive), date (inclusive) or ISO time (exclusive).")
@click.option("--checkpoint/--no-checkpoint", default=True,
              help="Make a checkpoint first so the newest bundles are covered (needs the signing key).")
@click.option("--pin", "pins", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="A checkpoint note kept from an earlier export: include it with a consistency proof to the "
                   "newest (refused if the log no longer extends it). Repeatable.")
@click.argument("out", type=click.Path(dir_okay=False))
@click.pass_context
def export_cmd(cctx: click.Context, from_: str | None, to: str | None, checkpoint: bool, pins: tuple[str, ...],
               out: str) -> None:
    """Write bundles, checkpoints, proofs, OTS proofs, the public key, a
    VERIFY.md and the standalone verify.py to OUT (a new .zip)."""
    from .export import export

    lo_b, hi_b = _bound(from_, end=False), _bound(to, end=True)
    log = _open_log(cctx)
    if checkpoint:
        try:
            cp = log.checkpoint(_signing_key(cctx))
            if cp is not None:
                click.echo(f"checkpoint {cp.size} made", err=True)
        except EvidenceError as exc:
            click.echo(f"osiris: note: no checkpoint made ({exc}); exporting what the latest covers", err=True)
    size = log.size()
    lo = lo_b[1] if lo_b and lo_b[0] == "index" else None
    hi = hi_b[1] if hi_b and hi_b[0] == "index" else None
    if (lo_b and lo_b[0] == "time") or (hi_b and hi_b[0] == "time"):
        t_lo, t_hi = log.index_range(lo_b[1] if lo_b and lo_b[0] == "time" else None,
                                     hi_b[1] if hi_b and hi_b[0] == "time" else None)
        lo = t_lo if lo is None else max(lo, t_lo)
        hi = t_hi if hi is None else min(hi, t_hi)
    lo = 0 if lo is None else lo
    hi = size if hi is None else min(hi, size)
    latest = log.latest_checkpoint()
    if latest is not None and hi > latest.size:
        click.echo(f"osiris: note: bundles from {latest.size} on are not covered by a checkpoint yet; "
                   f"exporting up to {latest.size - 1}", err=True)
        hi = latest.size
    if hi <= lo:
        _fail("no bundles in that range")
    try:
        signing = _signing_key(cctx)
    except EvidenceError as exc:
        signing = None
        click.echo(f"osiris: note: manifest.json not signed ({exc}); bundles cut from the export's ends "
                   "would go unnoticed", err=True)
    try:
        summary = export(log, out, lo, hi, signing_key=signing, pins=[Path(p).read_bytes() for p in pins])
    except EvidenceError as exc:
        _fail(str(exc))
    click.echo(f"{summary.path}: bundles {summary.first}..{summary.end - 1} ({summary.bundles}), "
               f"{len(summary.checkpoints)} checkpoint(s), proofs against checkpoint {summary.anchor}; "
               "see VERIFY.md inside")


@evidence.command()
@click.argument("ref")
@click.option("--raw", is_flag=True, help="Print the exact signed bytes only.")
@click.pass_context
def show(cctx: click.Context, ref: str, raw: bool) -> None:
    """Show one bundle (REF: bundle id, unambiguous prefix, or index)."""
    from .merkle import leaf_hash

    log = _open_log(cctx)
    try:
        e = log.find(ref)
    except EvidenceError as exc:
        _fail(str(exc))
    if e.body is None:
        click.echo(f"bundle {e.bundle_id} (index {e.index}, {e.kind}, {e.recorded_at}): pruned; leaf {e.leaf.hex()}")
        return
    if raw:
        click.echo(e.body.decode("utf-8"))
        return
    ok = log.verify_key.verify(e.sig or b"", e.body) and leaf_hash(e.body) == e.leaf
    cp = log.checkpoint_covering(e.index)
    click.echo(f"# bundle {e.bundle_id}  index {e.index}  kind {e.kind}  recorded {e.recorded_at}")
    click.echo(f"# signature {'verifies' if ok else 'DOES NOT VERIFY'}; leaf {e.leaf.hex()}; "
               + (f"first in checkpoint {cp.size} ({cp.time})" if cp else "not yet in a checkpoint"))
    click.echo(json.dumps(json.loads(e.body), indent=2, ensure_ascii=False))


@evidence.command()
@click.pass_context
def checkpoint(cctx: click.Context) -> None:
    """Sign a checkpoint of the log now (needs the signing key)."""
    log = _open_log(cctx)
    try:
        cp = log.checkpoint(_signing_key(cctx), force=True)
    except EvidenceError as exc:
        _fail(str(exc))
    if cp is None:
        _fail("the log is empty: nothing to checkpoint")
    click.echo(cp.note.decode("utf-8"), nl=False)


@evidence.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def status(cctx: click.Context, fmt: str) -> None:
    """Size, latest checkpoint, sinks' outbox positions and attestations."""
    log = _open_log(cctx)
    cp = log.latest_checkpoint()
    size = log.size()
    att = log.attestations()
    data = {
        "origin": log.origin,
        "entries": size,
        "checkpoint": None if cp is None else {"size": cp.size, "time": cp.time},
        "sinks": [
            {**c, "pending": (size - c["delivered"]) if c["kind"] == "bundle" else None} for c in log.cursors()
        ],
        "attestations": {"complete": sum(a["complete"] for a in att), "pending": sum(not a["complete"] for a in att)},
        "storage": log.storage(),
    }
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"log {data['origin']}: {size} entries; latest checkpoint "
               + (f"{cp.size} at {cp.time}" if cp else "none"))
    for c in data["sinks"]:
        extra = f", {c['pending']} pending" if c["pending"] is not None else ""
        err = f"; failing ({c['attempts']} attempts): {c['last_error']}" if c["last_error"] else ""
        click.echo(f"  sink {c['sink']} ({c['kind']}): delivered up to {c['delivered']}{extra}{err}")
    click.echo(f"  attestations: {data['attestations']['complete']} complete, {data['attestations']['pending']} pending")
    st = data["storage"]
    click.echo(f"  storage: {st['file_bytes']:,} bytes on disk; {st['packed_entries']:,} entries in {st['segments']:,} "
               f"segments ({st['segment_raw_bytes']:,} -> {st['segment_bytes']:,} bytes), {st['inline_entries']:,} "
               "not packed yet")


@evidence.command()
@click.pass_context
def key(cctx: click.Context) -> None:
    """Print the pinned public key: PEM, fingerprint and C2SP verifier key."""
    from .service import origin_for

    k = _trusted_key(cctx, None)
    loaded = cctx.obj.loaded()
    origin = origin_for(loaded.config.site.id, loaded.config.site.appliance)
    if _paths(cctx).evidence_log.exists():
        origin = _open_log(cctx).origin
    click.echo(k.pem().decode(), nl=False)
    click.echo(f"fingerprint (SHA-256 of the raw key): {k.fingerprint}")
    click.echo(f"verifier key: {k.note_verifier(origin)}")


@evidence.command()
@click.option("--before", required=True, help="Prune bundles recorded before this date or ISO time.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--archive", "archive", type=click.Path(file_okay=False, exists=True),
              help="First write the range as an export (with VERIFY.md and verify.py) into this directory "
                   "(a NAS, removable media).")
@click.pass_context
def prune(cctx: click.Context, before: str, yes: bool, archive: str | None) -> None:
    """Drop the bodies of bundles older than the retention period (their
    hashes stay, so the log and every proof still verify). Only bundles
    every sink received are pruned; with no sink, only after --archive."""
    import hashlib

    from .export import export

    bound = _bound(before, end=False)
    if bound is None or bound[0] != "time":
        raise click.BadParameter("expected a date or ISO time", param_hint="--before")
    cutoff = datetime.fromisoformat(bound[1].replace("Z", "+00:00"))
    log = _open_log(cctx)
    first, end, delivered = log.prunable(cutoff)
    if end > first and not delivered and archive is None:
        _fail(f"bundles [{first}, {end}) would be pruned, but no sink has received these bundles and no --archive "
              "DIR was given: nothing would hold them any more")
    if not yes:
        click.confirm(f"Prune bodies of bundles recorded before {bound[1]} ([{first}, {end}))?", abort=True)
    if archive is not None and end > first:
        out = Path(archive) / f"evidence-{first}-{end}.zip"
        try:
            export(log, out, first, end, signing_key=_signing_key(cctx))
            digest = hashlib.sha256(out.read_bytes()).hexdigest()
            log.note_archive(first, end, f"{out} sha256={digest}")
        except EvidenceError as exc:
            _fail(f"not pruned: the archive could not be written: {exc}")
        click.echo(f"archived bundles [{first}, {end}) to {out} (sha256 {digest})")
    try:
        n = log.prune(cutoff)
    except EvidenceError as exc:
        _fail(str(exc))
    click.echo(f"pruned {n} bundle bodies")


@evidence.command()
@click.option("--no-vacuum", is_flag=True, help="Pack only; do not give freed space back to the file system.")
@click.pass_context
def compact(cctx: click.Context, no_vacuum: bool) -> None:
    """Pack every body still stored a row at a time (a log from before
    segments) into compressed segments, then VACUUM (which needs free
    space about the size of the packed log). The agent packs new bundles
    as it goes; this is for migrating an existing log at once."""
    log = _open_log(cctx)
    before = log.storage()
    try:
        made = log.compact(vacuum=not no_vacuum)
    except EvidenceError as exc:
        _fail(str(exc))
    after = log.storage()
    click.echo(f"{made} segment(s) made; {before['file_bytes']:,} -> {after['file_bytes']:,} bytes on disk")
