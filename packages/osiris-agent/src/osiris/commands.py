"""What a plugin's command (``osiris_commands``) may ask of the core.

A command runs in the ``osiris`` process, not in the agent: when it needs
the site's configuration and data (its settings, ``ctx.state``,
``ctx.paths``...), :func:`agent_context` loads the config the command line
names (``-c``, ``$OSIRIS_CONFIG``, ``--state-dir``) exactly as ``osiris run``
would, once per process; a bad config exits 2 with the file and key named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # pragma: no cover
    from .context import AgentContext


def agent_context() -> AgentContext:
    """``ctx`` for the config this command line names. Only inside a
    command of the ``osiris`` group."""
    state = click.get_current_context().find_root().obj
    if state is None or not hasattr(state, "context"):
        raise click.UsageError("agent_context() is for commands of the osiris command line")
    return state.context()
