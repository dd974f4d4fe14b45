"""Building PowerShell fragments from this package's own constants.

The windows executor's conventions (plugins/windows, ``osiris_windows.script``):
a fragment starts with its versioned marker line (``# osiris-check:
<id>/v<N>`` or ``# osiris-runbook: <id>/v<N>``), takes ``param($P)`` (its
params, decoded JSON) and returns one hashtable; the executor embeds it in a
single-quoted here-string, runs it in a runspace with
``$ErrorActionPreference = 'Stop'`` and a time budget, and turns a throw into
an error result for that unit only.

Some fragments here are generated from tables (registry values to read or
write). Only literals of this package reach the generated text, each checked
by :func:`lit`; values from parameters are read from ``$P`` at run time,
never spliced into the source. Bump a fragment's version whenever its text
changes meaning: the lab's emulation is keyed by it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_SAFE_LITERAL = re.compile(r"^[A-Za-z0-9 _.:\\/{}()\-+,@%*$]*$")


def lit(text: str) -> str:
    """A single-quoted PowerShell literal of one of our constants."""
    if not _SAFE_LITERAL.match(text) or "'" in text:
        raise ValueError(f"not a safe PowerShell literal: {text!r}")
    return f"'{text}'"


def _header(kind: str, unit_id: str, version: int, doc: str) -> str:
    lines = [f"# osiris-{kind}: {unit_id}/v{version}"]
    lines += [f"# {ln}".rstrip() for ln in doc.strip().splitlines()] if doc else []
    return "\n".join(lines) + "\nparam($P)\n"


def check_header(check_id: str, version: int, doc: str = "") -> str:
    return _header("check", check_id, version, doc)


def runbook_header(runbook_id: str, version: int, doc: str = "") -> str:
    return _header("runbook", runbook_id, version, doc)


# -- registry values -----------------------------------------------------------------------


@dataclass(frozen=True)
class RegValue:
    """One registry value a check reads (HKLM provider path and name)."""

    key: str
    name: str

    @property
    def ref(self) -> str:
        """How the value is named in facts: ``<key>\\<name>``."""
        return f"{self.key}\\{self.name}"


@dataclass(frozen=True)
class RegWrite:
    """One registry value a runbook writes. ``ps`` is the PowerShell
    expression of the value (a literal of ours, or an expression over
    ``$P`` such as ``[int]$P.minutes * 60000``); ``py`` computes the same
    value from the runbook's params (the lab and the docs use it)."""

    key: str
    name: str
    kind: str  # RegistryValueKind: DWord, String
    ps: str
    py: Callable[[Mapping[str, Any]], Any]

    @property
    def ref(self) -> str:
        return f"{self.key}\\{self.name}"


def dword(key: str, name: str, value: int) -> RegWrite:
    return RegWrite(key, name, "DWord", str(int(value)), lambda _p, v=int(value): v)


def dword_param(key: str, name: str, ps: str, py: Callable[[Mapping[str, Any]], int]) -> RegWrite:
    return RegWrite(key, name, "DWord", ps, py)


def read_registry(check_id: str, values: Sequence[RegValue], version: int = 1, doc: str = "") -> str:
    """A check fragment that reports each value (``None`` when the key or
    value is absent) under ``values`` keyed by :attr:`RegValue.ref`."""
    items = ",\n    ".join(f"@{{ k = {lit(v.key)}; n = {lit(v.name)} }}" for v in values)
    return check_header(check_id, version, doc) + f"""\
$values = [ordered]@{{}}
foreach ($r in @(
    {items}
)) {{
    $v = $null
    $key = Get-Item -LiteralPath $r.k -ErrorAction SilentlyContinue
    if ($null -ne $key) {{ $v = $key.GetValue($r.n, $null) }}
    $values[$r.k + '\\' + $r.n] = $v
}}
@{{ values = $values }}
"""


# A runbook's body that sets registry values, idempotently: a value that
# already has the wanted data and kind is left alone (and not reported).
_SET_VALUES = """\
$changed = New-Object System.Collections.ArrayList
foreach ($w in $writes) {
    if (-not (Test-Path -LiteralPath $w.k)) { [void](New-Item -Path $w.k -Force) }
    $key = Get-Item -LiteralPath $w.k
    $old = $key.GetValue($w.n, $null)
    $kind = $null
    if ($null -ne $old) { $kind = [string]$key.GetValueKind($w.n) }
    if ($null -eq $old -or [string]$old -ne [string]$w.v -or $kind -ne $w.t) {
        [void](New-ItemProperty -LiteralPath $w.k -Name $w.n -PropertyType $w.t -Value $w.v -Force)
        [void]$changed.Add($w.k + '\\' + $w.n)
    }
}
"""


def write_registry(runbook_id: str, writes: Sequence[RegWrite], version: int = 1, doc: str = "",
                   guard: str = "", after: str = "") -> str:
    """A runbook fragment that sets each value; ``guard`` runs first (it
    throws to refuse), ``after`` runs when something changed."""
    items = ",\n    ".join(
        f"@{{ k = {lit(w.key)}; n = {lit(w.name)}; t = {lit(w.kind)}; v = ({w.ps}) }}" for w in writes)
    text = runbook_header(runbook_id, version, doc) + guard
    text += f"$writes = @(\n    {items}\n)\n" + _SET_VALUES
    if after:
        text += "if ($changed.Count -gt 0) {\n" + after + "}\n"
    return text + "@{ changed = @($changed) }\n"


# The pattern for native commands (auditpol.exe, secedit.exe, w32tm.exe...):
# under $ErrorActionPreference = 'Stop', Windows PowerShell 5.1 turns a
# native program's stderr line into a terminating error when the output is
# captured, so fragments relax it around the call and judge $LASTEXITCODE.
NATIVE_PREAMBLE = "$ErrorActionPreference = 'Continue'\n"
