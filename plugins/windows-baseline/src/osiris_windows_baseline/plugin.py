"""The windows-baseline plugin's hooks: checks, runbooks, default L1 rules,
and the check packs (shipped and the site's) they come from.

Check parameters are data in each ``CheckSpec.params``, overridable per
site under ``checks.<id>.params`` in the config. The settings section
``windows-baseline`` names the site's check packs (docs/check-packs.md).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from osiris import SettingsSection, hookimpl

from . import catalog, packset
from .commands import packs_group

NAME = "windows-baseline"
RULES = Path(__file__).with_name("rules.yaml")
EVIDENCE_KIND = "check_packs"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    packs: list[Path] = Field(default_factory=list, description=(
        "Site check packs: YAML files, or directories whose *.yaml files are packs (docs/check-packs.md). "
        "Absolute paths; loaded after the packs the plugin ships, in this order."))

    @field_validator("packs")
    @classmethod
    def _absolute(cls, value: list[Path]) -> list[Path]:
        for p in value:
            if not p.is_absolute():
                raise ValueError(f"expected an absolute path, got {str(p)!r}")
        return value


# One pack set per agent context: the hooks below are all called with the
# same ctx, and must agree on which packs (and which last good copies) are in force.
_SETS: weakref.WeakKeyDictionary[Any, packset.PackSet] = weakref.WeakKeyDictionary()


def packs(ctx: Any) -> packset.PackSet:
    found = _SETS.get(ctx)
    if found is None:
        settings = ctx.settings(NAME)
        found = _SETS[ctx] = packset.load(settings.packs, ctx.state_dir, catalog.taken())
    return found


@hookimpl
def osiris_settings():
    return SettingsSection(NAME, Settings, "The Windows baseline's site check packs")


@hookimpl
def osiris_checks(ctx):
    return catalog.checks(packs(ctx).packs)


@hookimpl
def osiris_runbooks(ctx):
    return catalog.runbooks(packs(ctx).packs)


@hookimpl
def osiris_rules(ctx):
    return [RULES, *(r for p in packs(ctx).packs for r in p.rules())]


@hookimpl
async def osiris_startup(ctx):
    """The agent starts with these packs: keep each clean one as its last
    good copy, and record which are in force, with their digests
    (docs/evidence.md)."""
    found = packs(ctx)
    await ctx.run_blocking(found.keep, ctx.state_dir)
    if ctx.evidence is not None:
        await ctx.evidence.record(EVIDENCE_KIND, found.evidence())


@hookimpl
def osiris_commands(cli):
    cli.add_command(packs_group)
