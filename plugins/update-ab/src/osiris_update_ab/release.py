"""The appliance's view of a release repository: TUF-verified, streamed.

python-tuf's ngclient refreshes root -> timestamp -> snapshot -> targets from
the repository against the root pinned in the image, so a freeze (expired
metadata), a rollback (older versions), mix-and-match (metadata of different
publishes) and tampered metadata are refused before any release is offered.
The big slot image is not downloaded by ngclient (it buffers a target in a
temporary file); `stream` fetches it in chunks, counting and hashing as it
goes, so the installer writes it in one pass with bounded memory and commits
nothing before the iterator ends without an error.

The repository is the one `osiris-release` writes (docs/updates.md): target
paths `<hardware>/<version>/<file>` with custom fields `kind` ("uki" or
"image"), `version`, `hardware`, and for the image `compression`, `size` and
`image_sha256` (the uncompressed slot image).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import urllib3
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Targets, TargetFile
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

log = logging.getLogger(__name__)

COMPRESSIONS = ("zstd", "xz", "none")
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Target:
    """A file of a release as served: its path in the repository, length and sha256."""

    path: str
    length: int
    sha256: str


@dataclass(frozen=True)
class SlotImage(Target):
    """The slot image as served (compressed) and what it decompresses to."""

    compression: str  # "zstd" | "xz" | "none"
    size: int
    image_sha256: str


@dataclass(frozen=True)
class Release:
    version: str
    hardware: str
    uki: Target
    image: SlotImage


class UpdateRefused(Exception):
    """An update refused; the message names what was refused and why (the attack)."""


class RepositoryUnreachable(UpdateRefused):
    """The repository could not be reached (network, TLS, HTTP status): not an attack."""


def version_key(version: str) -> tuple[int, ...]:
    """Order of release versions: numeric dotted ("2026.12.1"), trailing zeros ignored.

    The same rule as `osiris-release publish`, which refuses anything else.
    """
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ValueError(f"version {version!r}: expected numbers separated by dots, e.g. 2026.12.1")
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


class _Fetcher(FetcherInterface):
    """HTTP(S) with a pinned CA file and no proxies: metadata for ngclient, targets for `stream`."""

    def __init__(self, cafile: Path | None, timeout: float = 30.0) -> None:
        kwargs = {"cert_reqs": "CERT_REQUIRED", "retries": False}
        if cafile is not None:
            kwargs["ca_certs"] = str(cafile)
        self.pool = urllib3.PoolManager(**kwargs)
        self.timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self.last_url = ""

    def open(self, url: str) -> urllib3.BaseHTTPResponse:
        self.last_url = url
        try:
            response = self.pool.request(
                "GET", url, preload_content=False, decode_content=False, timeout=self.timeout, redirect=False
            )
        except urllib3.exceptions.HTTPError as e:
            raise tuf_errors.DownloadError(f"{url}: {_reason(e)}") from e
        if response.status != 200:
            response.release_conn()
            raise tuf_errors.DownloadHTTPError(f"{url}: HTTP status {response.status}", response.status)
        return response

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self.chunks(self.open(url), 1 << 16)

    @staticmethod
    def chunks(response: urllib3.BaseHTTPResponse, size: int) -> Iterator[bytes]:
        try:
            yield from response.stream(size, decode_content=False)
        except urllib3.exceptions.HTTPError as e:
            raise tuf_errors.DownloadError(_reason(e)) from e
        finally:
            response.release_conn()


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error)


def _refusal(error: Exception, url: str = "") -> UpdateRefused:
    """What ngclient's error means, in words that name the attack it stops (and the file last fetched)."""
    text = str(error) or type(error).__name__
    if url and not isinstance(error, tuf_errors.DownloadError):
        text = f"{url.rsplit('/', 1)[-1]}: {text}"
    if isinstance(error, tuf_errors.ExpiredMetadataError):
        return UpdateRefused(f"refused: expired metadata ({text}): a freeze attack, or a repository nobody re-signs")
    if isinstance(error, tuf_errors.BadVersionNumberError):
        return UpdateRefused(f"refused: metadata version rollback ({text}): the repository serves older metadata than this appliance has seen")
    if isinstance(error, tuf_errors.LengthOrHashMismatchError):
        return UpdateRefused(f"refused: mix-and-match metadata ({text}): a file does not match what the newer metadata says of it")
    if isinstance(error, tuf_errors.UnsignedMetadataError):
        return UpdateRefused(f"refused: tampered metadata, bad or missing signatures ({text})")
    if isinstance(error, tuf_errors.DownloadLengthMismatchError):
        return UpdateRefused(f"refused: metadata larger than announced ({text}): an endless-data or mix-and-match attack")
    if isinstance(error, tuf_errors.DownloadError):
        return RepositoryUnreachable(f"repository unreachable: {text}")
    if isinstance(error, tuf_errors.RepositoryError):
        return UpdateRefused(f"refused: invalid metadata ({text})")
    return UpdateRefused(f"refused: {type(error).__name__}: {text}")


class ReleaseClient:
    """Finds the newest release for this hardware in a TUF repository and streams its files."""

    def __init__(
        self,
        *,
        url: str,
        metadata_dir: Path,
        trusted_root: Path,
        hardware: str,
        cafile: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.metadata_dir = Path(metadata_dir)
        self.trusted_root = Path(trusted_root)
        self.hardware = hardware
        if cafile is not None and not Path(cafile).is_file():
            raise UpdateRefused(f"CA file {cafile}: not found (expected a PEM bundle for the repository's HTTPS)")
        self._fetcher = _Fetcher(Path(cafile) if cafile is not None else None)

    def _root_bytes(self) -> bytes:
        try:
            data = self.trusted_root.read_bytes()
        except OSError as e:
            raise UpdateRefused(f"trusted root {self.trusted_root}: {e.strerror or e} (expected the root.json pinned in the image)") from e
        try:
            Metadata.from_bytes(data)
        except (ValueError, tuf_errors.RepositoryError) as e:
            raise UpdateRefused(f"trusted root {self.trusted_root}: not TUF root metadata ({e})") from e
        return data

    def _refresh(self) -> tuple[Updater, Targets]:
        try:
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UpdateRefused(f"metadata directory {self.metadata_dir}: {e.strerror or e}") from e
        bootstrap = self._root_bytes()
        try:
            updater = Updater(
                metadata_dir=str(self.metadata_dir),
                metadata_base_url=f"{self.url}/metadata/",
                target_base_url=f"{self.url}/targets/",
                fetcher=self._fetcher,
                bootstrap=bootstrap,
            )
            updater.refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as e:
            raise _refusal(e, self._fetcher.last_url) from e
        except ValueError as e:  # a trusted root that parses but is not a root
            raise UpdateRefused(f"trusted root {self.trusted_root}: {e}") from e
        # ngclient lists no targets: it writes targets.json into metadata_dir
        # only once verified against snapshot and root, so that file is the
        # verified list (each entry is looked up again through the updater).
        try:
            targets = Metadata[Targets].from_file(str(self.metadata_dir / "targets.json")).signed
        except (OSError, ValueError, tuf_errors.RepositoryError) as e:
            raise UpdateRefused(f"refused: verified targets metadata unreadable in {self.metadata_dir}: {e}") from e
        return updater, targets

    def latest(self, *, newer_than: str | None) -> Release | None:
        """The newest release for this hardware; None when none is newer than `newer_than`.

        Raises UpdateRefused for any failed verification (named), and when the
        repository has releases but none for this hardware.
        """
        if newer_than is not None:
            try:
                running = version_key(newer_than)
            except ValueError as e:
                raise UpdateRefused(f"running version: {e}") from e
        updater, targets = self._refresh()
        releases: dict[str, dict[str, TargetFile]] = {}
        others: set[str] = set()
        for path in sorted(targets.targets):
            try:
                info = updater.get_targetinfo(path)
            except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as e:
                raise _refusal(e) from e
            if info is None:
                continue
            custom = info.custom if isinstance(info.custom, dict) else {}
            hardware, version, kind = custom.get("hardware"), custom.get("version"), custom.get("kind")
            if not (isinstance(hardware, str) and isinstance(version, str) and kind in ("uki", "image")):
                log.warning("target %s: no hardware/version/kind: ignored", path)
                continue
            if hardware != self.hardware:
                others.add(hardware)
                continue
            if not path.startswith(f"{hardware}/{version}/"):
                raise UpdateRefused(f"refused: target {path} says hardware {hardware} version {version} but its path does not")
            releases.setdefault(version, {})[kind] = info
        complete = {}
        for version, files in releases.items():
            try:
                key = version_key(version)
            except ValueError:
                log.warning("release %s for %s: not a numeric dotted version: ignored", version, self.hardware)
                continue
            if "uki" in files and "image" in files:
                complete[version] = (key, files)
        if not complete:
            if others:
                raise UpdateRefused(
                    f"refused: no release for hardware {self.hardware!r}: the repository's releases are for "
                    + ", ".join(repr(h) for h in sorted(others))
                    + " (a target for another hardware model is never installed)"
                )
            return None
        version, (key, files) = max(complete.items(), key=lambda item: item[1][0])
        if newer_than is not None and key <= running:
            log.info("newest release for %s is %s, not newer than the running %s", self.hardware, version, newer_than)
            return None
        return Release(version=version, hardware=self.hardware, uki=_target(files["uki"]), image=_slot_image(files["image"]))

    def url_of(self, target: Target) -> str:
        """The consistent-snapshot URL: the file's name prefixed with its sha256."""
        directory, _, name = target.path.rpartition("/")
        prefix = f"{directory}/" if directory else ""
        return f"{self.url}/targets/{quote(prefix + target.sha256 + '.' + name)}"

    def stream(self, target: Target, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The target's bytes, verified as they pass: never more than its length, its sha256 at the end.

        Raises UpdateRefused before yielding a byte beyond `target.length`, and
        after the last chunk when the length or sha256 differ, so the consumer
        commits nothing before the iterator ends.
        """
        try:
            response = self._fetcher.open(self.url_of(target))
        except tuf_errors.DownloadError as e:
            raise _refusal(e) from e
        digest = hashlib.sha256()
        received = 0
        try:
            for chunk in self._fetcher.chunks(response, chunk_size):
                received += len(chunk)
                if received > target.length:
                    raise UpdateRefused(
                        f"refused: tampered target {target.path}: more than its signed length of {target.length} bytes"
                    )
                digest.update(chunk)
                yield chunk
        except tuf_errors.DownloadError as e:
            raise RepositoryUnreachable(f"repository unreachable while downloading {target.path}: {e}") from e
        finally:
            response.release_conn()
        if received != target.length:
            raise UpdateRefused(f"refused: truncated target {target.path}: {received} of {target.length} bytes")
        if digest.hexdigest() != target.sha256:
            raise UpdateRefused(f"refused: tampered target {target.path}: its sha256 is not the signed one")


def _target(info: TargetFile) -> Target:
    return Target(path=info.path, length=info.length, sha256=_sha256_of(info))


def _sha256_of(info: TargetFile) -> str:
    digest = info.hashes.get("sha256", "")
    if not _SHA256.match(digest):
        raise UpdateRefused(f"refused: target {info.path} has no sha256 hash")
    return digest


def _slot_image(info: TargetFile) -> SlotImage:
    custom = info.custom
    compression, size, image_sha256 = custom.get("compression"), custom.get("size"), custom.get("image_sha256")
    if compression not in COMPRESSIONS:
        raise UpdateRefused(f"refused: target {info.path}: compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UpdateRefused(f"refused: target {info.path}: uncompressed size {size!r} is not a byte count")
    if not isinstance(image_sha256, str) or not _SHA256.match(image_sha256):
        raise UpdateRefused(f"refused: target {info.path}: image_sha256 {image_sha256!r} is not a sha256")
    return SlotImage(
        path=info.path,
        length=info.length,
        sha256=_sha256_of(info),
        compression=compression,
        size=size,
        image_sha256=image_sha256,
    )
