"""``osiris packs check FILE...``: validate check packs before deploying
them (in an MSP's CI, say), with the errors the agent would report."""

from __future__ import annotations

from pathlib import Path

import click

from . import catalog, packset


@click.group(name="packs")
def packs_group() -> None:
    """Check packs of the windows-baseline plugin (docs/check-packs.md)."""


@packs_group.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def packs_check(paths: tuple[Path, ...]) -> None:
    """Validate pack FILES (or directories of them) as the agent loads site
    packs: after the shipped ones, each id declared once. Exit 2 on errors,
    every one named by file and line. That each heal entry's runbook exists
    is checked when the agent loads its rules (`osiris rules list`)."""
    files, dir_errors = packset.site_files(paths)
    errors = [msg for _d, msg in dir_errors]
    taken = catalog.taken()
    for p in catalog.shipped():
        taken.update({e.check.id: f"{p.file}:{e.line}" for e in p.entries})
    for name, path in files:
        lp, _good = packset.load_one(name, path, "site", None, taken)
        if lp.status != "loaded":
            errors.extend(m for m in lp.errors if "last good copy" not in m)
            continue
        assert lp.pack is not None
        taken.update({e.check.id: f"{name}:{e.line}" for e in lp.pack.entries})
        click.echo(f"{name}: ok ({len(lp.pack.entries)} checks, sha256 {lp.pack.sha256})")
    for msg in errors:
        click.echo(f"osiris: {msg}", err=True)
    if errors or not files:
        raise SystemExit(2)
