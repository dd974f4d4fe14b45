"""osiris-release: the repository it writes, checked with python-tuf's Metadata API, and its refusals."""

from __future__ import annotations

import hashlib
import json
import lzma
import stat
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner
from tuf.api.metadata import Metadata

from osiris_release import keys
from osiris_release.cli import main


def run(*args: str, code: int = 0, env: dict | None = None) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == code, output
    assert "Traceback" not in output
    return output


@pytest.fixture
def base(tmp_path) -> Path:
    for name in ("root1.pem", "root2.pem", "root3.pem"):
        run("keygen", tmp_path / name)
    (tmp_path / "uki.efi").write_bytes(b"MZ uki\n" * 1000)
    (tmp_path / "slot.img").write_bytes(b"".join(hashlib.sha256(bytes([i])).digest() * 300 for i in range(100)))
    return tmp_path


def init(base: Path, *extra: str) -> None:
    run("init", "--repo", base / "repo", "--keys", base / "keys", "--root-key", base / "root1.pem",
        "--root-key", base / "root2.pem", "--root-key", base / "root3.pem", "--threshold", "2", *extra)


def publish(base: Path, version: str, hardware: str = "hp-t640", *extra: str, code: int = 0) -> str:
    return run("publish", "--repo", base / "repo", "--keys", base / "keys", "--version", version,
               "--hardware", hardware, "--uki", base / "uki.efi", "--image", base / "slot.img", *extra, code=code)


def latest(base: Path, role: str) -> Metadata:
    meta = base / "repo" / "metadata"
    if role == "timestamp":
        return Metadata.from_file(str(meta / "timestamp.json"))
    newest = max(int(p.name.split(".")[0]) for p in meta.glob(f"*.{role}.json"))
    return Metadata.from_file(str(meta / f"{newest}.{role}.json"))


def test_keys_are_private_files_and_never_printed(base):
    output = run("keygen", base / "k.pem")
    signer = keys.load(base / "k.pem")
    assert signer.public_key.keyid in output
    assert stat.S_IMODE((base / "k.pem").stat().st_mode) == 0o600
    assert "PRIVATE" not in output and (base / "k.pem").read_text().split("\n")[1] not in output
    init(base)
    assert stat.S_IMODE((base / "keys").stat().st_mode) == 0o700
    for role in ("targets", "snapshot", "timestamp"):
        assert stat.S_IMODE((base / "keys" / f"{role}.pem").stat().st_mode) == 0o600
    publish(base, "1.0")
    served = [p for p in (base / "repo").rglob("*") if p.is_file()]
    assert served and not any(b"PRIVATE KEY" in p.read_bytes() for p in served)
    run("keygen", base / "k.pem", code=2)  # never overwritten


def test_a_publish_is_signed_down_the_chain_with_hashed_targets(base):
    init(base)
    root = latest(base, "root")
    assert root.signed.roles["root"].threshold == 2 and root.signed.consistent_snapshot
    root.verify_delegate("root", root)
    out = json.loads(publish(base, "2026.12.1", "hp-t640", "--compression", "xz", "--json"))
    targets, snapshot, timestamp = latest(base, "targets"), latest(base, "snapshot"), latest(base, "timestamp")
    assert (targets.signed.version, snapshot.signed.version, timestamp.signed.version) == (2, 2, 2)
    for role, md in (("targets", targets), ("snapshot", snapshot), ("timestamp", timestamp)):
        root.verify_delegate(role, md)
    targets_bytes = (base / "repo" / "metadata" / "2.targets.json").read_bytes()
    snapshot_bytes = (base / "repo" / "metadata" / "2.snapshot.json").read_bytes()
    snapshot.signed.meta["targets.json"].verify_length_and_hashes(targets_bytes)
    timestamp.signed.snapshot_meta.verify_length_and_hashes(snapshot_bytes)

    image = targets.signed.targets["hp-t640/2026.12.1/slot.img.xz"]
    assert image.custom == {**image.custom, "kind": "image", "version": "2026.12.1", "hardware": "hp-t640", "compression": "xz"}
    original = (base / "slot.img").read_bytes()
    assert image.custom["size"] == len(original) and image.custom["image_sha256"] == hashlib.sha256(original).hexdigest()
    served = base / "repo" / "targets" / "hp-t640" / "2026.12.1" / f"{image.hashes['sha256']}.slot.img.xz"
    image.verify_length_and_hashes(served.read_bytes())
    assert lzma.decompress(served.read_bytes()) == original and image.length < len(original)
    assert out["image"]["path"] == image.path

    uki = targets.signed.targets["hp-t640/2026.12.1/osiris.efi"]
    assert uki.custom["kind"] == "uki"
    uki.verify_length_and_hashes((base / "repo" / "targets" / "hp-t640" / "2026.12.1" / f"{uki.hashes['sha256']}.osiris.efi").read_bytes())

    publish(base, "2026.12.2")  # zstd by default, the frame says its size
    zst = latest(base, "targets").signed.targets["hp-t640/2026.12.2/slot.img.zst"]
    data = (base / "repo" / "targets" / "hp-t640" / "2026.12.2" / f"{zst.hashes['sha256']}.slot.img.zst").read_bytes()
    assert zstandard.frame_content_size(data) == len(original)
    assert zstandard.ZstdDecompressor().decompress(data) == original


def test_only_the_last_releases_are_kept_per_model(base):
    init(base, "--keep", "2")
    for version in ("1.0", "1.9", "1.10"):
        publish(base, version)
    publish(base, "0.5", "other-model")
    listed = sorted(latest(base, "targets").signed.targets)
    assert listed == [
        "hp-t640/1.10/osiris.efi", "hp-t640/1.10/slot.img.zst", "hp-t640/1.9/osiris.efi", "hp-t640/1.9/slot.img.zst",
        "other-model/0.5/osiris.efi", "other-model/0.5/slot.img.zst",
    ]
    assert not (base / "repo" / "targets" / "hp-t640" / "1.0").exists()
    status = json.loads(run("status", "--repo", base / "repo", "--keys", base / "keys", "--json"))
    assert [(r["hardware"], r["version"]) for r in status["releases"]] == [("hp-t640", "1.9"), ("hp-t640", "1.10"), ("other-model", "0.5")]
    assert status["roles"]["timestamp"]["version"] == 5 and not status["roles"]["root"]["expired"]


def test_timestamp_resigns_and_renews_what_is_due(base):
    init(base)
    publish(base, "1.0")
    run("timestamp", "--repo", base / "repo", "--keys", base / "keys")
    assert latest(base, "timestamp").signed.version == 3 and latest(base, "snapshot").signed.version == 2
    # a snapshot period so long that the snapshot signed for 30 days is due: it is re-signed
    settings = json.loads((base / "keys" / "release.json").read_text())
    settings["expires"]["snapshot"] = 1000 * 86400
    (base / "keys" / "release.json").write_text(json.dumps(settings))
    output = run("timestamp", "--repo", base / "repo", "--keys", base / "keys")
    assert "snapshot" in output and "targets" not in output
    snapshot, timestamp = latest(base, "snapshot"), latest(base, "timestamp")
    assert snapshot.signed.version == 3 and timestamp.signed.snapshot_meta.version == 3
    assert (snapshot.signed.expires - timestamp.signed.expires).days > 900


def test_rotating_an_online_key_needs_the_root_threshold_and_makes_a_new_root(base):
    init(base)
    publish(base, "1.0")
    old_root = latest(base, "root")
    old_id = old_root.signed.roles["timestamp"].keyids[0]
    out = run("rotate", "--repo", base / "repo", "--keys", base / "keys", "--role", "timestamp",
              "--root-key", base / "root1.pem", code=2)
    assert "threshold is 2" in out
    run("keygen", base / "stranger.pem")
    out = run("rotate", "--repo", base / "repo", "--keys", base / "keys", "--role", "timestamp",
              "--root-key", base / "root1.pem", "--root-key", base / "stranger.pem", code=2)
    assert "stranger.pem" in out and "not a root key" in out
    run("rotate", "--repo", base / "repo", "--keys", base / "keys", "--role", "timestamp",
        "--root-key", base / "root1.pem", "--root-key", base / "root3.pem")
    new_root = latest(base, "root")
    assert new_root.signed.version == 2
    old_root.verify_delegate("root", new_root)  # signed by the old root's threshold
    new_root.verify_delegate("root", new_root)
    new_id = new_root.signed.roles["timestamp"].keyids
    assert new_id != [old_id] and len(new_id) == 1
    assert keys.load(base / "keys" / "timestamp.pem").public_key.keyid == new_id[0]
    new_root.verify_delegate("timestamp", latest(base, "timestamp"))
    assert (base / "repo" / "metadata" / "root.json").read_bytes() == (base / "repo" / "metadata" / "2.root.json").read_bytes()
    run("renew-root", "--repo", base / "repo", "--keys", base / "keys", "--root-key", base / "root2.pem", "--root-key", base / "root3.pem")
    assert latest(base, "root").signed.version == 3


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("publish", "--version", "1.x"), "--version '1.x'"),
        (("publish", "--hardware", "HP T640"), "--hardware 'HP T640'"),
        (("publish", "--uki", "missing.efi"), "--uki"),
        (("publish", "--version", "1.0.0"), "already published"),
        (("status", "--repo", "elsewhere"), "no root metadata"),
        (("init",), "already a repository"),
    ],
)
def test_bad_input_is_named_without_a_traceback(base, args, named, monkeypatch):
    monkeypatch.chdir(base)
    init(base)
    publish(base, "1.0")
    command, *rest = args
    options = {"--repo": "repo", "--keys": "keys"}
    if command == "publish":
        options.update({"--version": "1.1", "--hardware": "hp-t640", "--uki": "uki.efi", "--image": "slot.img"})
    if command == "init":
        options.update({"--root-key": "root1.pem"})
    for flag, value in zip(rest[::2], rest[1::2]):
        options[flag] = value
    argv = [command] + [x for pair in options.items() for x in pair]
    assert named in run(*argv, code=2)


def test_init_refusals_and_key_files(base):
    out = run("init", "--repo", base / "repo", "--keys", base / "keys", "--root-key", base / "root1.pem", "--threshold", "2", code=2)
    assert "--threshold 2" in out
    out = run("init", "--repo", base / "repo", "--keys", base / "keys", "--root-key", base / "root1.pem", "--root-key", base / "root1.pem", code=2)
    assert "given twice" in out
    out = run("init", "--repo", base / "repo", "--keys", base / "keys", "--root-key", base / "uki.efi", code=2)
    assert "uki.efi" in out and "not a PEM private key" in out
    out = run("init", "--repo", base / "repo", "--keys", base / "keys", "--root-key", base / "root1.pem", "--timestamp-expiry", "5x", code=2)
    assert "5x" in out


def test_online_keys_must_be_private(base):
    init(base)
    (base / "keys" / "timestamp.pem").chmod(0o640)
    out = run("timestamp", "--repo", base / "repo", "--keys", base / "keys", code=2)
    assert "timestamp.pem" in out and "readable by others" in out


def test_a_passphrase_protected_root_key(base):
    keys.generate(base / "locked.pem", b"correct horse")
    args = ("init", "--repo", base / "repo", "--keys", base / "keys", "--root-key", base / "locked.pem")
    assert "encrypted" in run(*args, code=2, env={"OSIRIS_RELEASE_PASSPHRASE": ""})
    assert "wrong passphrase" in run(*args, code=2, env={"OSIRIS_RELEASE_PASSPHRASE": "wrong"})
    run(*args, env={"OSIRIS_RELEASE_PASSPHRASE": "correct horse"})
    assert latest(base, "root").signed.roles["root"].keyids == [keys.load(base / "locked.pem", b"correct horse").public_key.keyid]
