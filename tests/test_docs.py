"""Docs kept true: every hook of the plugin API is documented with an
example, and every CLI command the README lists exists."""

import re
from pathlib import Path

import click
from click.testing import CliRunner

from osiris import hookspecs
from osiris.cli import Plugins, cli

REPO = Path(__file__).resolve().parents[1]


def test_every_hook_has_a_documented_section_with_an_example():
    doc = (REPO / "docs" / "plugins.md").read_text()
    hooks = sorted(n for n in dir(hookspecs) if n.startswith("osiris_"))
    assert {"osiris_settings", "osiris_checks", "osiris_executors", "osiris_plan", "osiris_startup"} <= set(hooks)
    sections = re.split(r"^## ", doc, flags=re.M)
    for hook in hooks:
        matching = [s for s in sections if f"`{hook}(" in s.splitlines()[0]]
        assert matching, f"docs/plugins.md has no section for {hook}"
        assert "```python" in matching[0], f"the {hook} section has no example"
        assert "@hookimpl" in matching[0] or "hookimpl" in matching[0], f"the {hook} example implements no hook"


def test_readme_commands_exist():
    """Including those the installed plugins add (``osiris endpoints``)."""
    readme = (REPO / "README.md").read_text()
    commands = set(re.findall(r"^osiris ([a-z-]+)", readme, re.M))
    assert {"plugins", "check", "run", "incidents", "rules", "config"} <= commands
    group = click.Group("osiris", commands=dict(cli.commands), callback=cli.callback, params=cli.params)
    Plugins().add_commands(group)
    for command in commands:
        res = CliRunner().invoke(group, [command, "--help"])
        assert res.exit_code == 0, (command, res.output)
