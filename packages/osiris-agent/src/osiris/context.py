"""What plugins get handed (``ctx``): their settings, secrets, the site,
the configured targets, the check catalogue, the appliance's data paths,
small durable state, the evidence log and a bounded thread pool for
blocking clients.

Everything here is plugin API, documented in docs/plugins.md; a plugin
needs nothing else of the core (tests/test_plugin_boundary.py holds every
plugin to that). ``config`` is the core's own copy of the config file.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from .config import Config
from .paths import DataPaths
from .records import CheckSpec, Target
from .scrubbing import scrubber_for
from .secrets import Secret, SecretStore
from .store import KeyedState, Store

T = TypeVar("T")


class AgentContext:
    def __init__(
        self,
        config: Config,
        *,
        source: str,
        state_dir: Path,
        secrets: SecretStore,
        plugin_settings: dict[str, BaseModel] | None = None,
        agent_version: str = "0",
    ):
        self.config = config
        self.source = source
        self.site = config.site
        self.state_dir = Path(state_dir)
        self.paths = DataPaths.of(self.state_dir, config.evidence.directory)
        # The configured targets, in config order (``targets[i]`` in errors);
        # the appliance's own ``local`` target is not among them.
        self.targets: tuple[Target, ...] = tuple(
            Target(t.name, t.kind, t.role, t.address, t.credential, dict(t.options)) for t in config.targets
        )
        # How much the agent does at once: threads in ``pool``, targets in a sweep.
        self.workers = config.agent.workers
        self.max_concurrent_targets = config.agent.max_concurrent_targets
        self.secrets = secrets
        self.plugin_settings = plugin_settings or {}
        self.agent_version = agent_version
        self.log = logging.getLogger("osiris")
        self._scrub = scrubber_for(config.evidence.scrub)
        self._pool: ThreadPoolExecutor | None = None
        self._store: Store | None = None
        self._own_store = False
        # Set by app.load once the registry exists (the evidence service reads it).
        self.registry: Any = None
        # The evidence log (osiris.evidence.service.EvidenceService), when enabled:
        # ``await ctx.evidence.record(kind, payload, host=..., policy=...)``.
        self.evidence: Any = None

    def scrub(self, value: Any) -> Any:
        """``value`` (a string or plain JSON) with PHI and secret-named values
        replaced, exactly as the evidence log would: for anything a plugin
        sends outside the appliance or shows a person."""
        return self._scrub(value)

    def settings(self, name: str) -> BaseModel:
        """The validated settings of plugin section ``name``."""
        try:
            return self.plugin_settings[name]
        except KeyError:
            raise KeyError(f"no settings section {name!r} (declare it with the osiris_settings hook)") from None

    def secret(self, name: str) -> Secret:
        return self.secrets.get(name)

    @property
    def checks(self) -> dict[str, CheckSpec]:
        """The check catalogue: every enabled check by id, with the site's
        overrides (interval, params) applied."""
        if self.registry is None:
            return {}
        return {spec.id: spec for spec in self.registry.check_specs()}

    def use_store(self, store: Store) -> None:
        """The agent hands its store over, so ``state`` shares its connection."""
        self._store, self._own_store = store, False

    def state(self, namespace: str) -> KeyedState:
        """Durable JSON values by key for one plugin (``namespace``: its
        name), in the state database: shared by the running agent and the
        plugin's commands, each change one transaction."""
        if self._store is None:
            self._store, self._own_store = Store(self.state_dir), True
        return KeyedState(self._store, namespace)

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="osiris-blocking"
            )
        return self._pool

    async def run_blocking(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (pywinrm, a subprocess...) in the bounded
        pool so the event loop, and with it the watchdog, keeps going."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        if self._own_store and self._store is not None:
            self._store.close()
            self._store, self._own_store = None, False
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
