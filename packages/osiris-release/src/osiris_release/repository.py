"""The release repository: TUF metadata and targets as plain files, signed with python-tuf's Metadata API.

Two directories. The repository (`metadata/`, `targets/`) is what an HTTPS
server or object store serves; it holds no secret. The key directory (0700)
holds the online keys (targets, snapshot, timestamp: `<role>.pem`, 0600) and
`release.json` (expiry periods, how many releases to keep). Root keys are
offline: given as files to `init`, `rotate` and `renew-root` only.

Consistent snapshots: metadata is written as `<version>.<role>.json` (the
timestamp as `timestamp.json`), targets as `<dir>/<sha256>.<name>`, and the
timestamp last, so a client never sees a half-made publish.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import lzma
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import zstandard
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import MetaFile, Metadata, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from osiris_release import keys
from osiris_release.errors import ReleaseError

ONLINE_ROLES = ("targets", "snapshot", "timestamp")
DEFAULT_EXPIRES = {
    "root": 365 * 86400,
    "targets": 180 * 86400,
    "snapshot": 30 * 86400,
    "timestamp": 86400,
}
DEFAULT_KEEP = 3
# Older snapshot/targets metadata kept for clients in the middle of a refresh.
METADATA_KEEP = 4
COMPRESSIONS = {"zstd": ".zst", "xz": ".xz", "none": ""}
CHUNK = 1 << 20
_SERIALIZER = JSONSerializer(compact=False)
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_HARDWARE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def version_key(version: str) -> tuple[int, ...]:
    """Numeric dotted order, trailing zeros ignored: the appliance's osiris_update_ab.release.version_key."""
    if not _VERSION.match(version):
        raise ReleaseError(f"--version {version!r}: expected numbers separated by dots, e.g. 2026.12.1")
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _HashingWriter:
    """Counts and hashes what a compressor writes into the target file."""

    def __init__(self, file) -> None:
        self.file = file
        self.digest = hashlib.sha256()
        self.length = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.length += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


class Repository:
    def __init__(self, repo: Path, keys_dir: Path) -> None:
        self.repo = Path(repo)
        self.keys_dir = Path(keys_dir)
        self.metadata_dir = self.repo / "metadata"
        self.targets_dir = self.repo / "targets"

    # -- files -------------------------------------------------------------

    def _versions(self, role: str) -> list[int]:
        found = []
        for path in self.metadata_dir.glob(f"*.{role}.json"):
            head = path.name.split(".", 1)[0]
            if head.isdigit():
                found.append(int(head))
        return sorted(found)

    def _path(self, role: str) -> Path:
        if role == "timestamp":
            return self.metadata_dir / "timestamp.json"
        versions = self._versions(role)
        if not versions:
            raise ReleaseError(f"{self.metadata_dir}: no {role} metadata (expected a repository made by `osiris-release init`)")
        return self.metadata_dir / f"{versions[-1]}.{role}.json"

    def load(self, role: str) -> Metadata:
        path = self._path(role)
        try:
            return Metadata.from_bytes(path.read_bytes())
        except OSError as e:
            raise ReleaseError(f"{path}: {e.strerror or e} (expected a repository made by `osiris-release init`)") from e
        except (DeserializationError, RepositoryError, ValueError) as e:
            raise ReleaseError(f"{path}: not TUF {role} metadata ({e})") from e

    def _write(self, md: Metadata, role: str) -> bytes:
        data = md.to_bytes(_SERIALIZER)
        name = "timestamp.json" if role == "timestamp" else f"{md.signed.version}.{role}.json"
        _atomic_write(self.metadata_dir / name, data)
        if role == "root":
            _atomic_write(self.metadata_dir / "root.json", data)
        return data

    def settings(self) -> dict:
        path = self.keys_dir / "release.json"
        try:
            settings = json.loads(path.read_text())
        except OSError as e:
            raise ReleaseError(f"{path}: {e.strerror or e} (expected the key directory made by `osiris-release init`)") from e
        except ValueError as e:
            raise ReleaseError(f"{path}: not JSON ({e})") from e
        expires = settings.get("expires", {})
        for role in DEFAULT_EXPIRES:
            if not isinstance(expires.get(role), int) or expires[role] <= 0:
                raise ReleaseError(f"{path}: expires.{role}: expected a positive number of seconds")
        if not isinstance(settings.get("keep"), int) or settings["keep"] < 1:
            raise ReleaseError(f"{path}: keep: expected a positive number of releases")
        return settings

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time (a cron's `timestamp` beside a `publish`)."""
        try:
            fd = os.open(self.keys_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise ReleaseError(f"key directory {self.keys_dir}: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _online_signer(self, root: Root, role: str) -> CryptoSigner:
        path = self.keys_dir / f"{role}.pem"
        signer = keys.load(path, private_mode=True)
        if signer.public_key.keyid not in root.roles[role].keyids:
            raise ReleaseError(f"key file {path}: not the {role} key of root version {root.version} (rotated by another copy of the keys?)")
        return signer

    def _root_signers(self, root: Root, files: list[Path]) -> list[CryptoSigner]:
        """The given offline root keys, checked against the root's keys and threshold."""
        signers: dict[str, CryptoSigner] = {}
        for path in files:
            signer = keys.load(path)
            if signer.public_key.keyid not in root.roles["root"].keyids:
                raise ReleaseError(f"--root-key {path}: not a root key of root version {root.version}")
            if signer.public_key.keyid in signers:
                raise ReleaseError(f"--root-key {path}: the same key was given twice")
            signers[signer.public_key.keyid] = signer
        threshold = root.roles["root"].threshold
        if len(signers) < threshold:
            raise ReleaseError(f"--root-key: {len(signers)} given, the root's threshold is {threshold} of {len(root.roles['root'].keyids)} keys")
        return list(signers.values())

    # -- signing chain -------------------------------------------------------

    def _sign(self, md: Metadata, role: str, signers: list[CryptoSigner], expires: int, bump: bool = True) -> bytes:
        if bump:
            md.signed.version += 1
        md.signed.expires = _now() + timedelta(seconds=expires)
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)
        return self._write(md, role)

    def _resign_from(self, first: str, root: Root, settings: dict) -> list[str]:
        """Re-sign `first` and every role below it (targets -> snapshot -> timestamp)."""
        chain = list(ONLINE_ROLES[ONLINE_ROLES.index(first):])
        data = None
        if "targets" in chain:
            targets = self.load("targets")
            data = self._sign(targets, "targets", [self._online_signer(root, "targets")], settings["expires"]["targets"])
        if "snapshot" in chain:
            snapshot = self.load("snapshot")
            if data is not None:
                snapshot.signed.meta["targets.json"] = _metafile(self.load("targets").signed.version, data)
            data = self._sign(snapshot, "snapshot", [self._online_signer(root, "snapshot")], settings["expires"]["snapshot"])
        timestamp = self.load("timestamp")
        if data is not None:
            timestamp.signed.snapshot_meta = _metafile(self.load("snapshot").signed.version, data)
        self._sign(timestamp, "timestamp", [self._online_signer(root, "timestamp")], settings["expires"]["timestamp"])
        return chain

    # -- commands ------------------------------------------------------------

    def init(self, root_key_files: list[Path], threshold: int, expires: dict[str, int], keep: int) -> Root:
        if self.metadata_dir.is_dir() and any(self.metadata_dir.iterdir()):
            raise ReleaseError(f"--repo {self.repo}: already a repository ({self.metadata_dir} is not empty)")
        if not root_key_files:
            raise ReleaseError("--root-key: give at least one offline root key file (osiris-release keygen FILE)")
        signers: dict[str, CryptoSigner] = {}
        for path in root_key_files:
            signer = keys.load(path)
            if signer.public_key.keyid in signers:
                raise ReleaseError(f"--root-key {path}: the same key was given twice")
            signers[signer.public_key.keyid] = signer
        if not 1 <= threshold <= len(signers):
            raise ReleaseError(f"--threshold {threshold}: expected 1 to {len(signers)} (the number of --root-key files)")
        if keep < 1:
            raise ReleaseError(f"--keep {keep}: expected at least 1 release")
        for role in ONLINE_ROLES:
            if (self.keys_dir / f"{role}.pem").exists():
                raise ReleaseError(f"--keys {self.keys_dir}: {role}.pem already exists (a key directory serves one repository)")
        try:
            self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
            self.targets_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ReleaseError(f"{e.filename}: {e.strerror}") from e
        settings = {"expires": {**DEFAULT_EXPIRES, **expires}, "keep": keep}
        _atomic_write(self.keys_dir / "release.json", json.dumps(settings, indent=2).encode() + b"\n")
        online = {role: keys.generate(self.keys_dir / f"{role}.pem") for role in ONLINE_ROLES}

        root = Root(consistent_snapshot=True)
        for signer in signers.values():
            root.add_key(signer.public_key, "root")
        root.roles["root"].threshold = threshold
        for role, signer in online.items():
            root.add_key(signer.public_key, role)
        self._sign(Metadata(root), "root", list(signers.values()), settings["expires"]["root"], bump=False)
        data = self._sign(Metadata(Targets()), "targets", [online["targets"]], settings["expires"]["targets"], bump=False)
        snapshot = Snapshot(meta={"targets.json": _metafile(1, data)})
        data = self._sign(Metadata(snapshot), "snapshot", [online["snapshot"]], settings["expires"]["snapshot"], bump=False)
        timestamp = Timestamp(snapshot_meta=_metafile(1, data))
        self._sign(Metadata(timestamp), "timestamp", [online["timestamp"]], settings["expires"]["timestamp"], bump=False)
        return root

    def publish(self, version: str, hardware: str, uki: Path, image: Path, compression: str = "zstd") -> dict:
        version_key(version)
        if not _HARDWARE.match(hardware):
            raise ReleaseError(f"--hardware {hardware!r}: expected lower-case letters, digits, '.', '_' or '-' (a model name, e.g. hp-t640)")
        if compression not in COMPRESSIONS:
            raise ReleaseError(f"--compression {compression!r}: expected one of {', '.join(COMPRESSIONS)}")
        for option, path in (("--uki", uki), ("--image", image)):
            if not path.is_file():
                raise ReleaseError(f"{option} {path}: not a file")
        with self.locked():
            settings = self.settings()
            root = self.load("root").signed
            targets = self.load("targets")
            for path, info in targets.signed.targets.items():
                custom = _custom(info)
                if custom.get("hardware") == hardware and _order(str(custom.get("version"))) == version_key(version):
                    raise ReleaseError(f"--version {version}: already published for {hardware} ({path})")
            signers = {role: self._online_signer(root, role) for role in ONLINE_ROLES}
            base = f"{hardware}/{version}"
            common = {"hardware": hardware, "version": version}
            uki_file = self._add_file(f"{base}/osiris.efi", uki, "none", {**common, "kind": "uki"})
            image_file = self._add_file(
                f"{base}/slot.img{COMPRESSIONS[compression]}", image, compression, {**common, "kind": "image"}
            )
            targets.signed.targets[uki_file.path] = uki_file
            targets.signed.targets[image_file.path] = image_file
            pruned = self._prune_entries(targets.signed, hardware, settings["keep"])
            data = self._sign(targets, "targets", [signers["targets"]], settings["expires"]["targets"])
            snapshot = self.load("snapshot")
            snapshot.signed.meta["targets.json"] = _metafile(targets.signed.version, data)
            data = self._sign(snapshot, "snapshot", [signers["snapshot"]], settings["expires"]["snapshot"])
            timestamp = self.load("timestamp")
            timestamp.signed.snapshot_meta = _metafile(snapshot.signed.version, data)
            self._sign(timestamp, "timestamp", [signers["timestamp"]], settings["expires"]["timestamp"])
            self._prune_files(targets.signed)
        return {
            "version": version,
            "hardware": hardware,
            "uki": {"path": uki_file.path, "length": uki_file.length},
            "image": {"path": image_file.path, "length": image_file.length, **image_file.custom},
            "pruned": pruned,
        }

    def _add_file(self, path: str, source: Path, compression: str, custom: dict) -> TargetFile:
        """Copy (compressing) `source` into targets/ under its hash-prefixed name; its TargetFile."""
        tmp = self.targets_dir / f".{os.getpid()}.partial"
        size = 0
        plain = hashlib.sha256()
        try:
            with open(tmp, "wb") as out:
                writer = _HashingWriter(out)
                if compression == "zstd":
                    total = source.stat().st_size
                    compressor = zstandard.ZstdCompressor(level=6, write_content_size=True)
                    with compressor.stream_writer(writer, size=total, closefd=False) as z:
                        for chunk in _chunks(source):
                            plain.update(chunk)
                            size += len(chunk)
                            z.write(chunk)
                elif compression == "xz":
                    compressor = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6)
                    for chunk in _chunks(source):
                        plain.update(chunk)
                        size += len(chunk)
                        writer.write(compressor.compress(chunk))
                    writer.write(compressor.flush())
                else:
                    for chunk in _chunks(source):
                        plain.update(chunk)
                        size += len(chunk)
                        writer.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = writer.digest.hexdigest()
            directory, _, name = path.rpartition("/")
            final = self.targets_dir / directory / f"{digest}.{name}"
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        except OSError as e:
            raise ReleaseError(f"{e.filename or source}: {e.strerror or e}") from e
        finally:
            tmp.unlink(missing_ok=True)
        if custom["kind"] == "image":
            custom = {**custom, "compression": compression, "size": size, "image_sha256": plain.hexdigest()}
        return TargetFile(writer.length, {"sha256": digest}, path, unrecognized_fields={"custom": custom})

    @staticmethod
    def _prune_entries(targets: Targets, hardware: str, keep: int) -> list[str]:
        """Drop all but the newest `keep` versions for `hardware` from the targets metadata."""
        versions = {
            str(_custom(info).get("version"))
            for info in targets.targets.values()
            if _custom(info).get("hardware") == hardware
        }
        ordered = sorted(versions, key=_order, reverse=True)
        dropped = set(ordered[keep:])
        for path in [p for p, info in targets.targets.items() if _custom(info).get("hardware") == hardware and _custom(info).get("version") in dropped]:
            del targets.targets[path]
        return sorted(dropped, key=_order)

    def _prune_files(self, targets: Targets) -> None:
        """Remove target files no longer listed, and metadata versions no client needs any more."""
        wanted = set()
        for info in targets.targets.values():
            directory, _, name = info.path.rpartition("/")
            wanted.add(self.targets_dir / directory / f"{info.hashes['sha256']}.{name}")
        for path in sorted(self.targets_dir.rglob("*"), reverse=True):
            if path.is_file() and path not in wanted and not path.name.startswith("."):
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        for role in ("targets", "snapshot"):
            for old in self._versions(role)[:-METADATA_KEEP]:
                (self.metadata_dir / f"{old}.{role}.json").unlink(missing_ok=True)

    def timestamp(self) -> list[str]:
        """Re-sign the timestamp (what a cron runs); targets and snapshot too when a quarter of their period is left."""
        with self.locked():
            settings = self.settings()
            root = self.load("root").signed
            now = _now()
            first = "timestamp"
            for role in ("snapshot", "targets"):
                md = self.load(role)
                if md.signed.expires - now < timedelta(seconds=settings["expires"][role] / 4):
                    first = role
            return self._resign_from(first, root, settings)

    def rotate(self, role: str, root_key_files: list[Path]) -> Root:
        """A new key for an online role, put into a new root version signed by the offline root keys."""
        if role not in ONLINE_ROLES:
            raise ReleaseError(f"--role {role!r}: expected one of {', '.join(ONLINE_ROLES)}")
        with self.locked():
            settings = self.settings()
            root_md = self.load("root")
            root = root_md.signed
            signers = self._root_signers(root, root_key_files)
            pending = self.keys_dir / f"{role}.pem.new"
            pending.unlink(missing_ok=True)  # a rotation that failed before its root was written
            new = keys.generate(pending)
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            root.add_key(new.public_key, role)
            self._sign(root_md, "root", signers, settings["expires"]["root"])
            os.replace(pending, self.keys_dir / f"{role}.pem")
            self._resign_from(role, root, settings)
            return root

    def renew_root(self, root_key_files: list[Path]) -> Root:
        """A new root version with a new expiry and the same keys (before the old one expires)."""
        with self.locked():
            settings = self.settings()
            root_md = self.load("root")
            signers = self._root_signers(root_md.signed, root_key_files)
            self._sign(root_md, "root", signers, settings["expires"]["root"])
            return root_md.signed

    def status(self) -> dict:
        roles = {}
        root = self.load("root").signed
        for role in ("root", *ONLINE_ROLES):
            md = self.load(role)
            roles[role] = {
                "version": md.signed.version,
                "expires": md.signed.expires.isoformat().replace("+00:00", "Z"),
                "expired": md.signed.is_expired(),
                "keys": sorted(root.roles[role].keyids),
                "threshold": root.roles[role].threshold,
            }
        releases: dict[tuple[str, str], dict] = {}
        for path, info in self.load("targets").signed.targets.items():
            custom = _custom(info)
            entry = releases.setdefault((custom.get("hardware", "?"), custom.get("version", "?")), {"files": []})
            entry["files"].append({"path": path, "length": info.length, "sha256": info.hashes.get("sha256")})
        listed = [
            {"hardware": hw, "version": v, **entry}
            for (hw, v), entry in sorted(releases.items(), key=lambda kv: (kv[0][0], _order(kv[0][1])))
        ]
        return {"repository": str(self.repo), "roles": roles, "releases": listed}


def _order(version: str) -> tuple[int, ...]:
    try:
        return version_key(version)
    except ReleaseError:
        return ()


def _metafile(version: int, data: bytes) -> MetaFile:
    return MetaFile(version=version, length=len(data), hashes={"sha256": _sha256(data)})



def _custom(info: TargetFile) -> dict:
    custom = info.unrecognized_fields.get("custom")
    return custom if isinstance(custom, dict) else {}
