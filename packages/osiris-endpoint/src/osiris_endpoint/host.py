"""Where the endpoint's checks run: one small interface, so the agent is
the same on Windows (local PowerShell) and in the lab (an emulated host,
``osiris_lab.endpoint.EmulatedHost``).

A check is the catalogue's entry: the same fragment the appliance runs
over WinRM (it starts with its ``# osiris-check: <id>/v<N>`` marker, takes
``param($P)`` and returns one hashtable of facts) and its parameters.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Check:
    id: str
    script: str
    params: Mapping[str, Any]
    interval: float
    timeout: float


@dataclass(frozen=True)
class Result:
    check_id: str
    facts: Mapping[str, Any] | None
    error: str = ""
    duration_ms: float = 0.0
    observed_at: float = field(default_factory=time.time)


class Host(Protocol):
    """Runs checks on this machine. One result per check; a check that
    cannot run is a result with ``error``, never an exception."""

    async def run(self, checks: Sequence[Check]) -> list[Result]: ...


# Constant: the fragment and its parameters arrive as environment variables
# (base64), so nothing from either is ever part of this text.
RUNNER = """\
# osiris-endpoint: unit/v1
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$r = [ordered]@{ ok = $false }
try {
    $text = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($env:OSIRIS_UNIT))
    $P = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($env:OSIRIS_PARAMS)) | ConvertFrom-Json
    $out = @(& ([ScriptBlock]::Create($text)) $P)
    if ($out.Count -lt 1) { throw 'the script returned nothing' }
    $r.data = $out[$out.Count - 1]
    $r.ok = $true
} catch {
    $e = $_.Exception
    while ($null -ne $e.InnerException) { $e = $e.InnerException }
    $r.error = $e.Message
}
'OSIRIS-RESULT ' + [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes((ConvertTo-Json -InputObject $r -Depth 16 -Compress)))
"""
RESULT_PREFIX = b"OSIRIS-RESULT "


def parse_output(stdout: bytes) -> tuple[Mapping[str, Any] | None, str]:
    """(facts, error) from the runner's output."""
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith(RESULT_PREFIX):
            try:
                doc = json.loads(base64.b64decode(line[len(RESULT_PREFIX):]))
            except ValueError:
                return None, "the runner's result line is not base64 JSON"
            if doc.get("ok") and isinstance(doc.get("data"), dict):
                return doc["data"], ""
            return None, str(doc.get("error") or "the check returned no facts")[:500]
    return None, "the runner printed no result line"


class PowerShellHost:
    """This Windows machine: each check in its own ``powershell.exe``
    (Windows PowerShell 5.1), killed at the check's timeout."""

    def __init__(self, executable: str = "powershell.exe"):
        self.executable = executable
        self.command = base64.b64encode(RUNNER.encode("utf-16-le")).decode("ascii")

    async def run(self, checks: Sequence[Check]) -> list[Result]:
        return [await self._one(c) for c in checks]

    async def _one(self, check: Check) -> Result:
        started = time.perf_counter()
        env = {**os.environ, "OSIRIS_UNIT": base64.b64encode(check.script.encode()).decode(),
               "OSIRIS_PARAMS": base64.b64encode(json.dumps(dict(check.params)).encode()).decode()}
        try:
            proc = await asyncio.create_subprocess_exec(
                self.executable, "-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand", self.command,
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            return Result(check.id, None, f"cannot start {self.executable}: {exc.strerror}")
        try:
            stdout, _stderr = await asyncio.wait_for(proc.communicate(), check.timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return Result(check.id, None, f"timed out after {check.timeout:g} s",
                          (time.perf_counter() - started) * 1000)
        facts, error = parse_output(stdout)
        return Result(check.id, facts, error, (time.perf_counter() - started) * 1000)
