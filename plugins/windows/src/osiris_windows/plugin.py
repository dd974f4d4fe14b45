"""The windows plugin: the ``windows`` executor (WinRM via pywinrm), its
settings section ``plugins.windows``, and core Windows checks and runbooks.
See docs/windows.md."""

from __future__ import annotations

import logging

from osiris import SettingsSection, hookimpl

from .checks import checks, runbooks
from .executor import KIND, WindowsExecutor
from .health import health_checks
from .settings import Settings, validate_targets

NAME = "windows"
log = logging.getLogger(__name__)


@hookimpl
def osiris_settings():
    return SettingsSection(NAME, Settings, "WinRM executor: concurrency, timeouts, retries, envelope size")


@hookimpl
def osiris_executors(ctx):
    # Every windows target's options are checked here, at start-up: the
    # error names the config file, targets[i], the target and the key.
    options = validate_targets(ctx.targets, ctx.source)
    settings = ctx.settings(NAME)
    effective = min(settings.max_concurrency, ctx.workers, ctx.max_concurrent_targets)
    if options and effective < min(settings.max_concurrency, len(options)):
        log.info("windows: at most %d hosts at once (plugins.windows.max_concurrency %d, agent.workers %d, "
                 "agent.max_concurrent_targets %d)", effective, settings.max_concurrency, ctx.workers,
                 ctx.max_concurrent_targets)
    return WindowsExecutor(ctx, settings, options)


@hookimpl
def osiris_checks(ctx):
    return checks()


@hookimpl
def osiris_runbooks(ctx):
    return runbooks()


@hookimpl
def osiris_health_checks(ctx):
    # After a new image boots: at least one windows target answers (docs/image.md).
    return health_checks(ctx, ctx.settings(NAME), KIND)
