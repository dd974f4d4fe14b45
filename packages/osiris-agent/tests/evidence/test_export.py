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
    summary = export(log, out, 5, 20, signing_key=key)
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
    assert run.stdout.strip() == f"{1 + 15 + len(summary.checkpoints)} signatures verified"  # the manifest's too
    note = d / f"checkpoints/{summary.anchor}.note"
    note.write_bytes(note.read_bytes().replace(b"time ", b"time 1"))
    run = subprocess.run(["sh", "openssl-verify.sh"], cwd=d, capture_output=True, text=True)
    assert run.returncode == 1 and f"BAD signature: checkpoints/{summary.anchor}.note" in run.stderr


def test_the_openssl_script_checks_the_manifest_signature(exported):
    _, _, d, _ = exported
    m = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**m, "end_index": 19, "bundles": 14}, indent=2))
    run = subprocess.run(["sh", "openssl-verify.sh"], cwd=d, capture_output=True, text=True)
    assert run.returncode == 1 and "BAD signature: manifest.json" in run.stderr, run.stderr


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
    assert (report.entries, report.signatures, report.roots) == (15, 15 + 1, 15)  # + the manifest's
    assert verify_export(out, key.verify_key).ok
    assert not verify_export(out, SigningKey.generate().verify_key).ok
    # An inclusion proof that does not lead to the checkpoint's root.
    proof = json.loads((d / "proofs/000000000011.json").read_text())
    proof["path"][0] = "00" * 32
    (d / "proofs/000000000011.json").write_text(json.dumps(proof))
    report = verify_export(d)
    assert report.first_bad_index == 11 and "inclusion proof does not verify" in report.summary()
    # A bundle removed from the middle (and the manifest's count "fixed"):
    # the gap is named, and the next one's prev no longer chains.
    (d / "proofs/000000000011.json").write_text(json.dumps({**proof, "path": json.loads(
        zipfile.ZipFile(out).read("proofs/000000000011.json"))["path"]}))
    assert verify_export(d).ok
    (d / "bundles/000000000009.json").unlink()
    (d / "bundles/000000000009.sig").unlink()
    (d / "proofs/000000000009.json").unlink()
    report = verify_export(d)
    assert not report.ok
    assert report.first_bad_index == 9 and "bundles/000000000009.json: missing" in report.summary()
    assert any(p.index == 10 and "chain broken" in p.what for p in report.problems), report.problems


def _unsigned_manifest(d, **changes):
    m = json.loads((d / "manifest.json").read_text())
    m.update(changes)
    (d / "manifest.json").write_text(json.dumps(m, indent=2))
    (d / "manifest.json.sig").unlink(missing_ok=True)


def test_a_bundle_cut_from_the_middle_is_refused_even_with_the_manifest_edited(exported):
    """The reviewer's repro: export 5..19, delete bundle 9 and its proof, set
    the manifest's count to 14 (and drop its signature)."""
    _, _, d, _ = exported
    for f in ("bundles/000000000009.json", "bundles/000000000009.sig", "proofs/000000000009.json"):
        (d / f).unlink()
    _unsigned_manifest(d, bundles=14)
    report = verify_export(d)
    assert not report.ok, report.summary()
    whats = [str(p) for p in report.problems]
    assert any("index 9: bundles/000000000009.json: missing from the exported range [5, 20)" in w for w in whats)
    assert any(w.startswith("index 10:") and "chain broken" in w for w in whats), whats


def test_bundles_cut_from_the_end_are_caught_by_the_signed_manifest(exported):
    _, _, d, _ = exported
    for f in ("bundles/000000000019.json", "bundles/000000000019.sig", "proofs/000000000019.json"):
        (d / f).unlink()
    report = verify_export(d)
    assert not report.ok and report.first_bad_index == 19
    # Rewriting the range in the manifest breaks its signature...
    m = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**m, "end_index": 19, "bundles": 14}, indent=2))
    report = verify_export(d)
    assert not report.ok and "manifest.json.sig" in report.summary()
    # ...and without one the range is only checked, with a warning saying so.
    _unsigned_manifest(d, end_index=19, bundles=14)
    report = verify_export(d)
    assert report.ok and any("manifest.json is not signed" in w for w in report.warnings)
    # A range beyond the signed anchor is refused whatever the manifest says.
    _unsigned_manifest(d, end_index=31, bundles=26)
    assert "beyond the anchor checkpoint" in str(verify_export(d).problems)


def test_consistency_proofs_between_consecutive_checkpoints_are_required(exported):
    _, _, d, summary = exported
    a, b = summary.checkpoints[0], summary.checkpoints[1]
    (d / f"consistency/{a}-{b}.json").unlink()
    report = verify_export(d)
    assert not report.ok and f"consistency/{a}-{b}.json: missing" in str(report.problems)


def test_malformed_files_are_named_problems_not_tracebacks(exported):
    _, _, d, _ = exported
    proof = json.loads((d / "proofs/000000000007.json").read_text())
    del proof["tree_size"]
    (d / "proofs/000000000007.json").write_text(json.dumps(proof))
    (d / "proofs/000000000008.json").write_text("{not json")
    report = verify_export(d)
    whats = [str(p) for p in report.problems]
    assert any("proofs/000000000007.json: malformed (no 'tree_size')" in w for w in whats), whats
    assert any("proofs/000000000008.json: malformed" in w for w in whats), whats
    (d / "public-key.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    assert "public-key.pem: not a PEM public key" in verify_export(d).summary()


def test_the_key_fingerprint_is_always_shown_and_openssl_computes_the_same(exported, tmp_path):
    from click.testing import CliRunner

    from osiris.evidence.cli import evidence

    key, out, d, _ = exported
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", "public-key.pem", "-outform", "DER"], cwd=d,
                         capture_output=True, check=True).stdout
    cmd = "openssl pkey -pubin -in public-key.pem -outform DER | tail -c 32 | openssl dgst -sha256"
    assert cmd in (d / "VERIFY.md").read_text()
    shell = subprocess.run(["sh", "-c", cmd], cwd=d, capture_output=True, text=True, check=True).stdout
    assert shell.strip().split()[-1] == key.verify_key.fingerprint
    assert der[-32:] == key.verify_key.raw

    r = CliRunner()
    plain = r.invoke(evidence, ["verify-export", str(out)])
    assert plain.exit_code == 0 and plain.output.startswith("ok:"), plain.output
    assert f"fingerprint {key.verify_key.fingerprint}" in plain.output and "no trusted key given" in plain.output
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(key.verify_key.pem())
    good = r.invoke(evidence, ["verify-export", str(out), "--key", str(trusted)])
    assert good.exit_code == 0 and "no trusted key given" not in good.output
    assert f"fingerprint {key.verify_key.fingerprint} ({trusted})" in good.output
    broken = tmp_path / "broken.pem"
    broken.write_text("not a key")
    bad = r.invoke(evidence, ["verify-export", str(out), "--key", str(broken)])
    assert bad.exit_code == 2 and f"{broken}: not a PEM public key" in bad.output, bad.output
    assert bad.exception is None or isinstance(bad.exception, SystemExit)


def test_an_export_re_signed_with_another_key_does_not_pass_silently(exported, tmp_path):
    """Replace every signature and the public key with an attacker's: the
    export verifies against itself, but the fingerprint differs and the
    warning says no trusted key was given; with --key it fails."""
    from osiris.evidence.note import checkpoint_text, parse_checkpoint, sign_note

    key, _, d, _ = exported
    other = SigningKey.generate()
    for body in (d / "bundles").glob("*.json"):
        body.with_suffix(".sig").write_bytes(other.sign(body.read_bytes()))
    for note in (d / "checkpoints").glob("*.note"):
        cp = parse_checkpoint(note.read_bytes())
        note.write_bytes(sign_note(checkpoint_text(cp.origin, cp.size, cp.root, cp.time), cp.origin, other))
    (d / "public-key.pem").write_bytes(other.verify_key.pem())
    m = json.loads((d / "manifest.json").read_text())
    m["key_fingerprint_sha256"] = other.verify_key.fingerprint
    (d / "manifest.json").write_bytes(json.dumps(m, indent=2).encode())
    (d / "manifest.json.sig").write_bytes(other.sign((d / "manifest.json").read_bytes()))
    report = verify_export(d)
    assert report.ok, report.summary()
    assert report.key_fingerprint == other.verify_key.fingerprint != key.verify_key.fingerprint
    assert any("no trusted key given" in w and other.verify_key.fingerprint in w for w in report.warnings)
    assert not verify_export(d, key.verify_key).ok
