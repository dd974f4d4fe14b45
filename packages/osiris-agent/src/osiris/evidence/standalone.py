#!/usr/bin/env python3
"""Verify an Osiris evidence export with Python 3 and OpenSSL 3 alone.

This file is copied into every export as ``verify.py``. It imports nothing
but Python's standard library and calls the ``openssl`` command for every
Ed25519 signature, so an auditor needs no Osiris code to check an export:

    python3 verify.py                              everything below (exit 0: verified)
    python3 verify.py --key TRUSTED.pem            ...against the key you hold (or --fingerprint HEX)
    python3 verify.py --checkpoint KEPT.note       ...and that the log still extends a checkpoint you kept
    python3 verify.py key                          the key's SHA-256 fingerprint
    python3 verify.py manifest                     manifest.json: its signature and its fields
    python3 verify.py signature FILE SIGFILE       one raw Ed25519 signature (a bundle, the manifest)
    python3 verify.py checkpoint NOTE              one checkpoint: signature, origin, key id
    python3 verify.py leaf INDEX                   a bundle's leaf hash against proofs/INDEX.json
    python3 verify.py inclusion INDEX              a bundle's inclusion proof, step by step
    python3 verify.py consistency M N              the consistency proof between checkpoints M and N
    python3 verify.py chain                        seq, log and prev of every bundle

Exit status: 0 verified, 1 something failed (each failure names its file),
2 usage (no openssl, not an export). ``--export PATH`` (a directory or the
zip) defaults to the directory this file is in. VERIFY.md, beside it,
describes every file format; the hashing is RFC 6962 / RFC 9162 section 2.1.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor

EXPORT_FORMATS = ("osiris-evidence-export/1",)
BUNDLE_TYPE = "osiris.evidence.bundle"
SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")  # DER prefix of an Ed25519 public key
DASH = "\u2014"
ZERO = "0" * 64


class Bad(Exception):
    """One failed check; the message names the file."""


# -- hashing (RFC 6962 / RFC 9162 section 2.1) -------------------------------------------------

def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def inclusion_root(leaf, index, size, path, steps=None):
    """RFC 9162 2.1.3.2: the root ``path`` leads to from ``leaf``, or None."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            side = "left"
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
            side = "right"
        if steps is not None:
            steps.append("  sibling %s on the %s -> %s" % (p.hex(), side, r.hex()))
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def consistent(first, second, first_root, second_root, path):
    """RFC 9162 2.1.4.2: does ``path`` prove tree ``first`` a prefix of tree ``second``?"""
    if first > second or first < 0:
        return False
    if first == second:
        return not path and first_root == second_root
    if first == 0:
        return not path
    path = list(path)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    if not path:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


# -- the export's files ---------------------------------------------------------------------------

class Export:
    """An unpacked export directory (a zip is unpacked into a temporary one)."""

    def __init__(self, path):
        self._tmp = None
        if os.path.isfile(path):
            try:
                with zipfile.ZipFile(path) as z:
                    self._tmp = tempfile.TemporaryDirectory(prefix="osiris-export-")
                    z.extractall(self._tmp.name)
            except (OSError, zipfile.BadZipFile) as exc:
                raise SystemExit("verify.py: %s: not a zip file nor a directory: %s" % (path, exc)) from None
            path = self._tmp.name
        self.root = path
        if not os.path.isfile(self.path("manifest.json")):
            raise SystemExit("verify.py: %s: not an evidence export (no manifest.json); "
                             "pass --export DIR|ZIP" % path)

    def path(self, name):
        return os.path.join(self.root, *name.split("/"))

    def has(self, name):
        return os.path.isfile(self.path(name))

    def read(self, name):
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except OSError:
            raise Bad("%s: missing" % name) from None

    def json(self, name):
        try:
            return json.loads(self.read(name))
        except ValueError as exc:
            raise Bad("%s: not valid JSON: %s" % (name, exc)) from None

    def names(self, folder, suffix):
        d = self.path(folder)
        if not os.path.isdir(d):
            return []
        return sorted(folder + "/" + n for n in os.listdir(d) if n.endswith(suffix))


def bundle_name(index):
    return "bundles/%012d" % index


# -- keys and signatures ------------------------------------------------------------------------

def raw_key(pem, source):
    """The 32-byte Ed25519 key of a SubjectPublicKeyInfo PEM file."""
    lines = pem.decode("ascii", "replace").strip().splitlines()
    if len(lines) < 3 or lines[0] != "-----BEGIN PUBLIC KEY-----" or lines[-1] != "-----END PUBLIC KEY-----":
        raise Bad("%s: not a PEM public key" % source)
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error:
        raise Bad("%s: PEM body is not base64" % source) from None
    if len(der) != 44 or not der.startswith(SPKI_ED25519):
        raise Bad("%s: not an Ed25519 public key" % source)
    return der[-32:]


def key_id(name, raw):
    """C2SP signed-note key id: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]


class OpenSSL:
    def __init__(self, key_file):
        self.exe = shutil.which("openssl")
        if self.exe is None:
            raise SystemExit("verify.py: the openssl command (OpenSSL 3.0 or later) is not on PATH")
        self.key_file = key_file
        self._tmp = tempfile.TemporaryDirectory(prefix="osiris-verify-")
        self._n = 0

    def verify_files(self, data_file, sig_file):
        r = subprocess.run([self.exe, "pkeyutl", "-verify", "-pubin", "-inkey", self.key_file, "-rawin",
                            "-in", data_file, "-sigfile", sig_file], capture_output=True)
        return r.returncode == 0 and b"Signature Verified Successfully" in r.stdout

    def verify_bytes(self, data, sig):
        self._n += 1
        base = os.path.join(self._tmp.name, str(self._n))
        with open(base + ".data", "wb") as f:
            f.write(data)
        with open(base + ".sig", "wb") as f:
            f.write(sig)
        return self.verify_files(base + ".data", base + ".sig")


# -- checkpoints (C2SP signed notes) -------------------------------------------------------------

def parse_checkpoint(note, name, origin, raw, openssl):
    """(size, root, time) of a checkpoint signed by the key under ``origin``."""
    if not note.endswith(b"\n") or b"\n\n" not in note:
        raise Bad("%s: not a signed note (no blank line before its signature, or no final newline)" % name)
    sep = note.rfind(b"\n\n")
    text, sig_lines = note[:sep + 1], note[sep + 2:].decode("utf-8", "replace").splitlines()
    lines = text.decode("utf-8", "replace").split("\n")[:-1]
    if len(lines) < 3:
        raise Bad("%s: fewer than three lines of checkpoint text" % name)
    if lines[0] != origin:
        raise Bad("%s: origin %r, expected %r" % (name, lines[0], origin))
    if not lines[1].isdigit():
        raise Bad("%s: tree size %r is not a number" % (name, lines[1]))
    try:
        root = base64.b64decode(lines[2], validate=True)
    except binascii.Error:
        root = b""
    if len(root) != 32:
        raise Bad("%s: root hash is not 32 bytes of base64" % name)
    want = key_id(origin, raw)
    sigs = []
    for line in sig_lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise Bad("%s: malformed signature line %r" % (name, line[:60]))
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise Bad("%s: signature is not base64" % name) from None
        if parts[1] == origin and blob[:4] == want:
            sigs.append(blob)
    if not sigs:
        raise Bad("%s: not signed by %s with key id %s" % (name, origin, want.hex()))
    for blob in sigs:
        if len(blob) != 68 or not openssl.verify_bytes(text, blob[4:]):
            raise Bad("%s: signature does not verify (checkpoint altered, or another key)" % name)
    time = next((x[5:] for x in lines[3:] if x.startswith("time ")), "")
    return int(lines[1]), root, time


# -- the checks ------------------------------------------------------------------------------------

class Verifier:
    def __init__(self, export, trusted=None, fingerprint=None, jobs=None, sample=None, out=print):
        self.x = export
        self.out = out
        self.problems = []
        self.warnings = []
        self.jobs = jobs or min(os.cpu_count() or 1, 8)
        self.sample = sample
        key_file = self.x.path("public-key.pem")
        self.raw = raw_key(self.x.read("public-key.pem"), "public-key.pem")
        self.fingerprint = hashlib.sha256(self.raw).hexdigest()
        if trusted is not None:
            t = raw_key(open(trusted, "rb").read(), trusted)
            if t != self.raw:
                raise Bad("public-key.pem (fingerprint %s) is not the trusted key %s (fingerprint %s)"
                          % (self.fingerprint, trusted, hashlib.sha256(t).hexdigest()))
            key_file = trusted
        elif fingerprint is not None:
            if fingerprint.lower().replace(":", "") != self.fingerprint:
                raise Bad("public-key.pem has fingerprint %s, not the %s you hold" % (self.fingerprint, fingerprint))
        else:
            self.warnings.append("no --key or --fingerprint given: checked against the export's own public-key.pem; "
                                 "compare its fingerprint with one you obtained independently")
        self.openssl = OpenSSL(key_file)
        self.manifest = None
        self.checkpoints = {}  # size -> (root, time)

    def fail(self, what):
        self.problems.append(what)
        self.out("FAILED: " + what)

    def ok(self, what):
        self.out("ok: " + what)

    # Each check raises Bad for a failure that stops it, or calls fail() and goes on.

    def check_key(self):
        self.ok("key: SHA-256 fingerprint %s (of the raw 32-byte Ed25519 key in public-key.pem)" % self.fingerprint)

    def check_manifest(self):
        data = self.x.read("manifest.json")
        try:
            m = json.loads(data)
        except ValueError as exc:
            raise Bad("manifest.json: not valid JSON: %s" % exc) from None
        if not isinstance(m, dict):
            raise Bad("manifest.json: not a JSON object")
        if self.x.has("manifest.json.sig"):
            if not self.openssl.verify_files(self.x.path("manifest.json"), self.x.path("manifest.json.sig")):
                raise Bad("manifest.json.sig: the manifest's signature does not verify (manifest altered, or another key)")
            signed = "signed"
        else:
            self.warnings.append("manifest.json is not signed (no manifest.json.sig): bundles cut from the ends of "
                                 "its range would not be noticed")
            signed = "NOT signed"
        if m.get("format") not in EXPORT_FORMATS:
            raise Bad("manifest.json: format %r, expected one of %s" % (m.get("format"), ", ".join(EXPORT_FORMATS)))
        first, end, origin = m.get("first_index"), m.get("end_index"), m.get("origin")
        if not (isinstance(origin, str) and type(first) is int and type(end) is int and 0 <= first < end):
            raise Bad("manifest.json: origin, first_index and end_index missing or malformed")
        if m.get("key_fingerprint_sha256") != self.fingerprint:
            raise Bad("manifest.json: key_fingerprint_sha256 %r is not the fingerprint of public-key.pem (%s)"
                      % (m.get("key_fingerprint_sha256"), self.fingerprint))
        if m.get("key_id") not in (None, key_id(origin, self.raw).hex()):
            raise Bad("manifest.json: key_id %r, but the key's id under %s is %s"
                      % (m.get("key_id"), origin, key_id(origin, self.raw).hex()))
        if m.get("bundles") != end - first:
            raise Bad("manifest.json: lists %r bundles, but its range [%d, %d) holds %d"
                      % (m.get("bundles"), first, end, end - first))
        self.manifest = m
        self.ok("manifest.json (%s): %s, bundles [%d, %d), anchor checkpoint %s"
                % (signed, origin, first, end, m.get("anchor_checkpoint")))

    def _need_manifest(self):
        if self.manifest is None:
            self.check_manifest()
        return self.manifest

    def check_checkpoint(self, name):
        m = self._need_manifest()
        size, root, time = parse_checkpoint(self.x.read(name), name, m["origin"], self.raw, self.openssl)
        stem = name.rsplit("/", 1)[-1].split(".")[0]
        if stem != str(size):
            raise Bad("%s: signed for tree size %d, not %s" % (name, size, stem))
        self.checkpoints[size] = (root, time)
        return size, root, time

    def check_checkpoints(self):
        m = self._need_manifest()
        for name in self.x.names("checkpoints", ".note"):
            try:
                self.check_checkpoint(name)
            except Bad as exc:
                self.fail(str(exc))
        listed = m.get("checkpoints") or []
        for size in listed:
            if size not in self.checkpoints:
                self.fail("checkpoints/%s.note: listed in manifest.json but missing or not verifying" % size)
        if not self.checkpoints:
            raise Bad("checkpoints/: no verifying checkpoint, so nothing signed covers the bundles")
        anchor = max(self.checkpoints)
        if m.get("anchor_checkpoint") != anchor:
            self.fail("manifest.json: anchor_checkpoint %r, but the largest signed checkpoint is %d"
                      % (m.get("anchor_checkpoint"), anchor))
        if m["end_index"] > anchor:
            self.fail("manifest.json: end_index %d is beyond the anchor checkpoint, which covers %d entries"
                      % (m["end_index"], anchor))
        times = [self.checkpoints[s][1] for s in sorted(self.checkpoints)]
        if times != sorted(times):
            self.fail("checkpoints/: a later checkpoint carries an earlier time")
        self.ok("%d checkpoint(s) signed: %s" % (len(self.checkpoints), ", ".join(map(str, sorted(self.checkpoints)))))

    def consistency(self, a, b):
        """Check consistency/<a>-<b>.json between two verified checkpoints."""
        name = "consistency/%d-%d.json" % (a, b)
        c = self.x.json(name)
        try:
            path = [bytes.fromhex(h) for h in c["path"]]
            if (c["from"], c["to"]) != (a, b):
                raise ValueError("from/to are %r/%r" % (c["from"], c["to"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise Bad("%s: malformed: %s" % (name, exc)) from None
        if not consistent(a, b, self.checkpoints[a][0], self.checkpoints[b][0], path):
            raise Bad("%s: the consistency proof does not verify (tree %d is not a prefix of tree %d)" % (name, a, b))

    def check_consistency(self):
        sizes = sorted(self.checkpoints)
        for a, b in zip(sizes, sizes[1:]):
            try:
                self.consistency(a, b)
            except Bad as exc:
                self.fail(str(exc))
        self.ok("%d consistency proof(s) between consecutive checkpoints" % max(0, len(sizes) - 1))

    def bundle(self, index):
        """(body, statement) of one bundle, its seq, log and type checked."""
        name = bundle_name(index) + ".json"
        body = self.x.read(name)
        try:
            st = json.loads(body)
        except ValueError:
            raise Bad("%s: not JSON" % name) from None
        if not isinstance(st, dict) or st.get("type") != BUNDLE_TYPE:
            raise Bad("%s: not an evidence bundle (type %r)" % (name, st.get("type") if isinstance(st, dict) else None))
        if st.get("seq") != index:
            raise Bad("%s: signed seq is %r, not its index %d (renamed, reordered or replaced)" % (name, st.get("seq"), index))
        if st.get("log") != self._need_manifest()["origin"]:
            raise Bad("%s: signed log is %r, not this export's origin" % (name, st.get("log")))
        return body, st

    def leaf(self, index):
        name = bundle_name(index)
        body, _ = self.bundle(index)
        leaf = leaf_hash(body)
        proof = self.x.json("proofs/%012d.json" % index)
        if proof.get("leaf") != leaf.hex():
            raise Bad("%s.json: its leaf hash %s is not the one in proofs/%012d.json (%s)"
                      % (name, leaf.hex(), index, proof.get("leaf")))
        return leaf

    def inclusion(self, index, steps=None):
        leaf = leaf_hash(self.bundle(index)[0])
        pname = "proofs/%012d.json" % index
        p = self.x.json(pname)
        try:
            size, path = p["tree_size"], [bytes.fromhex(h) for h in p["path"]]
            if p.get("index", index) != index:
                raise ValueError("index %r, expected %d" % (p.get("index"), index))
        except (KeyError, TypeError, ValueError) as exc:
            raise Bad("%s: malformed: %s" % (pname, exc)) from None
        if size not in self.checkpoints:
            self.check_checkpoint("checkpoints/%s.note" % size)
        if steps is not None:
            steps.append("  leaf SHA-256(0x00 || %s.json) = %s" % (bundle_name(index), leaf.hex()))
        root = inclusion_root(leaf, index, size, path, steps)
        if root != self.checkpoints[size][0]:
            raise Bad("%s.json: its inclusion proof (%s) does not lead to the root of checkpoint %d"
                      % (bundle_name(index), pname, size))
        return size

    def check_bundles(self):
        m = self._need_manifest()
        first, end = m["first_index"], m["end_index"]
        present = set()
        for name in self.x.names("bundles", ".json"):
            stem = name[len("bundles/"):-len(".json")]
            if not stem.isdigit() or not first <= int(stem) < end:
                self.fail("%s: not a bundle of the exported range [%d, %d)" % (name, first, end))
            else:
                present.add(int(stem))
        for idx in range(first, end):
            if idx not in present:
                self.fail("%s.json: missing from the exported range [%d, %d)" % (bundle_name(idx), first, end))
        indexes = sorted(present)
        chosen = indexes
        if self.sample is not None and self.sample < len(indexes):
            chosen = sorted(random.SystemRandom().sample(indexes, self.sample))

        def sig_ok(idx):
            base = self.x.path(bundle_name(idx))
            if not os.path.isfile(base + ".sig"):
                return "%s.sig: missing" % bundle_name(idx)
            if not self.openssl.verify_files(base + ".json", base + ".sig"):
                return "%s.json: signature does not verify (content altered, or not signed by this key)" % bundle_name(idx)
            return None

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            for err in pool.map(sig_ok, chosen):
                if err:
                    self.fail(err)
        included = 0
        for idx in indexes:
            try:
                self.leaf(idx)
                self.inclusion(idx)
                included += 1
            except Bad as exc:
                self.fail(str(exc))
        what = "all %d" % len(chosen) if chosen is indexes else "a random sample of %d of %d" % (len(chosen), len(indexes))
        self.ok("bundles [%d, %d): signatures of %s checked with openssl; %d inclusion proofs lead to signed roots"
                % (first, end, what, included))

    def check_chain(self):
        m = self._need_manifest()
        first, end = m["first_index"], m["end_index"]
        prev_leaf, prev_time, links = None, "", 0
        if first == 0:
            prev_leaf = bytes(32)
        for idx in range(first, end):
            try:
                body, st = self.bundle(idx)
            except Bad as exc:
                self.fail(str(exc) if "missing" not in str(exc) else
                          "%s.json: missing, so the chain cannot be followed through it" % bundle_name(idx))
                prev_leaf = None
                continue
            if prev_leaf is not None:
                links += 1
                if st.get("prev") != prev_leaf.hex():
                    self.fail("%s.json: signed prev is not the leaf hash of bundle %d (chain broken)"
                              % (bundle_name(idx), idx - 1))
            recorded = st.get("recorded_at") or ""
            if recorded < prev_time:
                self.fail("%s.json: recorded_at %s is before its predecessor's %s" % (bundle_name(idx), recorded, prev_time))
            prev_leaf, prev_time = leaf_hash(body), max(prev_time, recorded)
        self.ok("chain: %d link(s) (each bundle's signed prev is its predecessor's leaf hash), times in order" % links)

    def check_kept(self, kept_file):
        """A checkpoint the auditor kept from an earlier export: the log this
        export comes from must still hold it (not shorter, and consistent)."""
        m = self._need_manifest()
        with open(kept_file, "rb") as f:
            size, root, _ = parse_checkpoint(f.read(), kept_file, m["origin"], self.raw, self.openssl)
        anchor = max(self.checkpoints)
        if size > anchor:
            raise Bad("%s: the checkpoint you kept covers %d entries, but this export's log is signed only up to %d: "
                      "entries were removed (log truncated)" % (kept_file, size, anchor))
        if size in self.checkpoints:
            if self.checkpoints[size][0] != root:
                raise Bad("%s: the checkpoint you kept and checkpoints/%d.note have different roots (the log forked)"
                          % (kept_file, size))
        else:
            self.checkpoints[size] = (root, "")
            try:
                self.consistency(size, anchor)
            except Bad as exc:
                if "missing" in str(exc):
                    raise Bad("%s: this export has no consistency/%d-%d.json, so it cannot show that its log extends "
                              "the checkpoint you kept (have the export made with `osiris evidence export --pin %s`)"
                              % (kept_file, size, anchor, os.path.basename(kept_file))) from None
                raise
        self.ok("%s: the log extends the checkpoint you kept (size %d)" % (kept_file, size))

    def everything(self, kept=()):
        steps = [self.check_key, self.check_manifest, self.check_checkpoints, self.check_consistency,
                 self.check_bundles, self.check_chain] + [lambda k=k: self.check_kept(k) for k in kept]
        for step in steps:
            try:
                step()
            except Bad as exc:
                self.fail(str(exc))
                if step in (self.check_manifest, self.check_checkpoints):
                    break


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(prog="verify.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", default=here, help="the export: a directory or the zip (default: this file's directory)")
    ap.add_argument("--key", help="the public key you trust (PEM); default: the export's public-key.pem, with a warning")
    ap.add_argument("--fingerprint", help="the SHA-256 key fingerprint you trust (hex), instead of --key")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NOTE",
                    help="a checkpoint kept from an earlier export: the log must still extend it (repeatable)")
    ap.add_argument("--jobs", type=int, help="openssl processes at once (default: the cores, at most 8)")
    ap.add_argument("--sample", type=int, help="check the signatures of this many random bundles, not all "
                                               "(the inclusion proofs still cover every bundle)")
    ap.add_argument("check", nargs="?", default="all",
                    choices=["all", "key", "manifest", "signature", "checkpoint", "leaf", "inclusion", "consistency",
                             "chain"])
    ap.add_argument("args", nargs="*")
    a = ap.parse_args(argv)
    need = {"signature": 2, "checkpoint": 1, "leaf": 1, "inclusion": 1, "consistency": 2}.get(a.check, 0)
    if len(a.args) != need:
        ap.error("%s takes %d argument(s)" % (a.check, need))
    try:
        v = Verifier(Export(a.export), a.key, a.fingerprint, a.jobs, a.sample)
    except Bad as exc:
        print("FAILED: " + str(exc))
        return 1
    except OSError as exc:
        print("verify.py: %s" % exc, file=sys.stderr)
        return 2
    try:
        if a.check == "all":
            v.everything(a.checkpoint)
        elif a.check == "key":
            v.check_key()
        elif a.check == "manifest":
            v.check_manifest()
        elif a.check == "signature":
            data, sig = (os.path.join(v.x.root, p) if not os.path.isabs(p) else p for p in a.args)
            if not v.openssl.verify_files(data, sig):
                raise Bad("%s: signature %s does not verify" % tuple(a.args))
            v.ok("%s: signature %s verifies" % tuple(a.args))
        elif a.check == "checkpoint":
            size, root, time = v.check_checkpoint(a.args[0])
            v.ok("%s: signed by %s, tree size %d, root %s, time %s"
                 % (a.args[0], v.manifest["origin"], size, root.hex(), time))
        elif a.check == "leaf":
            v.ok("%s.json: leaf %s, as in its proof" % (bundle_name(int(a.args[0])), v.leaf(int(a.args[0])).hex()))
        elif a.check == "inclusion":
            steps = []
            size = v.inclusion(int(a.args[0]), steps)
            for s in steps:
                print(s)
            v.ok("%s.json is included in checkpoint %d (root %s)"
                 % (bundle_name(int(a.args[0])), size, v.checkpoints[size][0].hex()))
        elif a.check == "consistency":
            m, n = int(a.args[0]), int(a.args[1])
            for s in (m, n):
                v.check_checkpoint("checkpoints/%d.note" % s)
            v.consistency(m, n)
            v.ok("checkpoint %d is a prefix of checkpoint %d (consistency/%d-%d.json)" % (m, n, m, n))
        elif a.check == "chain":
            v.check_chain()
    except Bad as exc:
        v.fail(str(exc))
    except ValueError as exc:
        print("verify.py: %s" % exc, file=sys.stderr)
        return 2
    for w in v.warnings:
        print("warning: " + w, file=sys.stderr)
    if v.problems:
        print("FAILED: %d problem(s); the first: %s" % (len(v.problems), v.problems[0]))
        return 1
    if a.check == "all":
        print("ok: everything verified against the key with fingerprint %s" % v.fingerprint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
