"""The registry of what the lab can "run": emulations of script units.

The lab does not interpret PowerShell. Our scripts carry versioned markers
(``# osiris-check: windows.smb.v1_disabled/v1``) and the lab runs the
registered emulation of that exact unit and version against the host's
state: a check emulation returns the facts the real fragment would print,
a runbook emulation changes the state as the real one would change Windows.
A unit with no emulation, or a new version of a fragment whose emulation
was not updated, is reported as an error, never as a silent success.

A unit whose second line is a probe marker (``# osiris-probe:
registry_value/v1``: a check declared in a check pack, whose script is its
probe type's shared script with inputs in ``params.probe``) runs the
emulation of that probe type and version (:func:`probe`), so every check of
the type runs in the lab with no emulation of its own.

Emulations register with the decorators below. Built-in ones (for the
``windows`` plugin's checks) live in :mod:`osiris_lab.emulations`; another
distribution contributes more through the ``osiris_lab.emulations``
entry-point group (a module imported for its side effects), e.g.::

    [project.entry-points."osiris_lab.emulations"]
    windows-baseline = "osiris_windows_baseline.lab"
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .processes import not_recognized
from .state import HostState

ENTRY_POINT_GROUP = "osiris_lab.emulations"
log = logging.getLogger("osiris_lab")

Emulated = Callable[["HostView", Mapping[str, Any]], Mapping[str, Any]]


class PSError(Exception):
    """What the real script would throw on this host, e.g. a cmdlet that
    does not exist there. ``error_type`` is the .NET exception type name
    PowerShell reports."""

    def __init__(self, message: str, error_type: str = "System.Management.Automation.RuntimeException"):
        super().__init__(message)
        self.message = message
        self.error_type = error_type


def command_not_found(name: str) -> PSError:
    return PSError(not_recognized(name), "System.Management.Automation.CommandNotFoundException")


@dataclass(frozen=True)
class HostView:
    """What an emulation sees: the host's identity and its state."""

    name: str
    role: str
    state: HostState

    def __getitem__(self, path: str) -> Any:
        return self.state.get(path)


@dataclass(frozen=True)
class Emulation:
    kind: str  # "check" | "runbook" | "probe"
    id: str
    version: int
    fn: Emulated
    cost_ms: float  # simulated run time on the host, inside the PowerShell process


_REGISTRY: dict[tuple[str, str, int], Emulation] = {}
_LOCK = threading.Lock()
_loaded = False


def _register(kind: str, unit_id: str, version: int, cost_ms: float) -> Callable[[Emulated], Emulated]:
    def deco(fn: Emulated) -> Emulated:
        key = (kind, unit_id, version)
        with _LOCK:
            old = _REGISTRY.get(key)
            if old is not None and old.fn.__qualname__ != fn.__qualname__:
                raise ValueError(f"{kind} {unit_id}/v{version} is emulated twice ({old.fn.__module__} and {fn.__module__})")
            _REGISTRY[key] = Emulation(kind, unit_id, version, fn, cost_ms)
        return fn

    return deco


def probe(probe_type: str, version: int = 1, *, cost_ms: float = 2.0) -> Callable[[Emulated], Emulated]:
    """Register the emulation of a probe type: (host, params) -> facts, for
    every check whose script is that type's (inputs in ``params["probe"]``)."""
    return _register("probe", probe_type, version, cost_ms)


def check(unit_id: str, version: int = 1, *, cost_ms: float = 5.0) -> Callable[[Emulated], Emulated]:
    """Register the emulation of a check fragment: (host, params) -> facts."""
    return _register("check", unit_id, version, cost_ms)


def runbook(unit_id: str, version: int = 1, *, cost_ms: float = 50.0) -> Callable[[Emulated], Emulated]:
    """Register the emulation of a runbook fragment: (host, params) -> output;
    it changes ``host.state`` as the real script changes Windows."""
    return _register("runbook", unit_id, version, cost_ms)


#: Contributions that failed to import: (entry point, error). Their units
#: then run as "not emulated" errors; the rest of the lab works.
load_errors: list[tuple[str, str]] = []


def load() -> None:
    """Import the built-in emulations and every ``osiris_lab.emulations``
    entry point (once per process). A contribution that fails to import is
    logged and listed in :data:`load_errors`, not fatal."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module("osiris_lab.emulations")
    for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - name the broken contribution, keep the lab up
            load_errors.append((f"{ep.name} ({ep.value})", f"{type(exc).__name__}: {exc}"))
            log.warning("osiris-lab: emulations %s (%s) failed to load: %s", ep.name, ep.value, exc)


def lookup(kind: str, unit_id: str, version: int) -> Emulation | None:
    with _LOCK:
        return _REGISTRY.get((kind, unit_id, version))


def known() -> list[Emulation]:
    with _LOCK:
        return sorted(_REGISTRY.values(), key=lambda e: (e.kind, e.id, e.version))
