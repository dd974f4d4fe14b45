"""The windows plugin: the ``windows`` executor (WinRM via pywinrm), its
settings section ``plugins.windows``, and core Windows checks and runbooks.
See docs/windows.md."""

from __future__ import annotations

from osiris import SettingsSection, hookimpl

from .checks import checks, runbooks
from .executor import WindowsExecutor
from .settings import Settings, validate_targets

NAME = "windows"


@hookimpl
def osiris_settings():
    return SettingsSection(NAME, Settings, "WinRM executor: concurrency, timeouts, retries, envelope size")


@hookimpl
def osiris_executors(ctx):
    # Every windows target's options are checked here, at start-up: the
    # error names the config file, targets[i], the target and the key.
    options = validate_targets(ctx.config.targets, ctx.source)
    return WindowsExecutor(ctx, ctx.settings(NAME), options)


@hookimpl
def osiris_checks(ctx):
    return checks()


@hookimpl
def osiris_runbooks(ctx):
    return runbooks()
