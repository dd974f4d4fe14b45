"""Plugin discovery and the registry of what plugins contribute.

Plugins are found through the ``osiris`` entry-point group; the core's own
built-ins are entry points of the ``osiris-agent`` distribution and load the
same way. Modules named in the config (``plugin_modules``) are registered
too, for plugins that are not installed as distributions.

Selection, in the spirit of pytest's ``PYTEST_PLUGINS`` and
``PYTEST_DISABLE_PLUGIN_AUTOLOAD``:

* ``OSIRIS_PLUGINS``: ``all`` (default), ``none``, or a comma-separated list
  of the outside (non built-in) plugins to load;
* ``OSIRIS_DISABLE_PLUGINS``: a comma-separated list of plugins (built-in or
  not) never to load.

After registration ``check_pending()`` makes a hook implementation that
matches no spec (a typo, or a plugin written for a newer API) fail at
start-up instead of being silently ignored.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import inspect
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .config import ConfigError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "osiris"
CORE_DISTRIBUTION = "osiris-agent"
ENV_SELECT = "OSIRIS_PLUGINS"
ENV_DISABLE = "OSIRIS_DISABLE_PLUGINS"


class PluginError(Exception):
    """A plugin could not be loaded or breaks the plugin API."""


@dataclass
class PluginInfo:
    name: str
    version: str
    distribution: str | None
    module: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)


def _names(value: str | None) -> set[str]:
    return {v.strip() for v in (value or "").split(",") if v.strip()}


class PluginManager:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._entry_points_loaded = False

    # -- loading -----------------------------------------------------------

    def load(
        self,
        *,
        extra_modules: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """Entry-point plugins, then ``extra_modules``, then :meth:`check`."""
        self.load_entry_points(environ)
        self.load_modules(extra_modules, environ)

    def load_entry_points(self, environ: Mapping[str, str] | None = None) -> None:
        """Register the ``osiris`` entry points the environment selects (once
        per manager: the CLI loads them before it reads a config, for the
        plugins' subcommands, and the config's modules join them later)."""
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        env = os.environ if environ is None else environ
        select = env.get(ENV_SELECT, "all").strip() or "all"
        selected = None if select == "all" else (set() if select == "none" else _names(select))
        disabled = _names(env.get(ENV_DISABLE))

        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else None
            builtin = dist == CORE_DISTRIBUTION
            if ep.name in disabled:
                log.info("plugin %s disabled by %s", ep.name, ENV_DISABLE)
                continue
            if not builtin and selected is not None and ep.name not in selected:
                continue
            if ep.name in self.infos:
                raise PluginError(
                    f"plugin name {ep.name!r} is provided twice "
                    f"({self.infos[ep.name].distribution} and {dist})"
                )
            try:
                module = ep.load()
            except Exception as exc:  # report which plugin broke
                raise PluginError(f"plugin {ep.name!r} ({dist}): cannot import {ep.value}: {exc}") from exc
            version = ep.dist.version if ep.dist else "0"
            self.register(module, ep.name, version=version, distribution=dist, builtin=builtin)
        self.check()

    def load_modules(self, modules: Iterable[str], environ: Mapping[str, str] | None = None) -> None:
        """Register plugin modules named in the config (``plugin_modules``)
        that are not registered yet, then :meth:`check`."""
        env = os.environ if environ is None else environ
        disabled = _names(env.get(ENV_DISABLE))
        for modname in modules:
            name = modname.rsplit(".", 1)[-1]
            if name in disabled or self.pm.get_plugin(name) is not None:
                continue
            try:
                module = importlib.import_module(modname)
            except Exception as exc:
                raise PluginError(f"plugin module {modname!r} (from config plugin_modules): {exc}") from exc
            version = str(getattr(module, "__version__", "0"))
            self.register(module, name, version=version, distribution=None, builtin=False)
        self.check()

    def register(
        self,
        plugin: ModuleType | object,
        name: str,
        *,
        version: str = "0",
        distribution: str | None = None,
        builtin: bool = False,
    ) -> None:
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} breaks the plugin API {hookspecs.API_VERSION}: {exc}") from exc
        except ValueError as exc:
            raise PluginError(f"plugin {name!r}: {exc}") from exc
        hooks = sorted(impl_name for impl_name in dir(plugin) if impl_name.startswith("osiris_"))
        module = getattr(plugin, "__name__", type(plugin).__module__)
        self.infos[name] = PluginInfo(name, version, distribution, module, builtin, hooks)

    def check(self) -> None:
        """Fail fast on hook implementations that match no spec."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or str(exc.plugin)
            raise PluginError(
                f"plugin {name!r} implements a hook the agent does not know "
                f"(plugin API {hookspecs.API_VERSION}): {exc}"
            ) from exc
        # A function that looks like a hook but was not marked @hookimpl is
        # the other common mistake: pluggy ignores it silently.
        for name, info in self.infos.items():
            plugin = self.pm.get_plugin(name)
            for attr in info.hooks:
                fn = getattr(plugin, attr, None)
                if callable(fn) and self.pm.parse_hookimpl_opts(plugin, attr) is None:
                    raise PluginError(
                        f"plugin {name!r}: {attr} is not marked with @osiris.hookimpl"
                    )
                if not hasattr(self.pm.hook, attr):
                    raise PluginError(f"plugin {name!r}: unknown hook {attr}")

    # -- calling -----------------------------------------------------------

    def impls(self, hook_name: str) -> list[Any]:
        """A hook's implementations in pluggy's call order (the last
        registered first, ``tryfirst``/``trylast`` honoured), for callers
        that must call each one themselves (async implementations, or
        records attributed to their plugin)."""
        return list(reversed(getattr(self.pm.hook, hook_name).get_hookimpls()))

    def contributions(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call a contributing hook and return ``(plugin name, record)`` pairs,
        in pluggy's call order.

        Each implementation is called on its own (rather than through the
        hook caller) so that every record is attributed to its plugin: the
        evidence log and ``osiris plugins`` say who contributed what.
        """
        out: list[tuple[str, Any]] = []
        for impl in self.impls(hook_name):
            args = {a: kwargs[a] for a in impl.argnames}
            try:
                result = impl.function(**args)
            except ConfigError:
                raise  # a plugin rejecting the site's config: exit 2, message as the plugin wrote it
            except Exception as exc:
                raise PluginError(f"plugin {impl.plugin_name!r}: {hook_name} failed: {exc}") from exc
            if result is None:
                continue
            items = result if isinstance(result, (list, tuple)) else [result]
            out.extend((impl.plugin_name, item) for item in items)
        return out

    def collect(self, hook_name: str, typ: type, **kwargs: Any) -> list[tuple[str, Any]]:
        """:meth:`contributions`, each record checked to be a ``typ``: a
        plugin that returns anything else breaks the plugin API."""
        out = self.contributions(hook_name, **kwargs)
        for plugin, item in out:
            if not isinstance(item, typ):
                raise PluginError(
                    f"plugin {plugin!r}: {hook_name} returned {type(item).__name__}, expected {typ.__name__}")
        return out

    async def call_lifecycle(self, hook_name: str, **kwargs: Any) -> None:
        for name, result in self.contributions(hook_name, **kwargs):
            if inspect.isawaitable(result):
                try:
                    await result
                except Exception as exc:
                    raise PluginError(f"plugin {name!r}: {hook_name} failed: {exc}") from exc

    @property
    def hook(self) -> Any:
        return self.pm.hook
