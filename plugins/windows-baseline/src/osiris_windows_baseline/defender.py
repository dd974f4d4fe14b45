"""Microsoft Defender Antivirus beyond real-time scanning: tamper protection,
potentially unwanted applications, and exclusions that blind it.

(The windows plugin's ``windows.defender.realtime_protection`` checks the
engine, real-time protection and signature age.)

Facts keep the property names of ``Get-MpComputerStatus`` and
``Get-MpPreference``, so the output of ``... | ConvertTo-Json`` on a real
host is a valid facts document. On a host without Defender (a server with
another antivirus) the cmdlets do not exist: the check reports an error
naming the cmdlet, which says "no Defender here" rather than a false pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import Risk, Severity, Verdict

from .common import ALL, HOUR, check, errored, failed, passed, runbook, schema
from .facts import as_bool, as_int, glob_any, listify, require
from .ps import check_header, runbook_header

# -- tamper protection -----------------------------------------------------------------------

TAMPER = check_header("windows.defender.tamper_protection", 1) + """\
$s = Get-MpComputerStatus
[ordered]@{
    IsTamperProtected = [bool]$s.IsTamperProtected
    TamperProtectionSource = [string]$s.TamperProtectionSource
    AMRunningMode = [string]$s.AMRunningMode
}
"""


def evaluate_tamper(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    require(facts, "IsTamperProtected")
    mode = facts.get("AMRunningMode") or "Normal"
    if as_bool(facts["IsTamperProtected"]):
        return passed(f"tamper protection is on (source: {facts.get('TamperProtectionSource') or 'unknown'})")
    return failed(f"tamper protection is off: malware running as administrator can turn Defender off "
                  f"(running mode {mode})")


# -- potentially unwanted applications -------------------------------------------------------

PUA = check_header("windows.defender.pua_protection", 1) + """\
$p = Get-MpPreference
@{ PUAProtection = [int]$p.PUAProtection }
"""
_PUA = {0: "off", 1: "block", 2: "audit only"}


def evaluate_pua(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    require(facts, "PUAProtection")
    v = as_int(facts["PUAProtection"])
    if v == 1:
        return passed("potentially unwanted applications are blocked")
    return failed(f"potentially unwanted applications are not blocked (PUAProtection: {_PUA.get(v, v)})")


# -- exclusions ----------------------------------------------------------------------------------

EXCLUSIONS = check_header("windows.defender.exclusions", 1, """\
What Defender does not scan. With HideExclusionsFromLocalAdmins each list
reads 'N/A: Must be an administrator to view exclusions'.""") + """\
$p = Get-MpPreference
[ordered]@{
    ExclusionPath = @($p.ExclusionPath | Where-Object { $null -ne $_ } | ForEach-Object { [string]$_ })
    ExclusionExtension = @($p.ExclusionExtension | Where-Object { $null -ne $_ } | ForEach-Object { [string]$_ })
    ExclusionProcess = @($p.ExclusionProcess | Where-Object { $null -ne $_ } | ForEach-Object { [string]$_ })
}
"""
_KINDS = (("ExclusionPath", "allowed_paths", "path"), ("ExclusionExtension", "allowed_extensions", "extension"),
          ("ExclusionProcess", "allowed_processes", "process"))
_HIDDEN = "N/A"


def unexpected_exclusions(facts: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, allowed, _word in _KINDS:
        bad = [x for x in listify(facts.get(key)) if not glob_any(str(x), params.get(allowed, []))]
        if bad:
            out[key] = bad
    return out


def evaluate_exclusions(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    require(facts, "ExclusionPath")
    if any(str(x).startswith(_HIDDEN) for key, _a, _w in _KINDS for x in listify(facts.get(key))):
        return errored("Defender hides its exclusions from this account (HideExclusionsFromLocalAdmins); "
                       "review them in the management console")
    bad = unexpected_exclusions(facts, params)
    if bad:
        parts = [f"{word} {', '.join(bad[key])}" for key, _a, word in _KINDS if key in bad]
        return failed("Defender skips exclusions not in the allowlist: " + "; ".join(parts))
    n = sum(len(listify(facts.get(k))) for k, _a, _w in _KINDS)
    return passed(f"Defender exclusions all allowlisted ({n})" if n else "Defender has no exclusions")


# -- runbooks -------------------------------------------------------------------------------------

ENABLE_PUA = runbook_header("windows.defender.enable_pua_protection", 1) + """\
$was = [int](Get-MpPreference).PUAProtection
if ($was -ne 1) { Set-MpPreference -PUAProtection Enabled }
@{ changed = ($was -ne 1); previous = $was }
"""

REMOVE_EXCLUSIONS = runbook_header("windows.defender.remove_exclusions", 1, """\
Removes every exclusion that matches none of the allowlists (wildcards as
in -like). The removed entries are returned, so evidence keeps them.""") + """\
$p = Get-MpPreference
$removed = [ordered]@{}
foreach ($kind in @(
    @{ prop = 'ExclusionPath'; allow = @($P.allowed_paths) },
    @{ prop = 'ExclusionExtension'; allow = @($P.allowed_extensions) },
    @{ prop = 'ExclusionProcess'; allow = @($P.allowed_processes) }
)) {
    $drop = @($p.($kind.prop) | Where-Object { $null -ne $_ } | ForEach-Object { [string]$_ } | Where-Object {
        $x = $_
        -not (@($kind.allow | Where-Object { $x -like [string]$_ }).Count -gt 0)
    })
    if ($drop.Count -gt 0 -and $drop[0].StartsWith('N/A')) { throw 'refused: Defender hides its exclusions from this account' }
    if ($drop.Count -gt 0) {
        $splat = @{}
        $splat[$kind.prop] = $drop
        Remove-MpPreference @splat
    }
    $removed[$kind.prop] = $drop
}
@{ removed = $removed }
"""

_LIST = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 260}}

CHECKS = [
    check(
        "windows.defender.tamper_protection", "Defender tamper protection is on",
        hipaa=("164.308(a)(5)(ii)(B)", "164.312(c)(1)"), roles=ALL, severity=Severity.HIGH, interval=HOUR,
        script=TAMPER, evaluate=evaluate_tamper, timeout=30,
        reads="Get-MpComputerStatus: IsTamperProtected, TamperProtectionSource, AMRunningMode",
        description="Without tamper protection, malware that gains administrator rights switches Defender off. "
                    "No runbook: tamper protection is turned on from Microsoft Defender for Endpoint, Intune or "
                    "the Windows Security app, not by a script (by design).",
    ),
    check(
        "windows.defender.pua_protection", "Defender blocks potentially unwanted applications",
        hipaa=("164.308(a)(5)(ii)(B)",), cis="18.10.43.16", roles=ALL, severity=Severity.LOW,
        script=PUA, evaluate=evaluate_pua, timeout=30, reads="Get-MpPreference: PUAProtection",
    ),
    check(
        "windows.defender.exclusions", "Defender exclusions are limited to an allowlist",
        hipaa=("164.308(a)(5)(ii)(B)", "164.308(a)(1)(ii)(B)"), roles=ALL, severity=Severity.HIGH, interval=HOUR,
        script=EXCLUSIONS, evaluate=evaluate_exclusions, timeout=30,
        params={"allowed_paths": [], "allowed_extensions": [], "allowed_processes": []},
        reads="Get-MpPreference: ExclusionPath, ExclusionExtension, ExclusionProcess",
        description="Attackers add exclusions to hide their tools; vendors ask for broad ones. Allowlist the "
                    "site's approved exclusions (wildcards as in PowerShell -like).",
    ),
]

RUNBOOKS = [
    runbook(
        "windows.defender.enable_pua_protection", "Block potentially unwanted applications",
        fixes=("windows.defender.pua_protection",), risk=Risk.LOW, script=ENABLE_PUA, timeout=60,
        description="Set-MpPreference -PUAProtection Enabled.",
    ),
    runbook(
        "windows.defender.remove_exclusions", "Remove Defender exclusions that are not allowlisted",
        fixes=("windows.defender.exclusions",), risk=Risk.MEDIUM, script=REMOVE_EXCLUSIONS, timeout=60,
        params_schema=schema({"allowed_paths": _LIST, "allowed_extensions": _LIST, "allowed_processes": _LIST},
                             ("allowed_paths", "allowed_extensions", "allowed_processes")),
        description="Remove-MpPreference for each exclusion outside the allowlists; returns what it removed. "
                    "Medium risk: an application whose exclusion was legitimate but not allowlisted may slow "
                    "down or be quarantined.",
    ),
]

