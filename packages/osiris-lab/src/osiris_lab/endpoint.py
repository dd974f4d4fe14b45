"""The lab side of endpoint agents: an emulated host for the real endpoint
agent (``osiris_endpoint``), so it runs its catalogue on Linux against a
lab host's state, the same state the WinRM path reads and heals.

A catalogue check is our PowerShell fragment; its first line names the
unit (``# osiris-check: <id>/v<N>``), and the lab runs the registered
emulation of exactly that unit, as it does for a WinRM batch.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from osiris_endpoint.host import Check, Result

from . import emulation
from .emulation import HostView, PSError

_MARKER = re.compile(r"^\s*# osiris-check: ([a-z0-9][a-z0-9_.-]*)/v(\d+)[ \t]*$", re.M)


class EmulatedHost:
    """``osiris_endpoint.host.Host`` for one lab host (``lab.host(name)``)."""

    def __init__(self, lab_host: Any):
        emulation.load()
        self.lab_host = lab_host
        self.runs = 0

    async def run(self, checks: Sequence[Check]) -> list[Result]:
        self.runs += 1
        return [self._one(c) for c in checks]

    def _one(self, check: Check) -> Result:
        started = time.perf_counter()
        m = _MARKER.search(check.script or "")
        if m is None or m.group(1) != check.id:
            return Result(check.id, None, "the script does not start with its osiris-check marker")
        emu = emulation.lookup("check", m.group(1), int(m.group(2)))
        if emu is None:
            return Result(check.id, None, f"osiris-lab has no emulation of check {m.group(1)}/v{m.group(2)}")
        h = self.lab_host
        try:
            facts = emu.fn(HostView(h.name, h.role, h.state), dict(check.params))
        except PSError as exc:
            return Result(check.id, None, exc.message, (time.perf_counter() - started) * 1000)
        except Exception as exc:  # noqa: BLE001 - a broken emulation is that check's error
            return Result(check.id, None, f"{type(exc).__name__}: {exc}", (time.perf_counter() - started) * 1000)
        return Result(check.id, dict(facts), "", (time.perf_counter() - started) * 1000)
