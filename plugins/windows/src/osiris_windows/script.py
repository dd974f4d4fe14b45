"""One PowerShell script per host per sweep: composition, parameters, results.

Delivery. ``powershell.exe -EncodedCommand`` takes base64 of UTF-16LE, and
WinRS runs the command line through ``cmd.exe``, which refuses lines longer
than 8191 characters (CreateProcess itself stops at 32767): a batch of
checks does not fit there. So the command line carries only a constant
bootstrap (:data:`BOOTSTRAP`, 1.8 KB encoded), and the batch and its
parameters travel as environment variables of the WinRS shell, set in the
Create request (``rsp:Environment``): base64 text split into variables of at
most 32000 characters (Windows' limit for one variable is 32767), named
``OSIRIS_SCRIPT_0..n`` / ``OSIRIS_SCRIPT_N`` and ``OSIRIS_PARAMS_0..n`` /
``OSIRIS_PARAMS_N``. We chose this over sending the script on stdin (WinRS
Send) because it saves an HTTP round trip per host (Create, Command,
Receive, Delete), which is most of the agent's CPU per host, and avoids
console code-page and stdin-mode subtleties; the price is that a batch must
fit in one request envelope (``max_envelope_kb``, 150 KB works on every
Windows version), so :func:`plan_batches` splits a host's units into
several batches only when they do not.

Parameters. Nothing from a parameter value or a host name is spliced into
PowerShell source: the batch text depends only on the units (their ids and
fragments, sorted by id), so it is byte-identical for every host and every
parameter value. Parameters are one JSON document, UTF-8, base64; the batch
decodes it and hands each unit its own ``params`` object.

The batch. Each unit (a check, or a runbook) is a fragment that starts with
its versioned marker (``# osiris-check: <id>/v<N>``), takes ``param($P)`` and
returns one hashtable. The batch runs each fragment in a runspace with
``BeginInvoke`` and waits at most the unit's ``timeout_ms``; a unit that
throws or times out yields an error result for that unit only (a timed-out
runspace is abandoned and the next unit gets a fresh one). Fragments are
embedded as single-quoted here-strings, so a syntax error in one fragment
is that unit's error too. The batch prints one line,
``OSIRIS-RESULT <base64 of UTF-8 JSON>``: ASCII whatever the console code
page, and found among any stray output a fragment might write.

Requires Windows PowerShell 5.1 (Windows 10/11, Server 2016-2025) in
FullLanguage mode: ``[ScriptBlock]::Create`` and .NET calls are blocked
under Constrained Language Mode (AppLocker/WDAC script enforcement).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

SCRIPT_MARKER = "# osiris-script: batch/v1"
RESULT_PREFIX = "OSIRIS-RESULT "
ENV_CHUNK = 32000
UNIT_MARKER = re.compile(r"^# osiris-(check|runbook): ([a-z0-9][a-z0-9_.-]*)/v([1-9][0-9]*)[ \t]*$")

BOOTSTRAP = """\
# osiris-bootstrap: env/v1
# Constant: the batch and its parameters come from the WinRS shell's
# environment (base64 split over OSIRIS_SCRIPT_* and OSIRIS_PARAMS_*).
$ErrorActionPreference = 'Stop'
function Join-OsirisVariable([string]$Name) {
    $n = [int][Environment]::GetEnvironmentVariable($Name + '_N')
    $b = New-Object System.Text.StringBuilder
    for ($i = 0; $i -lt $n; $i++) { [void]$b.Append([Environment]::GetEnvironmentVariable($Name + '_' + $i)) }
    $b.ToString()
}
$text = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String((Join-OsirisVariable 'OSIRIS_SCRIPT')))
& ([ScriptBlock]::Create($text)) (Join-OsirisVariable 'OSIRIS_PARAMS')
"""

_BATCH_HEAD = f"""\
{SCRIPT_MARKER}
# Composed by the Osiris windows executor. Every unit below runs in a
# runspace of its own with its own time budget; data arrives as one base64
# JSON argument, so this text is the same for every host and value.
param([Parameter(Mandatory = $true)][string]$ParamsB64)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$In = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($ParamsB64)) | ConvertFrom-Json
$Units = New-Object System.Collections.ArrayList
"""

_BATCH_TAIL = """\
$Results = New-Object System.Collections.ArrayList
$Runspace = $null
foreach ($u in $Units) {
    $r = [ordered]@{ id = $u.Id; kind = $u.Kind; ok = $false }
    $clock = [Diagnostics.Stopwatch]::StartNew()
    $ps = $null
    try {
        $spec = $In.units.($u.Id)
        if ($null -eq $spec) { throw "no parameters for $($u.Id)" }
        if ($null -eq $Runspace) {
            $Runspace = [RunspaceFactory]::CreateRunspace()
            $Runspace.Open()
            $Runspace.SessionStateProxy.SetVariable('ErrorActionPreference', 'Stop')
            $Runspace.SessionStateProxy.SetVariable('ProgressPreference', 'SilentlyContinue')
        }
        $ps = [PowerShell]::Create()
        $ps.Runspace = $Runspace
        [void]$ps.AddScript($u.Body, $true).AddArgument($spec.params)
        $async = $ps.BeginInvoke()
        if ($async.AsyncWaitHandle.WaitOne([int]$spec.timeout_ms)) {
            $out = $ps.EndInvoke($async)
            if ($out.Count -lt 1) { throw 'the script returned nothing' }
            $data = $out[$out.Count - 1]
            if ($data -is [System.Collections.IDictionary]) { $data = $data.psobject.BaseObject }
            $r.data = $data
            $r.ok = $true
        } else {
            [void]$ps.BeginStop($null, $null)
            $ps = $null
            $Runspace = $null
            $r.error = "timed out after $([int]$spec.timeout_ms) ms"
            $r.error_type = 'System.TimeoutException'
        }
    } catch {
        $e = $_.Exception
        while ($null -ne $e.InnerException) { $e = $e.InnerException }
        $r.error = $e.Message
        $r.error_type = $e.GetType().FullName
    } finally {
        if ($null -ne $ps) { $ps.Dispose() }
    }
    $r.ms = [int]$clock.ElapsedMilliseconds
    [void]$Results.Add($r)
}
$doc = [ordered]@{ osiris = 'batch/v1'; computer = $env:COMPUTERNAME; ps_version = $PSVersionTable.PSVersion.ToString(); results = $Results }
'OSIRIS-RESULT ' + [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes((ConvertTo-Json -InputObject $doc -Depth 16 -Compress)))
"""


class ScriptError(ValueError):
    """A fragment that cannot be composed (names the check or runbook)."""


@dataclass(frozen=True)
class Unit:
    kind: str  # "check" | "runbook"
    id: str
    version: int
    text: str  # the fragment, starting with its marker line


@lru_cache(maxsize=1024)
def unit(kind: str, unit_id: str, script: str | None) -> Unit:
    """Validate a check's or runbook's fragment: it must start with its own
    marker and be embeddable in a single-quoted here-string. Cached: the
    same fragments come back every sweep (a ScriptError is not cached)."""
    if not script or not script.strip():
        raise ScriptError(f"{kind} {unit_id}: a windows {kind} needs a PowerShell script")
    text = script.strip("\n").replace("\r\n", "\n")
    first = text.split("\n", 1)[0]
    m = UNIT_MARKER.match(first)
    if not m or m.group(1) != kind or m.group(2) != unit_id:
        raise ScriptError(f"{kind} {unit_id}: the script must start with the line '# osiris-{kind}: {unit_id}/v<N>' "
                          f"(got {first[:60]!r})")
    if re.search(r"^'@", text, re.M):
        raise ScriptError(f"{kind} {unit_id}: a line of the script starts with '@, which would end the here-string "
                          "it is embedded in")
    return Unit(kind, unit_id, int(m.group(3)), text)


def compose(units: tuple[Unit, ...]) -> str:
    """The batch text for these units: depends on nothing else. Not cached:
    which checks are due differs from host to host and tick to tick, so a
    cache of texts (up to the envelope size each) kept filling for the
    agent's first ten minutes (bench/soak) for a join that costs ~40 us."""
    parts = [_BATCH_HEAD]
    for u in sorted(units, key=lambda x: (x.kind, x.id)):
        parts.append(f"[void]$Units.Add(@{{ Kind = '{u.kind}'; Id = '{u.id}'; Body = @'\n{u.text}\n'@ }})\n")
    parts.append(_BATCH_TAIL)
    return "".join(parts)


def encode_params(units: Sequence[Unit], params: Mapping[str, Mapping[str, Any]],
                  timeouts: Mapping[str, float]) -> str:
    """The batch's one argument: base64 of UTF-8 JSON."""
    doc = {"v": 1, "units": {u.id: {"timeout_ms": max(1, int(timeouts[u.id] * 1000)), "params": dict(params[u.id])}
                             for u in units}}
    try:
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        bad = next((u.id for u in units if not _jsonable(params[u.id])), "?")
        raise ScriptError(f"check {bad}: params must be JSON data (strings, numbers, booleans, lists, objects): "
                          f"{exc}") from None
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def encoded_command(text: str = BOOTSTRAP) -> str:
    return base64.b64encode(text.encode("utf-16-le")).decode("ascii")


_BOOTSTRAP_B64 = encoded_command()


def command_line() -> tuple[str, list[str]]:
    """The WinRS command: the same for every batch."""
    return "powershell.exe", ["-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand", _BOOTSTRAP_B64]


def environment(script: str, params_b64: str) -> dict[str, str]:
    """Shell environment variables carrying the batch and its parameters."""
    env: dict[str, str] = {}
    for name, value in (("OSIRIS_SCRIPT", base64.b64encode(script.encode("utf-8")).decode("ascii")),
                        ("OSIRIS_PARAMS", params_b64)):
        chunks = [value[i:i + ENV_CHUNK] for i in range(0, len(value), ENV_CHUNK)] or [""]
        env[f"{name}_N"] = str(len(chunks))
        env.update({f"{name}_{i}": c for i, c in enumerate(chunks)})
    return env


def envelope_bytes(env: Mapping[str, str]) -> int:
    """Size of a Create request carrying ``env`` (values plus element
    overhead, plus the header and body pywinrm writes)."""
    return 2048 + sum(len(k) + len(v) + 60 for k, v in env.items())


def plan_batches(units: Sequence[Unit], size_of: Any, limit: int) -> list[list[Unit]]:
    """Split units (in id order) into as few batches as fit ``limit`` bytes
    each; ``size_of(list_of_units)`` measures a candidate batch. A single
    unit too large on its own is still sent alone (the host will refuse it,
    and its error names that check)."""
    ordered = sorted(units, key=lambda u: (u.kind, u.id))
    if size_of(ordered) <= limit:
        return [ordered]
    batches: list[list[Unit]] = []
    current: list[Unit] = []
    for u in ordered:
        if current and size_of([*current, u]) > limit:
            batches.append(current)
            current = []
        current.append(u)
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True)
class UnitResult:
    id: str
    ok: bool
    data: Mapping[str, Any]
    error: str
    error_type: str
    ms: float


def parse_output(stdout: bytes) -> dict[str, UnitResult]:
    """Find the ``OSIRIS-RESULT`` line and decode it. Raises ValueError with
    a reason fit for an observation when there is none or it is malformed."""
    for raw in stdout.splitlines():
        line = raw.strip()
        if line.startswith(RESULT_PREFIX.encode()):
            try:
                doc = json.loads(base64.b64decode(line[len(RESULT_PREFIX):], validate=True).decode("utf-8"))
            except ValueError as exc:
                raise ValueError(f"the batch's result line is not base64 JSON: {exc}") from None
            if not isinstance(doc, dict) or doc.get("osiris") != "batch/v1" or not isinstance(doc.get("results"), list):
                raise ValueError("the batch's result is not an osiris batch/v1 document")
            out = {}
            for r in doc["results"]:
                if not isinstance(r, dict) or not isinstance(r.get("id"), str):
                    raise ValueError("the batch's result has an entry without an id")
                data = r.get("data")
                out[r["id"]] = UnitResult(r["id"], bool(r.get("ok")), data if isinstance(data, dict) else {},
                                          str(r.get("error") or ""), str(r.get("error_type") or ""),
                                          float(r.get("ms") or 0))
            return out
    raise ValueError("the script printed no OSIRIS-RESULT line")
