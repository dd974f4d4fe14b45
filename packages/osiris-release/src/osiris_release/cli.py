"""osiris-release: make and keep the TUF repository the appliances update from (docs/updates.md)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import click

from osiris_release import keys
from osiris_release.errors import ReleaseError
from osiris_release.repository import COMPRESSIONS, DEFAULT_EXPIRES, DEFAULT_KEEP, ONLINE_ROLES, Repository

_DURATION = re.compile(r"^([0-9]+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        match = _DURATION.match(str(value).strip())
        if not match or int(match.group(1)) == 0:
            self.fail(f"{value!r}: expected a positive number with a unit s, m, h or d (e.g. 365d, 12h)", param, ctx)
        return int(match.group(1)) * _UNITS[match.group(2)]


def _reporting(command):
    """Errors as one line naming the file or option (exit 2), never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ReleaseError as e:
            raise _Failure(str(e)) from None
        except OSError as e:
            raise _Failure(f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")) from None

    return wrapper


class _Failure(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _repository_options(command):
    command = click.option(
        "--keys",
        "keys_dir",
        envvar="OSIRIS_RELEASE_KEYS",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The directory of the online keys (never served). Env OSIRIS_RELEASE_KEYS.",
    )(command)
    return click.option(
        "--repo",
        envvar="OSIRIS_RELEASE_REPO",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The repository directory (metadata/ and targets/, what the HTTPS server serves). Env OSIRIS_RELEASE_REPO.",
    )(command)


_root_key_option = click.option(
    "--root-key",
    "root_keys",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="An offline root key file (repeat for each key; as many as the threshold).",
)


@click.group()
def main() -> None:
    """Publish Osiris releases as a TUF repository of plain files."""


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--passphrase/--no-passphrase", default=False, help="Encrypt the key file with a passphrase (asked twice).")
@_reporting
def keygen(file: Path, passphrase: bool) -> None:
    """Make an Ed25519 key FILE (0600) for an offline root key; prints its key id."""
    secret = None
    if passphrase:
        secret = click.prompt("passphrase", hide_input=True, confirmation_prompt=True).encode()
    signer = keys.generate(file, secret)
    click.echo(f"{file}: key id {signer.public_key.keyid}")


@main.command()
@_repository_options
@_root_key_option
@click.option("--threshold", type=int, default=1, show_default=True, help="How many root keys must sign a new root.")
@click.option("--keep", type=int, default=DEFAULT_KEEP, show_default=True, help="Releases kept per hardware model (older ones are pruned).")
@click.option("--root-expiry", type=Duration(), default=f"{DEFAULT_EXPIRES['root'] // 86400}d", show_default=True)
@click.option("--targets-expiry", type=Duration(), default=f"{DEFAULT_EXPIRES['targets'] // 86400}d", show_default=True)
@click.option("--snapshot-expiry", type=Duration(), default=f"{DEFAULT_EXPIRES['snapshot'] // 86400}d", show_default=True)
@click.option("--timestamp-expiry", type=Duration(), default=f"{DEFAULT_EXPIRES['timestamp'] // 86400}d", show_default=True)
@_reporting
def init(repo, keys_dir, root_keys, threshold, keep, root_expiry, targets_expiry, snapshot_expiry, timestamp_expiry) -> None:
    """A new repository: root signed by the offline root keys, new online keys in --keys."""
    expires = {"root": root_expiry, "targets": targets_expiry, "snapshot": snapshot_expiry, "timestamp": timestamp_expiry}
    root = Repository(repo, keys_dir).init(list(root_keys), threshold, expires, keep)
    click.echo(f"repository {repo}: root version {root.version}, {threshold} of {len(root_keys)} root keys")
    click.echo(f"the appliances' trusted root: {repo / 'metadata' / '1.root.json'}")


@main.command()
@_repository_options
@click.option("--version", "version", required=True, help="The release's version, numbers separated by dots (e.g. 2026.12.1).")
@click.option("--hardware", required=True, help="The hardware model it is built for (e.g. hp-t640).")
@click.option("--uki", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The unified kernel image.")
@click.option("--image", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The slot image (squashfs).")
@click.option("--compression", type=click.Choice(list(COMPRESSIONS)), default="zstd", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print what was published as JSON.")
@_reporting
def publish(repo, keys_dir, version, hardware, uki, image, compression, as_json) -> None:
    """Add a release: the UKI and the compressed slot image, signed into targets, snapshot, timestamp."""
    result = Repository(repo, keys_dir).publish(version, hardware, uki, image, compression)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    image_info = result["image"]
    click.echo(f"published {version} for {hardware}")
    click.echo(f"  {result['uki']['path']}  {result['uki']['length']} bytes")
    click.echo(f"  {image_info['path']}  {image_info['length']} bytes ({compression}, {image_info['size']} uncompressed)")
    if result["pruned"]:
        click.echo(f"  pruned: {', '.join(result['pruned'])}")


@main.command()
@_repository_options
@_reporting
def timestamp(repo, keys_dir) -> None:
    """Re-sign the timestamp (run it from cron well within its expiry)."""
    signed = Repository(repo, keys_dir).timestamp()
    click.echo(f"re-signed: {', '.join(signed)}")


@main.command()
@_repository_options
@_root_key_option
@click.option("--role", required=True, type=click.Choice(list(ONLINE_ROLES)), help="The online role whose key is replaced.")
@_reporting
def rotate(repo, keys_dir, root_keys, role) -> None:
    """A new key for an online role, in a new root signed by the offline root keys."""
    root = Repository(repo, keys_dir).rotate(role, list(root_keys))
    click.echo(f"{role}: new key {root.roles[role].keyids[0]}; root version {root.version}")


@main.command("renew-root")
@_repository_options
@_root_key_option
@_reporting
def renew_root(repo, keys_dir, root_keys) -> None:
    """A new root version with a fresh expiry, signed by the offline root keys."""
    root = Repository(repo, keys_dir).renew_root(list(root_keys))
    click.echo(f"root version {root.version}, expires {root.expires.isoformat()}")


@main.command()
@_repository_options
@click.option("--json", "as_json", is_flag=True)
@_reporting
def status(repo, keys_dir, as_json) -> None:
    """Roles (version, expiry, keys) and the releases listed."""
    report = Repository(repo, keys_dir).status()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for role, info in report["roles"].items():
        flag = "  EXPIRED" if info["expired"] else ""
        ids = ", ".join(k[:12] for k in info["keys"])
        click.echo(f"{role:<10} v{info['version']:<5} expires {info['expires']}{flag}  keys {info['threshold']} of [{ids}]")
    for release in report["releases"]:
        size = sum(f["length"] for f in release["files"])
        click.echo(f"{release['hardware']:<16} {release['version']:<14} {len(release['files'])} files, {size} bytes")
    if not report["releases"]:
        click.echo("no releases")


if __name__ == "__main__":  # pragma: no cover
    main()
