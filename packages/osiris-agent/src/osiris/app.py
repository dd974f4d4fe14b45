"""Start-up: config -> plugins -> plugin settings -> context -> registry.

Everything that can be wrong with a site's configuration is found here,
before the first sweep, and reported as a :class:`~osiris.config.ConfigError`
(exit status 2) or :class:`~osiris.plugins.PluginError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .config import Config, ConfigError, read_raw, resolve_path, state_dir, validate_core, validate_plugins
from .context import AgentContext
from .plugins import PluginManager
from .records import SettingsSection, Target
from .registry import Registry
from .secrets import SecretStore


@dataclass
class Loaded:
    config: Config
    source: str
    pm: PluginManager
    ctx: AgentContext
    registry: Registry
    targets: list[Target]


def settings_sections(pm: PluginManager) -> dict[str, SettingsSection]:
    out: dict[str, SettingsSection] = {}
    for plugin, section in pm.collect("osiris_settings", SettingsSection):
        if section.name in out:
            raise ConfigError([f"plugins {plugin!r} and another both declare settings section {section.name!r}"])
        out[section.name] = section
    return out


def self_target(config: Config) -> Target:
    return Target(config.site.appliance, "local", "appliance", "localhost")


def load(
    config_path: str | Path | None = None,
    *,
    state_dir_override: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    config_data: dict | None = None,
    pm: PluginManager | None = None,
) -> Loaded:
    """Read and check everything a run needs. ``pm``: the process's plugin
    manager, its entry points already loaded (the CLI has one per process);
    by default a new one."""
    if config_data is not None:
        raw, source = config_data, "<config>"
    else:
        raw, source = read_raw(resolve_path(config_path, environ))
    config = validate_core(raw, source)
    if pm is None:
        pm = PluginManager()
    pm.load_entry_points(environ)
    pm.load_modules(config.plugin_modules, environ)
    sections = settings_sections(pm)
    plugin_settings = validate_plugins(config, source, sections)
    secrets = SecretStore(config.secrets.directory, config.secrets.files, environ=environ)
    ctx = AgentContext(
        config,
        source=source,
        state_dir=state_dir(config, state_dir_override, environ),
        secrets=secrets,
        plugin_settings=plugin_settings,
        agent_version=__version__,
    )
    registry = Registry(pm, ctx, config, source)
    ctx.registry = registry
    targets = list(ctx.targets)
    registry.validate_targets(targets, source)
    if config.agent.check_self:
        targets.insert(0, self_target(config))
    return Loaded(config, source, pm, ctx, registry, targets)
