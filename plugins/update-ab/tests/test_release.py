"""The appliance's release client against a real repository made by `osiris-release`, over HTTPS.

Each test serves a copy of a repository built once per module by the
command itself (a subprocess), from a loopback HTTPS server with a test CA
the client pins; attacks are made by editing the served copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import zstandard
from osiris_release import keys
from osiris_release.testing import make_ca, serve_https
from tuf.api.metadata import Metadata
from tuf.api.serialization.json import JSONSerializer

from osiris_update_ab.release import Release, ReleaseClient, SlotImage, UpdateRefused, version_key

HW = "hp-t640"


def release_cmd(*args: str) -> dict | None:
    """`osiris-release ARGS` in its own process; its JSON output when --json is given."""
    result = subprocess.run(
        [sys.executable, "-m", "osiris_release", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if "--json" in args else None


def publish(base: Path, version: str, hardware: str = HW, image: bytes | None = None) -> dict:
    files = base / "build" / f"{hardware}-{version}"
    files.mkdir(parents=True, exist_ok=True)
    (files / "uki.efi").write_bytes(f"UKI {hardware} {version}\n".encode() * 100)
    payload = image if image is not None else _image(version)
    (files / "slot.img").write_bytes(payload)
    return release_cmd(
        "publish", "--repo", str(base / "repo"), "--keys", str(base / "keys"), "--version", version,
        "--hardware", hardware, "--uki", str(files / "uki.efi"), "--image", str(files / "slot.img"), "--json",
    )


def _image(version: str) -> bytes:
    """A slot image: compressible blocks with a little noise, some hundred KiB."""
    seed = hashlib.sha256(version.encode()).digest()
    return b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() * 64 for i in range(200))


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A repository with release 1.0, as `osiris-release` makes it; copies of it in states/."""
    base = tmp_path_factory.mktemp("release")
    for name in ("root1.pem", "root2.pem"):
        release_cmd("keygen", str(base / name))
    release_cmd(
        "init", "--repo", str(base / "repo"), "--keys", str(base / "keys"),
        "--root-key", str(base / "root1.pem"), "--root-key", str(base / "root2.pem"), "--threshold", "2",
    )
    publish(base, "1.0")
    return base


@pytest.fixture
def work(built, tmp_path) -> Path:
    """This test's own copy of the built repository and its keys."""
    shutil.copytree(built, tmp_path / "w")
    return tmp_path / "w"


class Site:
    """An HTTPS server whose served repository can be swapped for a saved state."""

    def __init__(self, www: Path, url: str) -> None:
        self.www, self.url = www, url

    @property
    def repo(self) -> Path:
        return self.www / "repo"

    def save(self, name: str) -> Path:
        shutil.copytree(self.repo, self.www.parent / name)
        return self.www.parent / name

    def serve(self, directory: Path) -> None:
        self.repo.unlink()
        os.symlink(directory, self.repo)


@contextmanager
def site(work: Path, ca):
    www = work / "www"
    if not www.exists():
        www.mkdir()
        os.symlink(work / "repo", www / "repo")
    with serve_https(www, ca) as url:
        yield url


def client(work: Path, url: str, ca, name: str = "appliance", hardware: str = HW) -> ReleaseClient:
    return ReleaseClient(
        url=f"{url}/repo",
        metadata_dir=work / name / "tuf",
        trusted_root=work / "repo" / "metadata" / "1.root.json",
        hardware=hardware,
        cafile=ca.cafile,
    )


def pinned_root(work: Path) -> Path:
    """The root an appliance image pins: a copy of version 1, outside the served tree."""
    pinned = work / "pinned-root.json"
    if not pinned.exists():
        shutil.copy(work / "repo" / "metadata" / "1.root.json", pinned)
    return pinned


def resign(work: Path, path: Path, key: str, change) -> None:
    """Edit metadata at `path` with `change(signed)` and sign it with the key file `key` (an attacker holding it)."""
    md = Metadata.from_file(str(path))
    change(md.signed)
    md.signatures.clear()
    md.sign(keys.load(work / "keys" / key) if "/" not in key else keys.load(Path(key)))
    path.write_bytes(md.to_bytes(JSONSerializer(compact=False)))


def refused(call, *words: str) -> str:
    with pytest.raises(UpdateRefused) as caught:
        call()
    message = str(caught.value)
    for word in words:
        assert word in message, message
    return message


def test_a_release_verifies_from_a_fresh_trusted_root_and_streams_verified(work, ca):
    with site(work, ca) as url:
        c = client(work, url, ca)
        release = c.latest(newer_than="0.9")
        assert isinstance(release, Release) and release.version == "1.0" and release.hardware == HW
        assert isinstance(release.image, SlotImage) and release.image.compression == "zstd"
        original = (work / "build" / f"{HW}-1.0" / "slot.img").read_bytes()
        assert release.image.size == len(original)
        assert release.image.image_sha256 == hashlib.sha256(original).hexdigest()
        served = b"".join(c.stream(release.image, chunk_size=4096))
        assert len(served) == release.image.length and hashlib.sha256(served).hexdigest() == release.image.sha256
        assert len(served) < len(original)
        assert zstandard.ZstdDecompressor().decompress(served) == original
        uki = b"".join(c.stream(release.uki))
        assert uki == (work / "build" / f"{HW}-1.0" / "uki.efi").read_bytes()
        # the trusted root pinned in the image is the only trust anchor needed
        assert (work / "appliance" / "tuf" / "timestamp.json").exists()


def test_newest_release_for_this_hardware_and_nothing_older_or_equal(work, ca):
    publish(work, "1.9")
    publish(work, "1.10")
    publish(work, "2.0", hardware="other-model")
    with site(work, ca) as url:
        assert client(work, url, ca).latest(newer_than=None).version == "1.10"
        assert client(work, url, ca, "b").latest(newer_than="1.9").version == "1.10"
        # equal (trailing zeros ignored) or older than the running version: nothing to install
        assert client(work, url, ca, "c").latest(newer_than="1.10.0") is None
        assert client(work, url, ca, "d").latest(newer_than="3.0") is None
        other = client(work, url, ca, "e", hardware="other-model").latest(newer_than="1.0")
        assert other.version == "2.0" and other.hardware == "other-model"
        assert other.image.path.startswith("other-model/")


def test_a_repository_with_releases_only_for_another_model_is_refused(work, ca):
    with site(work, ca) as url:
        refused(lambda: client(work, url, ca, hardware="dell-wyse").latest(newer_than="0.1"), "hardware", "dell-wyse", HW)


def test_version_order_is_numeric():
    assert version_key("1.10") > version_key("1.9") > version_key("1.0.1") > version_key("1")
    assert version_key("2026.12.0") == version_key("2026.12")
    with pytest.raises(ValueError, match="1.0-beta"):
        version_key("1.0-beta")


def test_freeze_an_expired_timestamp_is_refused(work, ca):
    """A replayed timestamp, validly signed, whose expiry has passed: a freeze."""
    ts = work / "repo" / "metadata" / "timestamp.json"

    def expire(signed):
        signed.version += 1
        signed.expires = datetime.now(timezone.utc) - timedelta(hours=1)

    resign(work, ts, "timestamp.pem", expire)
    with site(work, ca) as url:
        c = client(work, url, ca)
        refused(lambda: c.latest(newer_than="0.1"), "freeze", "expired", "timestamp")


def test_rolled_back_metadata_is_refused(work, ca):
    with site(work, ca) as url:
        s = Site(work / "www", url)
        old = s.save("state-1.0")
        publish(work, "1.1")
        c = client(work, url, ca)
        assert c.latest(newer_than="1.0").version == "1.1"
        s.serve(old)  # the repository as it was before 1.1
        message = refused(lambda: c.latest(newer_than="1.0"), "rollback")
        assert "timestamp" in message or "snapshot" in message
        # a rollback of the timestamp alone (the newer snapshot kept) too
        s.serve(work / "repo")
        shutil.copy(old / "metadata" / "timestamp.json", work / "repo" / "metadata" / "timestamp.json")
        refused(lambda: c.latest(newer_than="1.0"), "rollback")


def test_mix_and_match_metadata_is_refused(work, ca):
    publish(work, "1.1")  # targets/snapshot/timestamp version 3
    meta = work / "repo" / "metadata"
    with site(work, ca) as url:
        # the targets of the previous publish under the name the new snapshot asks for
        good = (meta / "3.targets.json").read_bytes()
        shutil.copy(meta / "2.targets.json", meta / "3.targets.json")
        refused(lambda: client(work, url, ca, "a").latest(newer_than="1.0"), "mix-and-match", "targets")
        (meta / "3.targets.json").write_bytes(good)
        # the snapshot of the previous publish with the new timestamp
        shutil.copy(meta / "2.snapshot.json", meta / "3.snapshot.json")
        refused(lambda: client(work, url, ca, "b").latest(newer_than="1.0"), "mix-and-match", "snapshot")


def test_tampered_metadata_is_refused(work, ca):
    meta = work / "repo" / "metadata"
    good = (meta / "timestamp.json").read_bytes()
    with site(work, ca) as url:
        ts = json.loads(good)
        ts["signed"]["expires"] = "2099-01-01T00:00:00Z"  # signature kept
        (meta / "timestamp.json").write_text(json.dumps(ts))
        refused(lambda: client(work, url, ca, "a").latest(newer_than="0.1"), "tampered metadata", "timestamp")

    # a root version 2 signed by keys the pinned root does not know
    (meta / "timestamp.json").write_bytes(good)
    keys.generate(work / "attacker.pem")
    root2 = meta / "2.root.json"
    shutil.copy(meta / "1.root.json", root2)
    resign(work, root2, str(work / "attacker.pem"), lambda signed: setattr(signed, "version", 2))
    with site(work, ca) as url:
        refused(lambda: client(work, url, ca, "b").latest(newer_than="0.1"), "tampered metadata", "root")


def _served_image(work: Path, release: Release) -> Path:
    directory, _, name = release.image.path.rpartition("/")
    return work / "repo" / "targets" / directory / f"{release.image.sha256}.{name}"


def test_tampered_target_bytes_are_refused_at_the_end_and_never_beyond_its_length(work, ca):
    with site(work, ca) as url:
        c = client(work, url, ca)
        release = c.latest(newer_than="0.1")
        path = _served_image(work, release)
        good = path.read_bytes()

        flipped = bytearray(good)
        flipped[len(flipped) // 2] ^= 0x01
        path.write_bytes(bytes(flipped))
        got = []
        refused(lambda: got.extend(c.stream(release.image, chunk_size=8192)), "tampered target", release.image.path)
        assert sum(map(len, got)) == release.image.length  # everything came, nothing may be committed

        path.write_bytes(good + b"\0" * 100_000)  # longer than signed
        got.clear()
        refused(lambda: got.extend(c.stream(release.image, chunk_size=8192)), "tampered target", "length")
        assert sum(map(len, got)) <= release.image.length

        path.write_bytes(good[:-10])
        refused(lambda: list(c.stream(release.image)), "truncated")

        path.write_bytes(good)
        assert hashlib.sha256(b"".join(c.stream(release.image))).hexdigest() == release.image.sha256


def test_a_client_that_trusted_the_old_root_follows_rotated_keys(work, ca):
    old_keys = work / "old-keys"
    shutil.copytree(work / "keys", old_keys)
    pinned = pinned_root(work)
    with site(work, ca) as url:
        c = ReleaseClient(url=f"{url}/repo", metadata_dir=work / "a" / "tuf", trusted_root=pinned, hardware=HW, cafile=ca.cafile)
        assert c.latest(newer_than="0.1").version == "1.0"
        for role in ("timestamp", "targets"):
            release_cmd(
                "rotate", "--repo", str(work / "repo"), "--keys", str(work / "keys"), "--role", role,
                "--root-key", str(work / "root1.pem"), "--root-key", str(work / "root2.pem"),
            )
        publish(work, "1.1")
        # the same appliance (root 1 pinned, root 1 cached) and a fresh one both follow
        assert c.latest(newer_than="1.0").version == "1.1"
        fresh = ReleaseClient(url=f"{url}/repo", metadata_dir=work / "b" / "tuf", trusted_root=pinned, hardware=HW, cafile=ca.cafile)
        assert fresh.latest(newer_than="1.0").version == "1.1"
        assert json.loads((work / "a" / "tuf" / "root.json").read_text())["signed"]["version"] == 3

        # the revoked timestamp key signs nothing any more
        def newer(signed):
            signed.version += 10
        resign(work, work / "repo" / "metadata" / "timestamp.json", str(old_keys / "timestamp.pem"), newer)
        refused(lambda: c.latest(newer_than="1.0"), "tampered metadata", "timestamp")


def test_bad_configuration_is_named(work, ca, tmp_path):
    with site(work, ca) as url:
        missing = ReleaseClient(url=url, metadata_dir=tmp_path / "m", trusted_root=tmp_path / "nope.json", hardware=HW, cafile=ca.cafile)
        refused(lambda: missing.latest(newer_than=None), "trusted root", "nope.json")
        (tmp_path / "garbage.json").write_text("{")
        garbage = ReleaseClient(url=url, metadata_dir=tmp_path / "m", trusted_root=tmp_path / "garbage.json", hardware=HW, cafile=ca.cafile)
        refused(lambda: garbage.latest(newer_than=None), "trusted root", "garbage.json")
        refused(lambda: client(work, url, ca).latest(newer_than="1.x"), "running version", "1.x")
    with pytest.raises(UpdateRefused, match="CA file"):
        ReleaseClient(url=url, metadata_dir=tmp_path / "m", trusted_root=tmp_path / "r", hardware=HW, cafile=tmp_path / "ca.pem")


def test_a_server_certificate_from_another_ca_is_refused(work, ca, tmp_path):
    other = make_ca(tmp_path / "other-ca")
    with site(work, ca) as url:
        c = ReleaseClient(url=f"{url}/repo", metadata_dir=tmp_path / "m", trusted_root=pinned_root(work), hardware=HW, cafile=other.cafile)
        refused(lambda: c.latest(newer_than=None), "unreachable")


def test_python_tufs_own_client_verifies_and_downloads_the_release(work, ca, monkeypatch, tmp_path):
    """ngclient as shipped (its default fetcher, trusting the test CA through SSL_CERT_FILE), none of release.py."""
    from tuf.ngclient import Updater

    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cafile))
    with site(work, ca) as url:
        updater = Updater(
            metadata_dir=str(tmp_path / "ngclient"),
            metadata_base_url=f"{url}/repo/metadata/",
            target_base_url=f"{url}/repo/targets/",
            target_dir=str(tmp_path / "downloads"),
            bootstrap=pinned_root(work).read_bytes(),
        )
        (tmp_path / "ngclient").mkdir(exist_ok=True)
        updater.refresh()
        info = updater.get_targetinfo(f"{HW}/1.0/slot.img.zst")
        assert info is not None and info.custom["version"] == "1.0" and info.custom["compression"] == "zstd"
        path = updater.download_target(info)
        original = (work / "build" / f"{HW}-1.0" / "slot.img").read_bytes()
        assert zstandard.ZstdDecompressor().decompress(Path(path).read_bytes()) == original
