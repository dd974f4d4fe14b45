"""Running Osiris scripts on an emulated host, by their markers.

The windows executor creates the WinRS shell with the batch script and its
parameters as environment variables (base64, each split into variables of
at most 32000 characters: ``OSIRIS_SCRIPT_N`` and ``OSIRIS_SCRIPT_0``...,
``OSIRIS_PARAMS_N`` and ``OSIRIS_PARAMS_0``...) and starts a constant
bootstrap (``# osiris-bootstrap: env/v1``) with ``-EncodedCommand``. The
batch (``# osiris-script: batch/v1``) carries one unit per check or
runbook, each marked ``# osiris-check: <id>/v<N>`` or
``# osiris-runbook: <id>/v<N>`` (a check pack's check then names its probe
type, ``# osiris-probe: <type>/v<N>``). Here the lab does what that PowerShell
does: decode the parameters, run each unit with its own time budget (a unit
whose emulation is slower than its budget times out, as the runspace would
be stopped), turn a thrown error into an error result for that unit only,
and print one line ``OSIRIS-RESULT <base64 of the JSON document>``.

Anything else is run only if it is one of a few known one-liners;
otherwise it gets PowerShell's "not recognized" error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from typing import Any

from . import emulation
from .emulation import HostView, PSError
from .processes import Outcome, ProcessContext, clixml_error, command_not_found, first_command

BOOTSTRAP_MARKER = "# osiris-bootstrap: env/v1"
BATCH_MARKER = "# osiris-script: batch/v1"
RESULT_PREFIX = "OSIRIS-RESULT "
_UNIT = re.compile(r"^# osiris-(check|runbook): ([a-z0-9][a-z0-9_.-]*)/v(\d+)[ \t]*\r?$"
                   r"(?:\n# osiris-probe: ([a-z][a-z0-9_]*)/v(\d+)[ \t]*\r?$)?", re.M)


def _first_line(script: str) -> str:
    for line in script.splitlines():
        if line.strip():
            return line.strip()
    return ""


class ScriptRunner:
    """Runs scripts for one host (its state and simulated timings)."""

    def __init__(self, host: Any):
        self.host = host  # osiris_lab.server.LabHost

    async def __call__(self, script: str, ctx: ProcessContext) -> Outcome:
        head = _first_line(script)
        if head == BOOTSTRAP_MARKER:
            return await self._bootstrap(ctx)
        if head == BATCH_MARKER:
            # A batch needs its parameter argument, which only the bootstrap passes.
            return Outcome(stderr=clixml_error("Cannot process command because of one or more missing mandatory "
                                               "parameters: ParamsB64."), exit_code=1)
        known = ONE_LINERS.get(script.strip())
        if known is not None:
            return Outcome(stdout=(known(self.host) + "\r\n").encode("utf-8"))
        return command_not_found(first_command(script) or script.strip()[:40])

    async def _bootstrap(self, ctx: ProcessContext) -> Outcome:
        env = {k.upper(): v for k, v in ctx.env.items()}

        def joined(name: str) -> str:
            n = env.get(f"{name}_N", "0").strip()
            return "".join(env.get(f"{name}_{i}", "") for i in range(int(n) if n.isdigit() else 0))

        try:
            script = base64.b64decode(joined("OSIRIS_SCRIPT"), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return Outcome(stderr=clixml_error('Exception calling "FromBase64String" with "1" argument(s): "The input '
                                               'is not a valid Base-64 string as it contains a non-base 64 character, '
                                               'more than two padding characters, or an illegal character among the '
                                               'padding characters. "'), exit_code=1)
        if not script.strip():
            return Outcome()  # an empty script block runs and prints nothing
        if _first_line(script) != BATCH_MARKER:
            return command_not_found(first_command(script) or "?")
        params_b64 = joined("OSIRIS_PARAMS")
        if not params_b64:
            return Outcome(stderr=clixml_error("Cannot bind argument to parameter 'ParamsB64' because it is an empty "
                                               "string."), exit_code=1)
        try:
            doc = json.loads(base64.b64decode(params_b64, validate=True).decode("utf-8"))
            units_params = doc["units"]
            if not isinstance(units_params, dict):
                raise TypeError("units is not an object")
        except (binascii.Error, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            return Outcome(stderr=clixml_error(f"osiris batch: cannot read parameters: {exc}"), exit_code=1)
        results = [await self._unit(kind, uid, int(ver), units_params.get(uid), (ptype, int(pver or 0)))
                   for kind, uid, ver, ptype, pver in _UNIT.findall(script)]
        out = {"osiris": "batch/v1", "computer": self.host.name.upper(), "ps_version": self.host.ps_version,
               "results": results}
        payload = base64.b64encode(json.dumps(out, separators=(",", ":")).encode("utf-8")).decode("ascii")
        return Outcome(stdout=(RESULT_PREFIX + payload + "\r\n").encode("ascii"))

    async def _unit(self, kind: str, uid: str, version: int, spec: Any,
                    probe: tuple[str, int] = ("", 0)) -> dict[str, Any]:
        started = time.perf_counter()
        result: dict[str, Any] = {"id": uid, "kind": kind, "ok": False}
        journaled = False
        try:
            if not isinstance(spec, dict):
                raise PSError(f"no parameters for {uid}")
            ptype, pversion = probe
            if ptype:  # a check pack's check: its probe type's emulation
                emu = emulation.lookup("probe", ptype, pversion)
                missing = f"probe {ptype}/v{pversion} (check {uid})"
            else:
                emu = emulation.lookup(kind, uid, version)
                missing = f"{kind} {uid}/v{version}"
            if kind == "runbook":
                self.host.runbooks_run.append(uid)
                journaled = True
            if emu is None:
                raise PSError(f"osiris-lab has no emulation of {missing}; the lab cannot run this "
                              "fragment", "Osiris.Lab.NotEmulated")
            timeout_s = float(spec.get("timeout_ms", 30000)) / 1000.0
            cost_s = self.host.unit_cost(uid, emu.cost_ms) / 1000.0
            if self.host.unit_throws(uid):
                await asyncio.sleep(min(cost_s, timeout_s))
                raise PSError(f"chaos: {uid} was made to throw on this host")
            if cost_s > timeout_s:
                await asyncio.sleep(timeout_s)
                result.update(error=f"timed out after {int(timeout_s * 1000)} ms", error_type="System.TimeoutException")
            else:
                await asyncio.sleep(cost_s)
                view = HostView(self.host.name, self.host.role, self.host.state)
                data = emu.fn(view, spec.get("params") or {})
                result.update(ok=True, data=json.loads(json.dumps(data)))
        except PSError as exc:
            result.update(error=exc.message, error_type=exc.error_type)
        except Exception as exc:  # noqa: BLE001 - a broken emulation is that unit's error, as in PowerShell
            result.update(error=f"{type(exc).__name__}: {exc}", error_type="Osiris.Lab.EmulationError")
        finally:
            if journaled:
                self.host.runbooks_ended += 1
        result["ms"] = int((time.perf_counter() - started) * 1000)
        return result


# Scripts short enough to know by heart: exact text -> output.
ONE_LINERS = {
    "$env:COMPUTERNAME": lambda host: host.name.upper(),
    "hostname": lambda host: host.name.upper(),
    "$PSVersionTable.PSVersion.ToString()": lambda host: host.ps_version,
}
