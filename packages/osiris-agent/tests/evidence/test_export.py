"""The auditor's export: OpenSSL alone checks a bundle's signature, osiris
checks everything, and tampering with the export is named."""

import json
import subprocess
import zipfile

import pytest

from osiris.evidence.export import export
from osiris.evidence.keys import SigningKey
from osiris.evidence.verify import verify_export

from .helpers import fill, new_log


@pytest.fixture
def exported(tmp_path):
    key = SigningKey.generate()
    log = new_log(tmp_path, key)
    fill(log, key, 12, checkpoint_every=5)
    cp = log.checkpoint(key, force=True)
    log.put_attestation(cp.size, "ots", b"\x00OpenTimestamps\x00\x00Proof\x00 (stand-in bytes)", complete=False)
    fill(log, key, 18, checkpoint_every=7)
    log.checkpoint(key)
    out = tmp_path / "audit.zip"
    summary = export(log, out, 5, 20)
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(out) as z:
        z.extractall(unpacked)
    log.close()
    return key, out, unpacked, summary


def openssl_verify(cwd, name):
    return subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "public-key.pem", "-rawin",
         "-in", f"bundles/{name}.json", "-sigfile", f"bundles/{name}.sig"],
        cwd=cwd, capture_output=True, text=True)


def test_openssl_alone_checks_an_exported_bundle(exported):
    key, _, d, _ = exported
    ok = openssl_verify(d, "000000000007")
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout
    body = (d / "bundles/000000000007.json").read_bytes()
    (d / "bundles/000000000007.json").write_bytes(body.replace(b'"seq":7', b'"seq":8'))
    bad = openssl_verify(d, "000000000007")
    assert bad.returncode != 0 and "Signature Verification Failure" in bad.stdout


def test_the_bundled_openssl_script_checks_every_signature(exported):
    _, _, d, summary = exported
    run = subprocess.run(["sh", "openssl-verify.sh"], cwd=d, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{15 + len(summary.checkpoints)} signatures verified"
    note = d / f"checkpoints/{summary.anchor}.note"
    note.write_bytes(note.read_bytes().replace(b"time ", b"time 1"))
    run = subprocess.run(["sh", "openssl-verify.sh"], cwd=d, capture_output=True, text=True)
    assert run.returncode == 1 and f"BAD signature: checkpoints/{summary.anchor}.note" in run.stderr


def test_contents_manifest_and_verify_md(exported):
    key, out, d, summary = exported
    names = set(zipfile.ZipFile(out).namelist())
    assert {f"bundles/{i:012d}.json" for i in range(5, 20)} <= names
    assert f"bundles/{4:012d}.json" not in names and f"bundles/{20:012d}.json" not in names
    assert {f"proofs/{i:012d}.json" for i in range(5, 20)} <= names
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["bundles"] == 15 and manifest["anchor_checkpoint"] == summary.anchor == 30
    assert manifest["key_fingerprint_sha256"] == key.verify_key.fingerprint
    # The first covering checkpoint, the attested one, the anchor; proofs between them.
    assert summary.checkpoints[0] <= 5 + 7 and 12 in summary.checkpoints and summary.checkpoints[-1] == 30
    assert (d / "checkpoints/12.note.ots").read_bytes().startswith(b"\x00OpenTimestamps")
    for a, b in zip(summary.checkpoints, summary.checkpoints[1:]):
        assert (d / f"consistency/{a}-{b}.json").is_file()
    verify_md = (d / "VERIFY.md").read_text()
    assert key.verify_key.fingerprint in verify_md
    assert "openssl pkeyutl -verify -pubin -inkey public-key.pem -rawin" in verify_md
    assert "bundles/000000000005.json" in verify_md and "checkpoints/30.note" in verify_md


def test_osiris_verifies_the_export_and_names_what_was_altered(exported, tmp_path):
    key, out, d, _ = exported
    report = verify_export(out)
    assert report.ok, report.summary()
    assert (report.entries, report.signatures, report.roots) == (15, 15, 15)
    assert verify_export(out, key.verify_key).ok
    assert not verify_export(out, SigningKey.generate().verify_key).ok
    # An inclusion proof that does not lead to the checkpoint's root.
    proof = json.loads((d / "proofs/000000000011.json").read_text())
    proof["path"][0] = "00" * 32
    (d / "proofs/000000000011.json").write_text(json.dumps(proof))
    report = verify_export(d)
    assert report.first_bad_index == 11 and "inclusion proof does not verify" in report.summary()
    # A bundle removed from the middle: the next one's prev no longer chains.
    (d / "proofs/000000000011.json").write_text(json.dumps({**proof, "path": json.loads(
        zipfile.ZipFile(out).read("proofs/000000000011.json"))["path"]}))
    (d / "bundles/000000000009.json").unlink()
    (d / "bundles/000000000009.sig").unlink()
    report = verify_export(d)
    assert not report.ok and "manifest lists 15 bundles, the export holds 14" in str(report.problems)
