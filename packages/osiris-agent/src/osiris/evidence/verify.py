"""Verification: the whole log, one bundle, or an auditor's export.

:func:`verify_log` checks, in one streaming pass over the entries:

* every checkpoint's signature (the pinned key, the log's origin);
* that indexes run 0, 1, 2... with nothing missing;
* that every entry's content hashes to its stored leaf;
* the Merkle root recomputed from the content against every checkpoint;
* with ``signatures=True`` (the default), every entry's Ed25519 signature
  and its chain members: ``seq`` is its index, ``prev`` is the previous
  entry's leaf, ``log`` is this log, ``id``/``kind``/``recorded_at`` match;
  with ``signatures=False`` ("through checkpoints"), only the entries after
  the last checkpoint get those checks, the rest are covered by the signed
  roots, which is what makes a million entries verifiable in seconds;
* consistency proofs, as the log serves them, between successive
  checkpoints (every pair of a small log; of a large one, the newest 128
  pairs and 128 spread over the rest: the recomputed roots already show
  every tree a prefix of the next, these check the node table proofs are
  served from);
* that no checkpoint claims more entries than the log holds;
* given ``witnesses`` (checkpoints held outside the log: what the outbox
  says each sink acknowledged, attested checkpoints, a sink's own copy, a
  note an auditor kept), that the log is at least as long as each and has
  its root at its size: a log cut short together with its own checkpoints
  passes every other check.

A problem names the first bad index and what is wrong. When a checkpoint's
root does not match and the entries alone did not say why (an entry altered
together with its stored leaf, two entries swapped), the range that
checkpoint covers is re-checked entry by entry to name the index.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import json
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import merkle
from .errors import EvidenceError, VerificationError
from .keys import VerifyKey
from .log import ZERO_HASH, EvidenceLog, span_chunks
from .note import Checkpoint, parse_checkpoint

__all__ = ["Problem", "Report", "Witness", "log_witnesses", "verify_log", "verify_entry_in_log", "verify_export", "check_statement"]


@dataclass(frozen=True)
class Problem:
    what: str
    index: int | None = None  # the entry, when one is to blame
    checkpoint: int | None = None  # the checkpoint size, when one is to blame

    def __str__(self) -> str:
        where = f"index {self.index}" if self.index is not None else (
            f"checkpoint {self.checkpoint}" if self.checkpoint is not None else "log")
        return f"{where}: {self.what}"


@dataclass
class Report:
    entries: int = 0
    checkpoints: int = 0
    signatures: int = 0
    pruned: int = 0
    roots: int = 0
    consistency: int = 0
    witnesses: int = 0  # checkpoints held outside the log, compared with it
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    key_fingerprint: str | None = None  # the key everything was checked against

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_index(self) -> int | None:
        idx = [p.index for p in self.problems if p.index is not None]
        return min(idx) if idx else None

    def first_problem(self) -> Problem | None:
        if not self.problems:
            return None
        with_index = [p for p in self.problems if p.index is not None]
        return min(with_index, key=lambda p: p.index) if with_index else self.problems[0]

    def summary(self) -> str:
        text = (f"{self.entries} entries ({self.pruned} pruned), {self.checkpoints} checkpoints, "
                f"{self.signatures} signatures checked, {self.roots} roots and {self.consistency} consistency "
                "proofs checked")
        if self.witnesses:
            text += f", {self.witnesses} checkpoint(s) held outside the log compared"
        if self.ok:
            return f"ok: {text}"
        first = self.first_problem()
        return f"FAILED: {first} ({len(self.problems)} problem(s)); {text}"


@dataclass(frozen=True)
class Witness:
    """A checkpoint held outside the log's own table of checkpoints, and who
    holds it: a sink's copy, the outbox's record of what a sink
    acknowledged, an OpenTimestamps attestation, a note an auditor kept.
    Only such a copy catches a log cut short together with the checkpoints
    that covered its end."""

    source: str  # who holds it, as the problem will name it
    size: int  # the tree size it covers (for ``entries``: how many entries the holder received)
    note: bytes | None = None  # the signed checkpoint, when the holder has it
    entries: bool = False  # a count of entries delivered, not a checkpoint

    @classmethod
    def from_file(cls, path: Path | str) -> Witness:
        """A checkpoint note kept in a file (``--checkpoint FILE``)."""
        try:
            note = Path(path).read_bytes()
        except OSError as exc:
            raise EvidenceError(f"{path}: cannot read the checkpoint: {exc.strerror}") from None
        try:
            size = parse_checkpoint(note).size
        except (VerificationError, UnicodeDecodeError) as exc:
            raise EvidenceError(f"{path}: not a checkpoint note: {exc}") from None
        return cls(f"checkpoint file {path}", size, note)


def log_witnesses(log: EvidenceLog) -> list[Witness]:
    """What the log's own records say others hold: the newest checkpoint
    each sink acknowledged and how many bundles it received (the outbox's
    cursors), and every checkpoint that has an attestation (OpenTimestamps).
    These live in tables an editor of the log can change too; sinks' own
    copies (:meth:`EvidenceSink.latest_checkpoint`) and kept notes cannot be."""
    out: list[Witness] = []
    for c in log.cursors():
        if c["delivered"] <= 0:
            continue
        if c["kind"] == "checkpoint":
            note = log.checkpoint_at(int(c["delivered"]))
            out.append(Witness(f"sink {c['sink']} (acknowledged checkpoint {c['delivered']}, says the outbox)",
                               int(c["delivered"]), note.note if note else None))
        elif c["kind"] == "bundle":
            out.append(Witness(f"sink {c['sink']} (received entries [0, {c['delivered']}), says the outbox)",
                               int(c["delivered"]), entries=True))
    for a in log.attestations():
        note = log.checkpoint_at(int(a["size"]))
        out.append(Witness(f"{a['kind']} attestation of checkpoint {a['size']} "
                           f"({'complete' if a['complete'] else 'pending'})", int(a["size"]),
                           note.note if note else None))
    return out


def check_statement(body: bytes, sig: bytes | None, key: VerifyKey, *, index: int, prev: bytes | None, origin: str,
                    bundle_id: str | None = None, kind: str | None = None,
                    recorded_at: str | None = None) -> dict[str, Any]:
    """Signature and chain members of one entry; raises VerificationError.
    ``prev`` None: the previous entry is missing, so ``prev`` cannot be
    checked (the gap is the problem, not this entry)."""
    if sig is None or not key.verify(sig, body):
        raise VerificationError("signature does not verify (content altered, or not signed by this key)")
    try:
        st = json.loads(body)
    except ValueError:
        raise VerificationError("signed content is not JSON") from None
    if not isinstance(st, dict):
        raise VerificationError("signed content is not a JSON object")
    if st.get("seq") != index:
        raise VerificationError(f"signed seq is {st.get('seq')!r}, expected {index} (entries reordered, "
                                "removed or inserted)")
    if prev is not None and st.get("prev") != prev.hex():
        raise VerificationError("signed prev does not match the previous entry's leaf hash (chain broken)")
    if st.get("log") != origin:
        raise VerificationError(f"signed log is {st.get('log')!r}, expected {origin!r}")
    for member, want in (("id", bundle_id), ("kind", kind), ("recorded_at", recorded_at)):
        if want is not None and st.get(member) != want:
            raise VerificationError(f"signed {member} is {st.get(member)!r}, the index says {want!r}")
    return st


def _open_notes(raw_key: bytes, origin: str, notes: list[bytes]) -> list[Checkpoint | str]:
    """Parse and verify checkpoint notes (in a worker process when there are
    many): each a Checkpoint, or why it does not verify."""
    key = VerifyKey.from_raw(raw_key)
    out: list[Checkpoint | str] = []
    for note in notes:
        try:
            out.append(parse_checkpoint(note, key=key, origin=origin))
        except VerificationError as exc:
            out.append(str(exc))
    return out


_NOTES_PER_JOB = 4096


def _checkpoints(log: EvidenceLog, key: VerifyKey, report: Report, jobs: int = 1) -> list[Checkpoint]:
    good: list[Checkpoint] = []
    rows = log.checkpoint_notes()  # raw notes, parsed (and verified) here
    notes = [bytes(n) for _, n in rows]
    parts = [notes[i:i + _NOTES_PER_JOB] for i in range(0, len(notes), _NOTES_PER_JOB)]
    if jobs > 1 and len(parts) > 1:  # a year holds 100,000 checkpoints: their signatures on every core
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            opened = [x for part in pool.map(_open_notes, [key.raw] * len(parts), [log.origin] * len(parts), parts)
                      for x in part]
    else:
        opened = _open_notes(key.raw, log.origin, notes)
    last_time = ""
    for (size, _), cp in zip(rows, opened):
        report.checkpoints += 1
        if isinstance(cp, str):
            report.problems.append(Problem(f"checkpoint does not verify: {cp}", checkpoint=int(size)))
            continue
        if cp.size != size:
            report.problems.append(Problem(f"stored under size {size} but signed for {cp.size}", checkpoint=int(size)))
            continue
        if cp.time and cp.time < last_time:
            report.problems.append(Problem(f"time {cp.time} is before the previous checkpoint's", checkpoint=cp.size))
        last_time = cp.time or last_time
        good.append(cp)
    return good


def _recheck_range(log: EvidenceLog, key: VerifyKey, start: int, end: int, prev: bytes | None) -> Problem | None:
    """Full entry checks over [start, end): which entry breaks the root?"""
    expected = start
    for e in log.iter_entries(start, end):
        if e.index != expected:
            return Problem(f"entry missing (the next entry found has index {e.index})", index=expected)
        if e.body is not None:
            try:
                check_statement(e.body, e.sig, key, index=e.index, prev=prev, origin=log.origin,
                                bundle_id=e.bundle_id, kind=e.kind, recorded_at=e.recorded_at)
            except VerificationError as exc:
                return Problem(str(exc), index=e.index)
            prev = merkle.leaf_hash(e.body)
        else:
            prev = e.leaf
        expected += 1
    return None


#: Stands in for the leaf of a missing entry, so that leaves stay aligned
#: with indexes: every root over a gap fails (as it must) and problems after
#: it name the right entries and checkpoints.
_MISSING = b"\xff" * 32


def _outside(log: EvidenceLog, key: VerifyKey, witnesses: Sequence[Witness],
             report: Report) -> tuple[dict[int, list[tuple[bytes, str]]], list[Witness]]:
    """Roots to compare, by size, from witnesses that hold a signed note;
    and the witnesses whose size is to be compared with the log's."""
    roots: dict[int, list[tuple[bytes, str]]] = {}
    sized: list[Witness] = []
    for w in witnesses:
        report.witnesses += 1
        if w.note is not None:
            try:
                cp = parse_checkpoint(w.note, key=key, origin=log.origin)
            except (VerificationError, UnicodeDecodeError) as exc:
                report.problems.append(Problem(f"{w.source}: its checkpoint does not verify: {exc}"))
                continue
            if cp.size > 0:
                roots.setdefault(cp.size, []).append((cp.root, w.source))
            w = Witness(w.source, cp.size, w.note, w.entries)
        sized.append(w)
    return roots, sized


def verify_log(log: EvidenceLog, key: VerifyKey | None = None, *, signatures: bool = True,
               max_problems: int = 20, progress: Callable[[int], None] | None = None, jobs: int = 1,
               witnesses: Sequence[Witness] = ()) -> Report:
    """Verify the whole log (see the module docstring). ``jobs`` > 1 hashes
    checkpointed entries in that many worker processes (the tree, the roots
    and every signature check stay in this one). ``witnesses``: checkpoints
    held outside the log (:func:`log_witnesses`, sinks' copies, kept notes);
    a log shorter than any of them, or whose root at its size differs,
    fails, naming it."""
    report = Report()
    key = key or log.verify_key
    if key.raw != log.verify_key.raw:
        report.problems.append(Problem(
            f"the log says it was signed by key {log.verify_key.fingerprint[:16]}..., "
            f"not by the trusted key {key.fingerprint[:16]}..."))
    cps = _checkpoints(log, key, report, jobs)
    outside, sized = _outside(log, key, witnesses, report)
    stops = sorted(outside)
    size = log.size()
    # Entries covered by a checkpoint are checked by hashing alone unless
    # every signature is wanted; the rest get signature and chain checks.
    full_from = 0 if signatures else min(cps[-1].size if cps else 0, size)
    sha256 = hashlib.sha256
    tree = merkle.RootBuilder()
    cp_list = list(cps)
    cp_pos = 0
    prev_cp_size, prev_cp_leaf = 0, ZERO_HASH
    prev: bytes | None = ZERO_HASH
    missing: list[int] = []  # indexes of missing entries, in order
    stop_pos = 0  # the next size in ``stops``

    def problem(p: Problem) -> None:
        report.problems.append(p)

    def feed(leaves: list[bytes]) -> None:
        """Add leaves (one per index, _MISSING for a missing entry), checking
        the root at every checkpoint they pass."""
        nonlocal cp_pos, prev_cp_size, prev_cp_leaf, stop_pos
        i = 0
        while i < len(leaves):
            stop = len(leaves)
            if cp_pos < len(cp_list):
                stop = min(stop, i + cp_list[cp_pos].size - tree.size)
            if stop_pos < len(stops):
                stop = min(stop, i + stops[stop_pos] - tree.size)
            tree.extend(leaves[i:stop])
            i = stop
            while stop_pos < len(stops) and stops[stop_pos] == tree.size:
                here = tree.root()
                for root, source in outside[stops[stop_pos]]:
                    report.roots += 1
                    if root != here:
                        problem(Problem(f"{source}: its checkpoint {tree.size} is signed for another root than the "
                                        f"log's entries [0, {tree.size}) have (the log was rewritten or forked)",
                                        checkpoint=tree.size))
                stop_pos += 1
            while cp_pos < len(cp_list) and cp_list[cp_pos].size == tree.size:
                cp = cp_list[cp_pos]
                report.roots += 1
                if tree.root() != cp.root:
                    if missing and missing[0] < cp.size:
                        # The gap is the problem: nothing else in the range is to blame.
                        problem(Problem(f"root does not match the entries [0, {cp.size}): entry {missing[0]} "
                                        "is missing", checkpoint=cp.size))
                    else:
                        found = None if signatures else _recheck_range(
                            log, key, prev_cp_size, cp.size, None if prev_cp_leaf == _MISSING else prev_cp_leaf)
                        if found is not None and all(p.index != found.index for p in report.problems):
                            problem(found)
                        problem(Problem(f"root does not match the entries [0, {cp.size})", checkpoint=cp.size))
                prev_cp_size, prev_cp_leaf = cp.size, leaves[i - 1]
                cp_pos += 1

    # Hashing pass over [0, full_from): content against stored leaves, roots;
    # spans of entries hashed in worker processes when jobs > 1.
    spans = [(s, min(s + _SPAN, full_from)) for s in range(0, full_from, _SPAN)]
    for leaves, probs, pruned in _hashed_spans(log, spans, jobs):
        report.problems.extend(Problem(what, index=idx) for idx, what in probs)
        missing.extend(idx for idx, what in probs if what.startswith(_GAP))
        report.pruned += pruned
        if leaves:
            feed(leaves)
            prev = None if leaves[-1] == _MISSING else leaves[-1]
        if progress is not None:
            progress(tree.size)
        if len(report.problems) >= max_problems:
            break
    expected = full_from
    # Full pass over [full_from, size): signatures and chain, entry by entry.
    cols = "idx, bundle_id, kind, recorded_at, body, sig, leaf"
    for rows in log.chunks(full_from, size, cols):
        if len(report.problems) >= max_problems:
            break
        leaves = []
        for idx, bundle_id, kind, recorded_at, body, sig, stored in rows:
            if idx != expected:
                problem(Problem(f"{_GAP} (the next entry found has index {idx})", index=expected))
                missing.extend(range(expected, idx))
                leaves.extend([_MISSING] * (idx - expected))
                prev = None  # the gap is reported; the entry after it is not to blame
            if body is not None:
                leaf = sha256(b"\x00" + body).digest()
                if leaf != stored:
                    problem(Problem(_altered(body), index=idx))
                try:
                    check_statement(body, sig, key, index=idx, prev=prev, origin=log.origin, bundle_id=bundle_id,
                                    kind=kind, recorded_at=recorded_at)
                    report.signatures += 1
                except VerificationError as exc:
                    problem(Problem(str(exc), index=idx))
            else:
                leaf = bytes(stored)
                report.pruned += 1
            leaves.append(leaf)
            prev = leaf
            expected = idx + 1
        feed(leaves)
        if progress is not None:
            progress(tree.size)
    report.entries = tree.size - len(missing)
    for cp in cp_list[cp_pos:]:
        problem(Problem(f"covers {cp.size} entries but the log holds {tree.size} (entries removed from the end?)",
                        index=tree.size, checkpoint=cp.size))
    # Checkpoints held elsewhere: the log must be at least as long as each
    # (truncation removes the log's own checkpoints with its entries).
    for w in sized:
        if w.size > tree.size:
            what = (f"received entries [0, {w.size})" if w.entries else f"holds checkpoint {w.size}")
            problem(Problem(f"{w.source} {what}, but the log holds {tree.size} entries: the newest entries were "
                            "removed (the log was truncated)", index=tree.size))
        elif not w.entries and w.note is None and log.checkpoint_at(w.size) is None:
            problem(Problem(f"{w.source}: the log no longer has checkpoint {w.size}", checkpoint=w.size))
    # Consistency proofs as the log serves them. Every checkpoint's root was
    # recomputed from the entries above, which already shows each tree a
    # prefix of the next; these check the node table the log serves proofs
    # from, so a bounded sample of pairs is enough: the newest, and pairs
    # spread over the rest.
    pairs = [(a, b) for a, b in zip(cps, cps[1:]) if b.size <= tree.size]
    if len(pairs) > 2 * _SERVED_PROOFS:
        step = len(pairs) / _SERVED_PROOFS
        pairs = [pairs[int(i * step)] for i in range(_SERVED_PROOFS)] + pairs[-_SERVED_PROOFS:]
    for a, b in pairs:
        try:
            ok = merkle.verify_consistency(a.size, b.size, a.root, b.root, log.consistency_proof(a.size, b.size))
        except EvidenceError:
            ok = False
        report.consistency += 1
        if not ok:
            problem(Problem(f"no valid consistency proof from checkpoint {a.size}", checkpoint=b.size))
    return report


_SPAN = 65536
#: Consistency proofs served by the log that verification checks: this many
#: spread over the log, and this many of the newest.
_SERVED_PROOFS = 128


_GAP = "entry missing"


def _altered(body: bytes) -> str:
    if not body:  # log.DAMAGED: no real bundle is empty
        return "content unreadable: the segment (or tail row) holding it is missing or damaged"
    return "content does not match its stored leaf hash (entry altered)"


def _hash_rows(rows: list[tuple], expected: int, problems: list[tuple[int, str]]) -> tuple[list[bytes], int]:
    """Leaves of (idx, body, leaf) rows from index ``expected`` on, one per
    index (:data:`_MISSING` for a gap); records gaps and altered entries."""
    sha256 = hashlib.sha256
    if rows[0][0] != expected or rows[-1][0] - rows[0][0] + 1 != len(rows):
        leaves = []
        for idx, body, stored in rows:
            if idx != expected:
                for gap in range(expected, idx):
                    problems.append((gap, f"{_GAP} (the next entry found has index {idx})"))
                    leaves.append(_MISSING)
            leaves.append(sha256(b"\x00" + body).digest() if body is not None else bytes(stored))
            if body is not None and leaves[-1] != stored:
                problems.append((idx, _altered(body)))
            expected = idx + 1
        return leaves, expected
    leaves = [sha256(b"\x00" + b).digest() if b is not None else bytes(s) for _, b, s in rows]
    stored = [s for _, _, s in rows]
    if leaves != stored:
        for (idx, body, _), a, b in zip(rows, leaves, stored):
            if a != b:
                problems.append((idx, _altered(body)))
    return leaves, rows[-1][0] + 1


def _hash_span_rows(rows_iter, start: int, end: int) -> tuple[list[bytes], list[tuple[int, str]], int]:
    leaves: list[bytes] = []
    problems: list[tuple[int, str]] = []
    pruned = 0
    expected = start
    for rows in rows_iter:
        more, expected = _hash_rows(rows, expected, problems)
        leaves.extend(more)
        pruned += sum(1 for r in rows if r[1] is None)
    for gap in range(expected, end):
        problems.append((gap, f"{_GAP} (entries [{expected}, {end}) are not in the log)"))
        leaves.append(_MISSING)
    return leaves, problems, pruned


def _hash_span(path: str, start: int, end: int) -> tuple[bytes, list[tuple[int, str]], int]:
    """In a worker process: the span's leaves as one blob (32 bytes each)."""
    leaves, problems, pruned = _hash_span_rows(span_chunks(path, start, end), start, end)
    return b"".join(leaves), problems, pruned


def _hashed_spans(log: EvidenceLog, spans: list[tuple[int, int]], jobs: int):
    """(leaves, problems, pruned) per span, in order."""
    if jobs <= 1 or len(spans) < 2:
        for start, end in spans:
            yield _hash_span_rows(log.chunks(start, end, "idx, body, leaf"), start, end)
        return
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        results = pool.map(_hash_span, [str(log.path)] * len(spans), [s for s, _ in spans], [e for _, e in spans])
        for blob, problems, pruned in results:
            yield [blob[i:i + 32] for i in range(0, len(blob), 32)], problems, pruned


def verify_entry_in_log(log: EvidenceLog, ref: str, key: VerifyKey | None = None) -> dict[str, Any]:
    """One bundle: signature, chain members, and inclusion in the latest
    checkpoint (proof from the node table). Raises VerificationError."""
    key = key or log.verify_key
    e = log.find(ref)
    if e.body is None:
        raise VerificationError(f"bundle {e.bundle_id} (index {e.index}) was pruned; only its leaf hash remains")
    prev = ZERO_HASH if e.index == 0 else log.entry(e.index - 1).leaf
    st = check_statement(e.body, e.sig, key, index=e.index, prev=prev, origin=log.origin, bundle_id=e.bundle_id,
                         kind=e.kind, recorded_at=e.recorded_at)
    leaf = merkle.leaf_hash(e.body)
    if leaf != e.leaf:
        raise VerificationError("content does not match its stored leaf hash")
    out: dict[str, Any] = {"index": e.index, "id": e.bundle_id, "leaf": leaf.hex(), "statement": st,
                           "checkpoint": None}
    cp = log.latest_checkpoint()
    if cp is not None and cp.size > e.index:
        parse_checkpoint(cp.note, key=key, origin=log.origin)
        proof = log.inclusion_proof(e.index, cp.size)
        if not merkle.verify_inclusion(leaf, e.index, cp.size, proof, cp.root):
            raise VerificationError(f"inclusion proof against checkpoint {cp.size} does not verify")
        out["checkpoint"] = {"size": cp.size, "time": cp.time, "proof": [p.hex() for p in proof]}
    return out


# -- exports ---------------------------------------------------------------------------------


def verify_export(path: Path | str, key: VerifyKey | None = None) -> Report:
    """Check an export (zip or unpacked directory) offline: signatures,
    the chain between every pair of neighbours, that the bundles are exactly
    the exported range, inclusion proofs, checkpoints and the consistency
    proofs between every pair of consecutive checkpoints. ``key``: the key
    the auditor trusts; default the export's own public-key.pem (then the
    report carries a warning: only the fingerprint, compared with one
    obtained independently, says whose key that is).

    The range [first_index, end_index) comes from ``manifest.json``, whose
    signature (``manifest.json.sig``, when the export was made with the
    signing key) binds it; it must lie under the signed anchor checkpoint
    every inclusion proof is made against. Malformed files are named
    problems, never exceptions."""
    files = _ExportFiles(Path(path))
    report = Report()

    def bad(what: str, **kw: Any) -> None:
        report.problems.append(Problem(what, **kw))

    try:
        manifest_bytes = files.read("manifest.json")
        manifest = json.loads(manifest_bytes)
        if not isinstance(manifest, dict):
            raise ValueError("manifest.json is not a JSON object")
    except KeyError:
        bad("not an evidence export: manifest.json is missing")
        return report
    except ValueError as exc:
        bad(f"manifest.json: not valid JSON: {exc}")
        return report
    try:
        export_key = VerifyKey.from_pem(files.read("public-key.pem"), "public-key.pem")
    except KeyError:
        bad("not an evidence export: public-key.pem is missing")
        return report
    except EvidenceError as exc:
        bad(str(exc))
        return report
    if key is None:
        key = export_key
        report.warnings.append(
            "no trusted key given (--key): verified against the export's own public-key.pem, fingerprint "
            f"{key.fingerprint}; an export re-signed with another key verifies too. Compare this fingerprint "
            "with one obtained independently, or pass --key")
    report.key_fingerprint = key.fingerprint
    if key.raw != export_key.raw:
        bad(f"public-key.pem (fingerprint {export_key.fingerprint}) is not the trusted key ({key.fingerprint})")
    origin = manifest.get("origin")
    first, end = manifest.get("first_index"), manifest.get("end_index")
    if not isinstance(origin, str) or not isinstance(first, int) or not isinstance(end, int) or not 0 <= first < end:
        bad("manifest.json: origin, first_index and end_index missing or malformed "
            f"(origin={origin!r}, first_index={first!r}, end_index={end!r})")
        return report
    if manifest.get("key_fingerprint_sha256") not in (None, export_key.fingerprint):
        bad(f"manifest.json: key_fingerprint_sha256 {manifest.get('key_fingerprint_sha256')!r} is not the "
            f"fingerprint of public-key.pem ({export_key.fingerprint})")
    try:
        manifest_sig = files.read("manifest.json.sig")
    except KeyError:
        manifest_sig = None
        report.warnings.append(
            "manifest.json is not signed (no manifest.json.sig): the range it names "
            f"[{first}, {end}) is checked against the signed checkpoints, but bundles cut from its ends "
            "would not be noticed")
    if manifest_sig is not None:
        if key.verify(manifest_sig, manifest_bytes):
            report.signatures += 1
        else:
            bad("manifest.json.sig: the manifest's signature does not verify (manifest altered, or another key)")

    # Checkpoints: every note signed by the key, for this origin.
    cps: dict[int, Checkpoint] = {}
    for name in files.names("checkpoints/", ".note"):
        report.checkpoints += 1
        try:
            cp = parse_checkpoint(files.read(name), key=key, origin=origin)
            cps[cp.size] = cp
        except VerificationError as exc:
            bad(f"{name}: {exc}")
    listed = manifest.get("checkpoints")
    if isinstance(listed, list):
        for size in listed:
            if size not in cps:
                bad(f"checkpoints/{size}.note: listed in manifest.json but missing or not verifying", checkpoint=size)
    sizes = sorted(cps)
    if not sizes:
        bad("no verifying checkpoint in checkpoints/: nothing signed covers the bundles")
        return report
    anchor = sizes[-1]
    if manifest.get("anchor_checkpoint") not in (None, anchor):
        bad(f"manifest.json: anchor_checkpoint {manifest.get('anchor_checkpoint')!r}, but the largest signed "
            f"checkpoint is {anchor}")
    if end > anchor:
        bad(f"manifest.json: end_index {end} is beyond the anchor checkpoint, which covers {anchor} entries")

    # Consistency: a valid proof between every pair of consecutive checkpoints.
    for a, b in zip(sizes, sizes[1:]):
        name = f"consistency/{a}-{b}.json"
        report.consistency += 1
        try:
            c = json.loads(files.read(name))
            ok = (c["from"] == a and c["to"] == b
                  and merkle.verify_consistency(a, b, cps[a].root, cps[b].root, [bytes.fromhex(h) for h in c["path"]]))
        except KeyError as exc:
            bad(f"{name}: missing" if exc.args == (name,) else f"{name}: malformed (no {exc})", checkpoint=b)
            continue
        except (ValueError, TypeError) as exc:
            bad(f"{name}: malformed: {exc}", checkpoint=b)
            continue
        if not ok:
            bad(f"{name}: consistency proof does not verify", checkpoint=b)

    # Bundles: exactly [first, end), each signed, chained to its neighbour,
    # and included in the anchor checkpoint.
    leaves: dict[int, bytes] = {}
    statements: dict[int, dict[str, Any]] = {}
    present: set[int] = set()
    for name in files.names("bundles/", ".json"):
        stem = Path(name).stem
        if not stem.isdigit():
            bad(f"{name}: not a bundle file name (<index>.json)")
            continue
        idx = int(stem)
        present.add(idx)
        if not first <= idx < end:
            bad(f"{name}: outside the exported range [{first}, {end})", index=idx)
            continue
        body = files.read(name)
        report.entries += 1
        try:
            sig = files.read(name[:-5] + ".sig")
        except KeyError:
            bad(f"{name}: its signature {name[:-5]}.sig is missing", index=idx)
            continue
        if not key.verify(sig, body):
            bad(f"{name}: signature does not verify", index=idx)
            continue
        report.signatures += 1
        try:
            st = json.loads(body)
        except ValueError:
            bad(f"{name}: signed content is not JSON", index=idx)
            continue
        if not isinstance(st, dict) or st.get("seq") != idx or st.get("log") != origin:
            bad(f"{name}: signed seq/log do not match the file name and origin", index=idx)
            continue
        leaves[idx] = merkle.leaf_hash(body)
        statements[idx] = st
        pname = f"proofs/{stem}.json"
        try:
            proof = json.loads(files.read(pname))
            tree_size, path_ = proof["tree_size"], [bytes.fromhex(h) for h in proof["path"]]
            if proof.get("index", idx) != idx:
                raise ValueError(f"index {proof.get('index')!r}, expected {idx}")
        except KeyError as exc:
            bad(f"{name}: no inclusion proof ({pname})" if exc.args == (pname,)
                else f"{pname}: malformed (no {exc})", index=idx)
            continue
        except (ValueError, TypeError, AttributeError) as exc:
            bad(f"{pname}: malformed: {exc}", index=idx)
            continue
        report.roots += 1
        cp = cps.get(tree_size)
        if cp is None:
            bad(f"{pname}: proves inclusion in checkpoint {tree_size!r}, which is not in the export", index=idx)
        elif not merkle.verify_inclusion(leaves[idx], idx, cp.size, path_, cp.root):
            bad(f"{name}: inclusion proof does not verify", index=idx)
    for idx in range(first, end):
        if idx not in present:
            bad(f"bundles/{idx:012d}.json: missing from the exported range [{first}, {end})", index=idx)
    for idx in range(first + 1, end):
        st = statements.get(idx)
        if st is None:
            continue
        if idx - 1 not in leaves:
            bad(f"signed prev cannot be checked: bundle {idx - 1} is missing or did not verify (chain broken)",
                index=idx)
        elif st.get("prev") != leaves[idx - 1].hex():
            bad("signed prev does not match the previous bundle (chain broken)", index=idx)
    expect = manifest.get("bundles")
    if expect is not None and expect != end - first:
        bad(f"manifest.json: lists {expect} bundles, but its range [{first}, {end}) holds {end - first}")
    return report


class _ExportFiles:
    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self._zip = None
            self._names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        else:
            try:
                self._zip = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as exc:
                raise EvidenceError(f"{path}: not a zip file: {exc}") from None
            self._names = sorted(self._zip.namelist())

    def names(self, prefix: str, suffix: str) -> list[str]:
        return [n for n in self._names if n.startswith(prefix) and n.endswith(suffix)]

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            try:
                return self._zip.read(name)
            except KeyError:
                raise KeyError(name) from None
        p = self.path / name
        if not p.is_file():
            raise KeyError(name)
        return p.read_bytes()

