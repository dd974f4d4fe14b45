"""The windows-baseline plugin's hooks: checks, runbooks, default L1 rules.

Check parameters are data in each ``CheckSpec.params``, overridable per
site under ``checks.<id>.params`` in the config; no value is shared by
several checks, so the plugin declares no settings section.
"""

from __future__ import annotations

from pathlib import Path

from osiris import hookimpl

from .catalog import CHECKS, RUNBOOKS

RULES = Path(__file__).with_name("rules.yaml")


@hookimpl
def osiris_checks():
    return list(CHECKS)


@hookimpl
def osiris_runbooks():
    return list(RUNBOOKS)


@hookimpl
def osiris_rules():
    return RULES
