"""The auditor's export: a zip that verifies offline, with OpenSSL alone for
signatures and with ``osiris evidence verify-export`` for everything.

Layout::

    VERIFY.md                    how to check it (generated for this export)
    manifest.json                origin, key fingerprint, range, counts
    manifest.json.sig            its raw Ed25519 signature (when the signing key was at hand)
    public-key.pem               the appliance's Ed25519 public key (SPKI PEM)
    public-key.vkey              the same as a C2SP note verifier key
    openssl-verify.sh            every signature checked with the openssl CLI
    bundles/<index>.json         the exact signed bytes (RFC 8785 JSON)
    bundles/<index>.sig          the raw 64-byte Ed25519 signature
    proofs/<index>.json          inclusion proof in the anchor checkpoint
    checkpoints/<size>.note      signed C2SP checkpoints
    checkpoints/<size>.note.<kind>  attestations (e.g. .ots OpenTimestamps proofs)
    consistency/<m>-<n>.json     consistency proofs between included checkpoints

Checkpoints included: the first that covers the first exported bundle,
every attested one after it, and the anchor (the latest, against which all
inclusion proofs are made), with a consistency proof between each pair in
order. Indexes in file names are zero-padded to 12 digits so that they sort.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .canonical import utc_text
from .errors import EvidenceError
from .keys import SigningKey, VerifyKey
from .log import EvidenceLog
from .merkle import leaf_hash

__all__ = ["export", "ExportSummary"]

EXPORT_FORMAT = "osiris-evidence-export/1"


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    first: int
    end: int  # exclusive
    anchor: int
    checkpoints: list[int]

    @property
    def bundles(self) -> int:
        return self.end - self.first


def _name(index: int) -> str:
    return f"{index:012d}"


def export(log: EvidenceLog, out: Path | str, first: int, end: int, *, key: VerifyKey | None = None,
           signing_key: SigningKey | None = None, now: datetime | None = None) -> ExportSummary:
    """Write entries [first, end) with proofs to ``out`` (a new zip file).
    With ``signing_key`` (the log's), ``manifest.json.sig`` signs the
    manifest, and so the range: bundles cut from the ends of the export are
    then detected too."""
    out = Path(out)
    key = key or log.verify_key
    if signing_key is not None and signing_key.verify_key.raw != log.verify_key.raw:
        raise EvidenceError("the signing key given for the export's manifest is not this log's key")
    now = now or datetime.now(timezone.utc)
    anchor = log.latest_checkpoint()
    if anchor is None:
        raise EvidenceError("the log has no checkpoint yet: make one first (`osiris evidence checkpoint`)")
    if end > anchor.size:
        raise EvidenceError(
            f"entries up to {end - 1} requested but the latest checkpoint covers only {anchor.size}: "
            "make a checkpoint first (`osiris evidence checkpoint`)"
        )
    if not 0 <= first < end:
        raise EvidenceError(f"nothing to export in [{first}, {end})")
    first_cp = log.checkpoint_covering(first)
    assert first_cp is not None
    # Attested checkpoints in between are exported too, each with its proof of consistency.
    attestations = log.attestations(sizes=(first_cp.size, anchor.size))
    sizes = sorted({first_cp.size, anchor.size} | {a["size"] for a in attestations})
    cps = [log.checkpoint_at(s) for s in sizes]
    if out.exists():
        raise EvidenceError(f"{out}: already exists; refusing to overwrite")
    tmp = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        example = None
        for e in log.iter_entries(first, end):
            if e.body is None or e.sig is None:
                raise EvidenceError(f"entry {e.index} was pruned; export a later range")
            n = _name(e.index)
            z.writestr(f"bundles/{n}.json", e.body)
            z.writestr(f"bundles/{n}.sig", e.sig)
            proof = log.inclusion_proof(e.index, anchor.size)
            z.writestr(f"proofs/{n}.json", json.dumps({
                "index": e.index, "tree_size": anchor.size, "leaf": leaf_hash(e.body).hex(),
                "path": [p.hex() for p in proof], "checkpoint": f"checkpoints/{anchor.size}.note",
            }, indent=1))
            example = example or e
        for cp in cps:
            z.writestr(f"checkpoints/{cp.size}.note", cp.note)
        for a in attestations:
            z.writestr(f"checkpoints/{a['size']}.note.{a['kind']}", a["data"])
        for a, b in zip(cps, cps[1:]):
            z.writestr(f"consistency/{a.size}-{b.size}.json", json.dumps({
                "from": a.size, "to": b.size, "path": [p.hex() for p in log.consistency_proof(a.size, b.size)],
            }, indent=1))
        z.writestr("public-key.pem", key.pem())
        z.writestr("public-key.vkey", key.note_verifier(log.origin) + "\n")
        manifest = {
            "format": EXPORT_FORMAT,
            "origin": log.origin,
            "key_fingerprint_sha256": key.fingerprint,
            "key_id": key.key_id(log.origin).hex(),
            "first_index": first,
            "end_index": end,
            "bundles": end - first,
            "anchor_checkpoint": anchor.size,
            "checkpoints": sizes,
            "exported_at": utc_text(now),
        }
        manifest_bytes = json.dumps(manifest, indent=2).encode()
        z.writestr("manifest.json", manifest_bytes)
        if signing_key is not None:
            z.writestr("manifest.json.sig", signing_key.sign(manifest_bytes))
        z.writestr(zipfile.ZipInfo("openssl-verify.sh", date_time=now.timetuple()[:6]), _SCRIPT)
        z.getinfo("openssl-verify.sh").external_attr = 0o755 << 16
        z.writestr("VERIFY.md", _verify_md(log.origin, key, first, end, anchor.size, sizes, example.index,
                                           signing_key is not None))
    tmp.rename(out)
    return ExportSummary(out, first, end, anchor.size, sizes)


_SCRIPT = r"""#!/bin/sh
# Check every bundle signature and every checkpoint signature in this export
# with the openssl command line alone (OpenSSL 3.0 or later). Run it from the
# directory the export was unpacked into. Exit status 0: all verified.
set -u
key=public-key.pem
bad=0
n=0
for f in bundles/*.json; do
    sig="${f%.json}.sig"
    if openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$f" -sigfile "$sig" >/dev/null 2>&1; then
        n=$((n + 1))
    else
        echo "BAD signature: $f" >&2; bad=1
    fi
done
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
for c in checkpoints/*.note; do
    # The signed text is everything before the blank line; the signature
    # line is "<em dash> <name> <base64(4-byte key id || 64-byte signature)>".
    awk 'NF == 0 { exit } { print }' "$c" > "$tmp/text"
    tail -n 1 "$c" | awk '{ print $3 }' | openssl base64 -d -A | tail -c 64 > "$tmp/sig"
    if openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$tmp/text" -sigfile "$tmp/sig" >/dev/null 2>&1; then
        n=$((n + 1))
    else
        echo "BAD signature: $c" >&2; bad=1
    fi
done
echo "$n signatures verified"
exit $bad
"""


def _verify_md(origin: str, key: VerifyKey, first: int, end: int, anchor: int, sizes: list[int], example: int,
               manifest_signed: bool) -> str:
    n = _name(example)
    manifest = ("`manifest.json.sig` is the raw signature of `manifest.json`, which names the range: check it\n"
                "the same way (`-in manifest.json -sigfile manifest.json.sig`), then bundles cut from either end\n"
                "are detected too." if manifest_signed else
                "`manifest.json` is not signed in this export (it was made without the signing key at hand):\n"
                "the range it names is checked against the signed checkpoints only.")
    return f"""# Verifying this evidence export

Exported from the Osiris evidence log **{origin}**: bundles {first} to {end - 1}
({end - first} bundles), with inclusion proofs in checkpoint **{anchor}** and
{len(sizes)} checkpoint(s) in all.

The appliance's Ed25519 public key is `public-key.pem`; its SHA-256
fingerprint (of the raw 32-byte key) is

    {key.fingerprint}

Compute it yourself with OpenSSL (the raw key is the last 32 bytes of the
DER public key):

    openssl pkey -pubin -in public-key.pem -outform DER | tail -c 32 | openssl dgst -sha256

and compare it with the fingerprint you obtained independently (from the
MSP, an earlier export, or `osiris evidence key` on the appliance) before
trusting anything below: a signature proves only that the holder of *this*
key signed.

{manifest}

## 1. One bundle's signature, with OpenSSL alone

Each bundle is stored as the exact bytes that were signed
(`bundles/{n}.json`, canonical JSON per RFC 8785) and its raw 64-byte
Ed25519 signature (`bundles/{n}.sig`):

    openssl pkeyutl -verify -pubin -inkey public-key.pem -rawin \\
        -in bundles/{n}.json -sigfile bundles/{n}.sig

OpenSSL prints `Signature Verified Successfully`. Change one byte of the
.json file and it prints `Signature Verification Failure`.
`sh openssl-verify.sh` does this for every bundle and every checkpoint.

## 2. A checkpoint's signature, with OpenSSL alone

Checkpoints are C2SP signed notes (c2sp.org/tlog-checkpoint): the origin,
the tree size, the base64 Merkle root, a `time` line, a blank line, then
`— <name> <base64 of 4-byte key id || 64-byte signature>`. The signature
covers the text before the blank line, final newline included:

    awk 'NF == 0 {{ exit }} {{ print }}' checkpoints/{anchor}.note > text
    tail -n 1 checkpoints/{anchor}.note | awk '{{ print $3 }}' | openssl base64 -d -A | tail -c 64 > sig
    openssl pkeyutl -verify -pubin -inkey public-key.pem -rawin -in text -sigfile sig

## 3. That a bundle is in the log (inclusion proof)

The log is a Merkle tree in the RFC 6962 shape. A bundle's leaf hash is
SHA-256 of a zero byte followed by the bundle's bytes:

    (printf '\\000'; cat bundles/{n}.json) | openssl dgst -sha256

which equals `leaf` in `proofs/{n}.json`. The `path` there, combined as RFC
9162 section 2.1.3.2 describes (node = SHA-256(0x01 || left || right)),
gives the root in `checkpoints/{anchor}.note`. Every bundle commits to its
predecessor too: its signed `prev` is the previous bundle's leaf hash and
its signed `seq` is its index, so nothing can be removed or reordered
without breaking a signature.

## 4. Everything at once, with osiris

    osiris evidence verify-export THIS.zip --key TRUSTED.pem

checks every signature, that the bundles are exactly {first} to {end - 1} and
each one's signed `prev` is its predecessor's leaf, every inclusion proof,
every checkpoint and the consistency proofs between consecutive checkpoints
(`consistency/<m>-<n>.json`: the later tree extends the earlier one). It
prints the fingerprint of the key it checked against; without `--key` it
uses this export's own `public-key.pem` and warns: an export re-signed with
another key would verify too, only the fingerprint tells.

## 5. Timestamps

`checkpoints/<size>.note.ots`, where present, is an OpenTimestamps proof
for that checkpoint file: `ots verify checkpoints/<size>.note.ots` (with the
standard OpenTimestamps client and a Bitcoin node or block explorer) shows
the Bitcoin block that proves the checkpoint, and so every bundle it
covers, existed by that block's time.
"""
