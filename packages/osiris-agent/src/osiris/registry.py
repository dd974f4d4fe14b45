"""What the installed plugins contribute, collected once and checked.

Two plugins contributing the same check id, runbook id or executor kind is
an error at start-up: silently letting one win would make evidence
ambiguous about which code produced a verdict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import ConfigError, Config
from .plugins import PluginError, PluginManager
from .records import CheckSpec, Executor, RunbookSpec, Target


@dataclass(frozen=True)
class Contributed:
    plugin: str
    spec: Any


class Registry:
    def __init__(self, pm: PluginManager, ctx: Any, config: Config, source: str):
        self.pm = pm
        self.checks: dict[str, Contributed] = {}
        self.runbooks: dict[str, Contributed] = {}
        self.executors: dict[str, Contributed] = {}
        self._collect("check", "osiris_checks", CheckSpec, self.checks, ctx, key=lambda s: s.id)
        self._collect("runbook", "osiris_runbooks", RunbookSpec, self.runbooks, ctx, key=lambda s: s.id)
        self._collect("executor", "osiris_executors", Executor, self.executors, ctx, key=lambda s: s.kind)
        self._apply_overrides(config, source)

    def _collect(self, what: str, hook: str, typ: type, into: dict, ctx: Any, key) -> None:
        for plugin, item in self.pm.collect(hook, typ, ctx=ctx):
            k = key(item)
            if k in into:
                raise PluginError(f"{what} {k!r} is contributed by both {into[k].plugin!r} and {plugin!r}")
            into[k] = Contributed(plugin, item)

    def _apply_overrides(self, config: Config, source: str) -> None:
        errors = []
        for check_id, override in config.checks.items():
            if check_id not in self.checks:
                errors.append(
                    f"{source}: section 'checks', key '{check_id}': expected the id of an installed check "
                    f"(see `osiris checks`)"
                )
                continue
            c = self.checks[check_id]
            spec: CheckSpec = c.spec
            changes: dict[str, Any] = {}
            if override.interval is not None:
                changes["interval"] = override.interval
            unknown = sorted(set(override.params) - set(spec.params))
            if unknown:
                known = ", ".join(sorted(spec.params)) or "none"
                errors.extend(
                    f"{source}: section 'checks', key '{check_id}.params.{k}': expected one of the check's "
                    f"parameters ({known})" for k in unknown
                )
                continue
            if override.params:
                changes["params"] = {**spec.params, **override.params}
            if changes:
                self.checks[check_id] = Contributed(c.plugin, dataclasses.replace(spec, **changes))
        self.disabled = {cid for cid, o in config.checks.items() if not o.enabled}
        if errors:
            raise ConfigError(errors)

    def check_specs(self) -> list[CheckSpec]:
        return [c.spec for cid, c in sorted(self.checks.items()) if cid not in self.disabled]

    def checks_for(self, target: Target) -> list[CheckSpec]:
        return [c for c in self.check_specs() if c.applies_to(target)]

    def executor(self, kind: str) -> Executor | None:
        c = self.executors.get(kind)
        return c.spec if c else None

    def plugin_of_check(self, check_id: str) -> str:
        return self.checks[check_id].plugin

    def validate_targets(self, targets: Sequence[Target], source: str) -> None:
        errors = []
        for i, t in enumerate(targets):
            if t.kind not in self.executors:
                kinds = ", ".join(sorted(self.executors)) or "none"
                errors.append(
                    f"{source}: section 'targets[{i}]', key 'kind': expected a kind that an installed "
                    f"plugin can reach ({kinds}), got {t.kind!r}"
                )
        if errors:
            raise ConfigError(errors)
