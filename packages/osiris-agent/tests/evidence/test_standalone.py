"""The export's own verifier (verify.py): Python's standard library and
OpenSSL alone, no osiris, run the way an auditor would; and every command
VERIFY.md shows runs as it is."""

import ast
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from osiris.evidence import standalone
from osiris.evidence.export import export
from osiris.evidence.keys import SigningKey

from .helpers import fill, new_log

CLEAN_PATH = "/usr/bin:/bin"
# The system's python3 (no osiris there); -I ignores PYTHON* variables and the
# user's site, -S every site-packages directory.
PYTHON = shutil.which("python3", path=CLEAN_PATH) or sys.executable
CLEAN_ENV = {"PATH": CLEAN_PATH, "LC_ALL": "C.UTF-8"}


@pytest.fixture
def exported(tmp_path):
    key = SigningKey.generate()
    log = new_log(tmp_path, key)
    fill(log, key, 12, checkpoint_every=5)
    fill(log, key, 18, checkpoint_every=7)
    log.checkpoint(key)
    out = tmp_path / "audit.zip"
    summary = export(log, out, 5, 20, signing_key=key)
    log.close()
    d = tmp_path / "unpacked"
    with zipfile.ZipFile(out) as z:
        z.extractall(d)
    return key, out, d, summary


def auditor(d, *args, cwd=None):
    """python3 -I -S verify.py ARGS in a clean environment."""
    return subprocess.run([PYTHON, "-I", "-S", str(d / "verify.py"), *args], cwd=cwd or d, env=CLEAN_ENV,
                          capture_output=True, text=True, timeout=300)


def test_it_imports_only_the_standard_library():
    tree = ast.parse(Path(standalone.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert names - {"__future__"} <= set(sys.stdlib_module_names), names
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))


def test_the_export_verifies_with_python_and_openssl_alone(exported, tmp_path):
    key, out, d, summary = exported
    run = auditor(d)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"ok: everything verified against the key with fingerprint {key.verify_key.fingerprint}" in run.stdout
    assert "bundles [5, 20): signatures of all 15 checked with openssl; 15 inclusion proofs" in run.stdout
    assert "no --key or --fingerprint given" in run.stderr
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(key.verify_key.pem())
    run = auditor(d, "--key", str(trusted))
    assert run.returncode == 0 and "no --key" not in run.stderr, run.stdout + run.stderr
    assert auditor(d, "--fingerprint", key.verify_key.fingerprint).returncode == 0
    other = tmp_path / "other.pem"
    other.write_bytes(SigningKey.generate().verify_key.pem())
    run = auditor(d, "--key", str(other))
    assert run.returncode == 1 and f"public-key.pem (fingerprint {key.verify_key.fingerprint}) is not the trusted key" \
        in run.stdout
    # The zip as it was handed over, from anywhere.
    run = auditor(d, "--export", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_flipped_byte_is_named(exported):
    _, _, d, _ = exported
    f = d / "bundles/000000000007.json"
    body = bytearray(f.read_bytes())
    body[body.find(b"three")] ^= 1
    f.write_bytes(bytes(body))
    run = auditor(d)
    assert run.returncode == 1
    assert "FAILED: bundles/000000000007.json: signature does not verify" in run.stdout
    assert "FAILED: bundles/000000000007.json: its leaf hash" in run.stdout
    assert "FAILED: bundles/000000000008.json: signed prev is not the leaf hash of bundle 7 (chain broken)" in run.stdout


def test_a_deleted_bundle_is_named(exported):
    _, _, d, _ = exported
    for f in ("bundles/000000000009.json", "bundles/000000000009.sig", "proofs/000000000009.json"):
        (d / f).unlink()
    run = auditor(d)
    assert run.returncode == 1
    assert "FAILED: bundles/000000000009.json: missing from the exported range [5, 20)" in run.stdout
    assert "bundles/000000000010.json: signed prev" not in run.stdout  # the gap, not its neighbour


def test_a_bad_manifest_is_named(exported):
    _, _, d, _ = exported
    m = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**m, "end_index": 19, "bundles": 14}, indent=2))
    run = auditor(d)
    assert run.returncode == 1
    assert "FAILED: manifest.json.sig: the manifest's signature does not verify" in run.stdout
    (d / "manifest.json.sig").unlink()  # unsigned: the range is checked, and the count must add up
    (d / "manifest.json").write_text(json.dumps({**m, "bundles": 14}, indent=2))
    run = auditor(d)
    assert run.returncode == 1 and "manifest.json: lists 14 bundles, but its range [5, 20) holds 15" in run.stdout


def test_a_consistency_proof_and_a_checkpoint_are_checked(exported):
    _, _, d, summary = exported
    a, b = summary.checkpoints[:2]
    ok = auditor(d, "consistency", str(a), str(b))
    assert ok.returncode == 0 and f"checkpoint {a} is a prefix of checkpoint {b}" in ok.stdout
    c = json.loads((d / f"consistency/{a}-{b}.json").read_text())
    c["path"][-1] = "00" * 32
    (d / f"consistency/{a}-{b}.json").write_text(json.dumps(c))
    run = auditor(d)
    assert run.returncode == 1 and f"FAILED: consistency/{a}-{b}.json: the consistency proof does not verify" in run.stdout
    note = d / f"checkpoints/{summary.anchor}.note"
    note.write_bytes(note.read_bytes().replace(b"time 2", b"time 1"))
    run = auditor(d, "checkpoint", f"checkpoints/{summary.anchor}.note")
    assert run.returncode == 1 and f"checkpoints/{summary.anchor}.note: signature does not verify" in run.stdout


def test_inclusion_is_shown_step_by_step(exported):
    _, _, d, summary = exported
    run = auditor(d, "inclusion", "11")
    assert run.returncode == 0, run.stdout
    assert "leaf SHA-256(0x00 || bundles/000000000011.json)" in run.stdout
    assert len(re.findall(r"sibling [0-9a-f]{64} on the (left|right)", run.stdout)) == len(
        json.loads((d / "proofs/000000000011.json").read_text())["path"])
    proof = json.loads((d / "proofs/000000000011.json").read_text())
    proof["path"][0] = "00" * 32
    (d / "proofs/000000000011.json").write_text(json.dumps(proof))
    run = auditor(d, "inclusion", "11")
    assert run.returncode == 1 and "does not lead to the root of checkpoint" in run.stdout


def sh_blocks(text):
    return re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M)


def test_every_command_in_verify_md_runs(exported):
    """VERIFY.md shows each check as a command; each runs as it is, with sh,
    python3 and openssl in a clean environment, and succeeds."""
    _, _, d, summary = exported
    blocks = sh_blocks((d / "VERIFY.md").read_text())
    joined = "\n".join(blocks)
    for needed in ("python3 verify.py\n", "verify.py key", "verify.py manifest", "-sigfile manifest.json.sig",
                   "-sigfile bundles/", "sh openssl-verify.sh", "verify.py checkpoint", "verify.py leaf",
                   "verify.py inclusion", "verify.py consistency", "verify.py chain", "openssl dgst -sha256"):
        assert needed in joined, needed
    for block in blocks:
        run = subprocess.run(["sh", "-e", "-c", block.replace("python3 ", f"{PYTHON} -I -S ")], cwd=d,
                             env=CLEAN_ENV, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, (block, run.stdout, run.stderr)
    # The leaf the shell computes is the proof's.
    leaf = subprocess.run(["sh", "-c", r"(printf '\000'; cat bundles/000000000005.json) | openssl dgst -sha256"],
                          cwd=d, env=CLEAN_ENV, capture_output=True, text=True).stdout.split()[-1]
    assert leaf == json.loads((d / "proofs/000000000005.json").read_text())["leaf"]
