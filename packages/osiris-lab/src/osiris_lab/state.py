"""The state of an emulated Windows host: a flat map of declared settings.

Every setting a check reads or a runbook changes is declared once with
its default per role (``dc``, ``server``, ``workstation``), the value chaos
sets to break it, and a line of documentation. Emulations read and write
``HostState`` by path (``firewall.public.enabled``); a plugin that ships
more checks (for example ``windows-baseline``) declares its own settings
next to its emulations, so the model grows without this module knowing
about every check. Unknown paths are errors that name the host and path.
"""

from __future__ import annotations

import copy
import difflib
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ROLES = ("dc", "server", "workstation")


@dataclass(frozen=True)
class Setting:
    path: str
    default: Any  # a value, or a mapping role -> value
    broken: Any  # what `break_setting` sets: the drift a check must catch
    doc: str
    roles: frozenset[str] = frozenset(ROLES)

    def default_for(self, role: str) -> Any:
        if isinstance(self.default, Mapping) and set(self.default) <= set(ROLES):
            return copy.deepcopy(self.default.get(role))
        return copy.deepcopy(self.default)


_SETTINGS: dict[str, Setting] = {}
_LOCK = threading.Lock()


def declare(path: str, default: Any, broken: Any, doc: str, roles: Iterable[str] | None = None) -> Setting:
    """Declare a setting. Declaring the same path again with the same
    definition is a no-op (modules may be imported twice); a conflicting
    definition is an error."""
    roles_set = frozenset(roles or ROLES)
    unknown = roles_set - set(ROLES)
    if unknown:
        raise ValueError(f"setting {path!r}: unknown roles {sorted(unknown)} (expected some of {ROLES})")
    setting = Setting(path, default, broken, doc, roles_set)
    with _LOCK:
        old = _SETTINGS.get(path)
        if old is not None and old != setting:
            raise ValueError(f"setting {path!r} is declared twice with different definitions")
        _SETTINGS[path] = setting
    return setting


def settings() -> dict[str, Setting]:
    with _LOCK:
        return dict(_SETTINGS)


class HostState:
    """Settings of one host. Thread-safe: chaos may change it from the
    test's thread while the lab's event loop reads it."""

    def __init__(self, host: str, role: str, overrides: Mapping[str, Any] | None = None):
        if role not in ROLES:
            raise ValueError(f"host {host!r}: role {role!r}: expected one of {', '.join(ROLES)}")
        from . import emulation  # the built-in and contributed emulations declare their settings

        emulation.load()
        self.host = host
        self.role = role
        self._lock = threading.Lock()
        self._values = {p: s.default_for(role) for p, s in settings().items() if role in s.roles}
        for path, value in (overrides or {}).items():
            self.set(path, value)

    def _setting(self, path: str) -> Setting:
        with _LOCK:
            s = _SETTINGS.get(path)
        if s is None:
            near = difflib.get_close_matches(path, list(settings()), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else " (see osiris_lab.state.settings())"
            raise KeyError(f"host {self.host!r}: no setting {path!r}{hint}")
        if self.role not in s.roles:
            raise KeyError(f"host {self.host!r}: setting {path!r} does not apply to role {self.role!r}")
        return s

    def _ensure(self, path: str) -> None:
        # A setting declared after this host was created (a plugin's
        # emulations loaded late) starts at its default.
        if path not in self._values:
            self._values[path] = self._setting(path).default_for(self.role)

    def get(self, path: str) -> Any:
        with self._lock:
            self._ensure(path)
            return copy.deepcopy(self._values[path])

    def __getitem__(self, path: str) -> Any:
        return self.get(path)

    def set(self, path: str, value: Any) -> None:
        with self._lock:
            self._setting(path)
            self._values[path] = copy.deepcopy(value)

    def __setitem__(self, path: str, value: Any) -> None:
        self.set(path, value)

    def break_(self, path: str) -> Any:
        """Apply the setting's declared drift; returns the new value."""
        broken = self._setting(path).broken
        value = broken(self.role) if isinstance(broken, Callable) else broken
        self.set(path, value)
        return value

    def restore(self, path: str | None = None) -> None:
        """Back to the role default: one setting, or all of them."""
        with self._lock:
            paths = [path] if path is not None else list(self._values)
            for p in paths:
                self._values[p] = self._setting(p).default_for(self.role)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            for p, s in settings().items():
                if self.role in s.roles and p not in self._values:
                    self._values[p] = s.default_for(self.role)
            return copy.deepcopy(self._values)
