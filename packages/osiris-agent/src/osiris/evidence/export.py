"""The auditor's export: a zip that verifies offline, with OpenSSL alone for
signatures and with ``osiris evidence verify-export`` for everything.

Layout::

    VERIFY.md                    how to check it: every file format, every check a command (generated)
    verify.py                    the standalone verifier: Python's standard library and openssl only
    manifest.json                origin, key fingerprint, range, counts
    manifest.json.sig            its raw Ed25519 signature (when the signing key was at hand)
    public-key.pem               the appliance's Ed25519 public key (SPKI PEM)
    public-key.vkey              the same as a C2SP note verifier key
    openssl-verify.sh            every signature (manifest, bundles, checkpoints) checked with the openssl CLI
    bundles/<index>.json         the exact signed bytes (RFC 8785 JSON)
    bundles/<index>.sig          the raw 64-byte Ed25519 signature
    proofs/<index>.json          inclusion proof in the anchor checkpoint
    checkpoints/<size>.note      signed C2SP checkpoints
    checkpoints/<size>.note.<kind>  attestations (e.g. .ots OpenTimestamps proofs)
    consistency/<m>-<n>.json     consistency proofs between included checkpoints

Checkpoints included: the first that covers the first exported bundle,
every attested one after it, the newest attested ones (complete and
pending, wherever they are), checkpoints kept from earlier exports
(``--pin``), and the anchor (the log's newest, against which all inclusion
proofs are made), with a consistency proof between each pair in order. Indexes in file names are zero-padded to 12 digits so that they sort.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import merkle
from .canonical import utc_text
from .errors import EvidenceError, VerificationError
from .keys import SigningKey, VerifyKey
from .log import EvidenceLog
from .merkle import leaf_hash
from .note import Checkpoint, parse_checkpoint

#: The standalone verifier (standard library only), exported as verify.py.
STANDALONE = Path(__file__).with_name("standalone.py")

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


def _pinned(log: EvidenceLog, notes: Sequence[bytes], anchor: Checkpoint) -> list[Checkpoint]:
    """Checkpoints an auditor kept from an earlier export, each proven to be
    extended by the log; a log that does not is refused, naming why."""
    out = []
    for note in notes:
        try:
            cp = parse_checkpoint(note, key=log.verify_key, origin=log.origin)
        except (VerificationError, UnicodeDecodeError) as exc:
            raise EvidenceError(f"pinned checkpoint: not one of this log's: {exc}") from None
        if cp.size > anchor.size:
            raise EvidenceError(f"pinned checkpoint {cp.size}: the log's newest checkpoint covers only {anchor.size} "
                                "entries: the log was truncated since that checkpoint was exported")
        proof = log.consistency_proof(cp.size, anchor.size)
        if not merkle.verify_consistency(cp.size, anchor.size, cp.root, anchor.root, proof):
            raise EvidenceError(f"pinned checkpoint {cp.size}: the log does not extend it (rewritten or forked)")
        out.append(cp)
    return out


def export(log: EvidenceLog, out: Path | str, first: int, end: int, *, key: VerifyKey | None = None,
           signing_key: SigningKey | None = None, now: datetime | None = None,
           pins: Sequence[bytes] = ()) -> ExportSummary:
    """Write entries [first, end) with proofs to ``out`` (a new zip file).
    With ``signing_key`` (the log's), ``manifest.json.sig`` signs the
    manifest, and so the range: bundles cut from the ends of the export are
    then detected too. The anchor is the log's newest checkpoint, and the
    newest attested (anchored) checkpoint is included with its attestation,
    so the next audit can pin the log. ``pins``: checkpoint notes kept from
    earlier exports, included with consistency proofs to the anchor
    (``verify.py --checkpoint`` checks them offline)."""
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
    # Attested checkpoints in between are exported too, each with its proof
    # of consistency, and the newest attested ones (pending and complete)
    # wherever they are: the log's anchoring, for the next audit.
    attestations = log.attestations(sizes=(first_cp.size, anchor.size))
    everything = log.attestations(sizes=(0, anchor.size))
    newest = [max((a for a in everything if a["complete"] is c), key=lambda a: a["size"], default=None)
              for c in (True, False)]
    attestations += [a for a in newest if a is not None and a not in attestations]
    pinned = {cp.size: cp for cp in _pinned(log, pins, anchor)}
    sizes = sorted({first_cp.size, anchor.size} | {a["size"] for a in attestations} | set(pinned))
    cps = [pinned.get(s) or log.checkpoint_at(s) for s in sizes]
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
            "attested": sorted({a["size"] for a in attestations}),
            "pinned": sorted(pinned),
            "exported_at": utc_text(now),
        }
        manifest_bytes = json.dumps(manifest, indent=2).encode()
        z.writestr("manifest.json", manifest_bytes)
        if signing_key is not None:
            z.writestr("manifest.json.sig", signing_key.sign(manifest_bytes))
        for name, text in (("openssl-verify.sh", _SCRIPT), ("verify.py", STANDALONE.read_text())):
            info = zipfile.ZipInfo(name, date_time=now.timetuple()[:6])
            info.external_attr = 0o755 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, text)
        z.writestr("VERIFY.md", _verify_md(log.origin, key, first, end, anchor.size, sizes, example.index,
                                           signing_key is not None))
    tmp.rename(out)
    return ExportSummary(out, first, end, anchor.size, sizes)


_SCRIPT = r"""#!/bin/sh
# Check every signature in this export with the openssl command line alone
# (OpenSSL 3.0 or later): the manifest's, every bundle's and every
# checkpoint's. Run it from the directory the export was unpacked into.
# Exit status 0: all verified.
set -u
key=public-key.pem
bad=0
n=0
check() {  # check DATA SIG NAME
    if openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$1" -sigfile "$2" >/dev/null 2>&1; then
        n=$((n + 1))
    else
        echo "BAD signature: $3" >&2; bad=1
    fi
}
if [ -f manifest.json.sig ]; then
    check manifest.json manifest.json.sig manifest.json
else
    echo "note: manifest.json is not signed (no manifest.json.sig)" >&2
fi
for f in bundles/*.json; do
    check "$f" "${f%.json}.sig" "$f"
done
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
for c in checkpoints/*.note; do
    # The signed text is everything before the blank line; the signature
    # line is "<em dash> <name> <base64(4-byte key id || 64-byte signature)>".
    awk 'NF == 0 { exit } { print }' "$c" > "$tmp/text"
    tail -n 1 "$c" | awk '{ print $3 }' | openssl base64 -d -A | tail -c 64 > "$tmp/sig"
    check "$tmp/text" "$tmp/sig" "$c"
done
echo "$n signatures verified"
exit $bad
"""


def _verify_md(origin: str, key: VerifyKey, first: int, end: int, anchor: int, sizes: list[int], example: int,
               manifest_signed: bool) -> str:
    """VERIFY.md for one export. Every ```sh block runs as it is in the
    unpacked export with only sh, Python 3 and OpenSSL 3 (the tests run them)."""
    n = _name(example)
    key_id = key.key_id(origin).hex()
    if manifest_signed:
        manifest_check = """```sh
openssl pkeyutl -verify -pubin -inkey public-key.pem -rawin -in manifest.json -sigfile manifest.json.sig
python3 verify.py manifest
```

OpenSSL prints `Signature Verified Successfully`: the range the manifest
names is the appliance's, so bundles cut from either end are detected."""
    else:
        manifest_check = """`manifest.json` is not signed in this export (it was made without the
signing key at hand): the range it names is checked against the signed
checkpoints only, and bundles cut from its ends would go unnoticed.

```sh
python3 verify.py manifest || true
```"""
    consistency = ""
    if len(sizes) > 1:
        a, b = sizes[0], sizes[1]
        consistency = f"""
## 8. That the log only grew between two checkpoints (consistency)

`consistency/{a}-{b}.json` proves that the tree of checkpoint {a} is a
prefix of the tree of checkpoint {b} (RFC 6962 PROOF, checked as RFC 9162
section 2.1.4.2 says): nothing the earlier checkpoint covered was changed
or removed later.

```sh
python3 verify.py consistency {a} {b}
```
"""
    return f"""# Verifying this evidence export

Exported from the Osiris evidence log **{origin}**: bundles {first} to
{end - 1} ({end - first} bundles), with inclusion proofs in checkpoint
**{anchor}** and {len(sizes)} checkpoint(s) in all.

The appliance's Ed25519 public key is `public-key.pem`; its SHA-256
fingerprint (of the raw 32-byte key) is

    {key.fingerprint}

Compare it with the fingerprint you obtained independently (from the MSP,
an earlier export, or `osiris evidence key` on the appliance) before
trusting anything below: a signature proves only that the holder of *this*
key signed.

Everything below needs only `sh`, Python 3 (its standard library: nothing
to install) and OpenSSL 3.0 or later, and runs in the directory the export
was unpacked into. Each check is a command; every one exits with status 0
when it verifies and prints what failed otherwise.

## Everything at once

```sh
python3 verify.py
```

`verify.py` (part of this export, a few hundred lines of standard-library
Python you can read first) checks the key, the manifest, every checkpoint,
the consistency proofs between them, every bundle's signature (through
`openssl`), every inclusion proof, and the chain, and names the file of
every failure. Give it the key you hold, so that an export re-signed with
another key fails:

    python3 verify.py --key TRUSTED.pem
    python3 verify.py --fingerprint {key.fingerprint}

`python3 verify.py --checkpoint KEPT.note` also checks that this log still
extends a checkpoint you kept from an earlier export (it is not shorter,
and not forked). `--sample N` checks N random bundle signatures instead of
all of them (each takes an `openssl` process; the inclusion proofs still
cover every bundle). `python3 verify.py --help` lists the single checks
used below.

## The files

| file | format |
| --- | --- |
| `VERIFY.md` | this text |
| `verify.py` | the standalone verifier (Python 3 standard library, `openssl` for signatures) |
| `openssl-verify.sh` | every signature in the export checked with the `openssl` command line |
| `manifest.json` | JSON object: `format` (`{EXPORT_FORMAT}`), `origin` (the log's name, also the checkpoint key name), `key_fingerprint_sha256`, `key_id` (the C2SP key id, hex), `first_index` and `end_index` (the range `[first, end)` of bundles), `bundles` (their count), `anchor_checkpoint` (the tree size every inclusion proof is made against: the log's newest checkpoint), `checkpoints` (the sizes included), `attested` (those with an attestation file), `pinned` (those kept from earlier exports), `exported_at` |
| `manifest.json.sig` | 64 bytes: the raw Ed25519 signature (RFC 8032) of the exact bytes of `manifest.json` |
| `public-key.pem` | the Ed25519 public key, SubjectPublicKeyInfo PEM; the raw key is the last 32 bytes of its DER |
| `public-key.vkey` | the same key as a C2SP verifier key: `<origin>+<key id>+<base64(0x01 ‖ raw key)>` |
| `bundles/<index>.json` | a bundle: the exact signed bytes, canonical JSON (RFC 8785); `<index>` has 12 digits |
| `bundles/<index>.sig` | 64 bytes: the raw Ed25519 signature of those bytes |
| `proofs/<index>.json` | JSON object: `index`, `tree_size` (a checkpoint's size), `leaf` (hex SHA-256 of 0x00 ‖ bundle), `path` (hex hashes, leaf to root), `checkpoint` (its file) |
| `checkpoints/<size>.note` | a signed checkpoint (C2SP tlog-checkpoint): lines `<origin>`, `<tree size>`, `<base64 root hash>`, `time <RFC 3339 UTC>`, a blank line, then `— <origin> <base64(4-byte key id ‖ 64-byte signature)>`; the signature covers the text before the blank line, last newline included |
| `checkpoints/<size>.note.ots` | where present: an OpenTimestamps proof of that checkpoint file |
| `consistency/<m>-<n>.json` | JSON object: `from` (m), `to` (n), `path` (hex hashes): RFC 6962 PROOF(m, n) |

A bundle is a JSON object with `v` (1), `type` (`osiris.evidence.bundle`),
`id` (a UUID), `kind` (`sweep`, `observation`, `healing_attempt`,
`rule_decision`, ...), `recorded_at`, `site`, `appliance`, `host`, `agent`,
`policy`, `payload` (what was observed or done), `scrubbed` (how many PHI
values of each type were replaced by `[REDACTED:TYPE]`), and the chain:
`log` (the origin), `seq` (its index) and `prev` (the hex leaf hash of the
bundle before it; 64 zeros for the first).

Hashes are those of RFC 6962: a leaf is SHA-256(0x00 ‖ bundle bytes), an
inner node SHA-256(0x01 ‖ left ‖ right), and a tree of n leaves splits at
the largest power of two below n. The key id is the first 4 bytes of
SHA-256(origin ‖ 0x0A ‖ 0x01 ‖ raw key), here `{key_id}`.

## 1. The key's fingerprint

```sh
openssl pkey -pubin -in public-key.pem -outform DER | tail -c 32 | openssl dgst -sha256
python3 verify.py key
```

Both print `{key.fingerprint}`.

## 2. The manifest

{manifest_check}

## 3. One bundle's signature

```sh
openssl pkeyutl -verify -pubin -inkey public-key.pem -rawin -in bundles/{n}.json -sigfile bundles/{n}.sig
```

OpenSSL prints `Signature Verified Successfully`; change one byte of the
.json file and it prints `Signature Verification Failure`.

## 4. Every signature with OpenSSL alone

```sh
sh openssl-verify.sh
```

## 5. A checkpoint's signature

The signed text is everything before the blank line; the signature is the
last 64 bytes of the base64 blob on the signature line:

```sh
awk 'NF == 0 {{ exit }} {{ print }}' checkpoints/{anchor}.note > text
tail -n 1 checkpoints/{anchor}.note | awk '{{ print $3 }}' | openssl base64 -d -A | tail -c 64 > sig
openssl pkeyutl -verify -pubin -inkey public-key.pem -rawin -in text -sigfile sig
python3 verify.py checkpoint checkpoints/{anchor}.note
```

## 6. A bundle's leaf hash

```sh
(printf '\\000'; cat bundles/{n}.json) | openssl dgst -sha256
python3 verify.py leaf {example}
```

The hash equals `leaf` in `proofs/{n}.json`.

## 7. That a bundle is in the log (inclusion proof)

```sh
python3 verify.py inclusion {example}
```

prints each step: starting from the leaf, each hash of `path` is combined
with the running hash (node = SHA-256(0x01 ‖ left ‖ right); which side it
goes on follows from the index and the tree size, RFC 9162 section
2.1.3.2), and the result must equal the root in
`checkpoints/{anchor}.note`, which step 5 showed is signed.
{consistency}
## 9. The chain

```sh
python3 verify.py chain
```

Every bundle's signed `seq` is its index and its signed `prev` is the leaf
hash of the bundle before it, so no bundle can be removed, inserted or
reordered without breaking a signature; `recorded_at` never goes back.

## 10. That the log was not cut short since your last audit

Keep `checkpoints/{anchor}.note` from this export (it is the log's newest
checkpoint when the export was made). Next time, check that the log still
extends it: on the appliance, `osiris evidence verify --checkpoint
{anchor}.note`; or have the next export made with `osiris evidence export
--pin {anchor}.note ...` (it then holds a consistency proof from it) and run
`python3 verify.py --checkpoint {anchor}.note` on that export. A log
shorter than the checkpoint you kept, or not consistent with it, fails,
naming the file. `manifest.json` lists the checkpoints with an
attestation (`attested`, e.g. an OpenTimestamps proof, section 12) and those
pinned from earlier exports (`pinned`).

## 11. With osiris, on any machine

    osiris evidence verify-export THIS.zip --key TRUSTED.pem

does the same checks with the Osiris code.

## 12. Timestamps

`checkpoints/<size>.note.ots`, where present, is an OpenTimestamps proof
for that checkpoint file: `ots verify checkpoints/<size>.note.ots` (the
standard OpenTimestamps client, with a Bitcoin node or a block explorer)
shows the Bitcoin block that proves the checkpoint, and so every bundle it
covers, existed by that block's time.
"""
