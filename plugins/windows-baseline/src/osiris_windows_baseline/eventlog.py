"""Event log capacity and retention: the Security log big enough to hold
the audit trail between collections, and the Application and System logs.

Fragments read ``Get-WinEvent -ListLog`` (an ``EventLogConfiguration``:
``MaximumSizeInBytes``, ``LogMode``, ``IsEnabled``; ConvertTo-Json writes
LogMode as a number in Windows PowerShell 5.1: 0 Circular, 1 AutoBackup,
2 Retain). Reading the Security log's configuration needs administrator
rights. A size or mode set by Group Policy (``...\\Policies\\Microsoft\\
Windows\\EventLog\\<log>``) is what the cmdlet reports, since the service
applies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import Risk, Severity, Verdict

from .common import ALL, DAY, check, runbook, schema, verdict
from .facts import as_bool, as_int, enum_name, listify
from .ps import check_header, runbook_header

LOG_MODES = {0: "Circular", 1: "AutoBackup", 2: "Retain"}
_MODE_WORDS = {"Circular": "overwrites the oldest events", "AutoBackup": "archives when full",
               "Retain": "stops logging when full"}


def fragment(check_id: str, version: int = 1) -> str:
    return check_header(check_id, version, "The logs named in $P.logs.") + """\
$logs = @(Get-WinEvent -ListLog @($P.logs | ForEach-Object { [string]$_ }) | ForEach-Object {
    [ordered]@{
        LogName = [string]$_.LogName
        MaximumSizeInBytes = [long]$_.MaximumSizeInBytes
        LogMode = [string]$_.LogMode
        IsEnabled = [bool]$_.IsEnabled
    }
})
@{ logs = $logs }
"""


def evaluate_logs(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    seen = {str(x.get("LogName")): x for x in listify(facts.get("logs"))}
    problems, good = [], []
    for name in params["logs"]:
        log = seen.get(name)
        if log is None:
            problems.append(f"{name}: not reported")
            continue
        size_kb = (as_int(log.get("MaximumSizeInBytes")) or 0) // 1024
        mode = enum_name(log.get("LogMode"), LOG_MODES)
        why = []
        if not as_bool(log.get("IsEnabled"), not_configured=True):
            why.append("disabled")
        if size_kb < int(params["min_size_kb"]):
            why.append(f"{size_kb} KB (at least {params['min_size_kb']} KB)")
        if mode not in params["allowed_modes"]:
            why.append(f"{_MODE_WORDS[mode]} ({mode}; allowed {', '.join(params['allowed_modes'])})")
        if why:
            problems.append(f"{name}: {', '.join(why)}")
        else:
            good.append(f"{name} {size_kb} KB, {mode}")
    return verdict(problems, "; ".join(good), "event log ")


SET_LOGS = runbook_header("windows.eventlog.configure", 1, """\
Grows (never shrinks) each log to the given size, rounded up to 64 KB, and
sets its retention mode; saves only when something differs.""") + """\
$bytes = [long][Math]::Ceiling(([long]$P.min_size_kb * 1024) / 65536) * 65536
$changed = New-Object System.Collections.ArrayList
foreach ($name in @($P.logs)) {
    $c = New-Object System.Diagnostics.Eventing.Reader.EventLogConfiguration([string]$name)
    $dirty = $false
    if ($c.MaximumSizeInBytes -lt $bytes) { $c.MaximumSizeInBytes = $bytes; $dirty = $true }
    if ([string]$c.LogMode -ne [string]$P.mode) {
        $c.LogMode = [System.Diagnostics.Eventing.Reader.EventLogMode]([string]$P.mode)
        $dirty = $true
    }
    if ($dirty) { $c.SaveChanges(); [void]$changed.Add([string]$name) }
    $c.Dispose()
}
@{ changed = @($changed) }
"""

_CONTEXT_NOTE = "A GPO-defined size wins over the runbook's at the next policy refresh."

CHECKS = [
    check(
        "windows.eventlog.security_log", "The Security event log is large enough and keeps events",
        hipaa=("164.312(b)", "164.308(a)(1)(ii)(D)"), cis="18.10.26.2.1, 18.10.26.2.2", roles=ALL,
        severity=Severity.HIGH, interval=DAY / 2, script=fragment("windows.eventlog.security_log"),
        evaluate=evaluate_logs,
        params={"logs": ["Security"], "min_size_kb": 196608, "allowed_modes": ["Circular", "AutoBackup"]},
        timeout=20, reads="Get-WinEvent -ListLog Security: MaximumSizeInBytes, LogMode, IsEnabled",
        description="At least 192 MB. 'Retain' (do not overwrite) stops the audit trail when the log fills, "
                    "so overwriting or archiving is required; events are collected off the host in between.",
    ),
    check(
        "windows.eventlog.system_logs", "The Application and System event logs are large enough",
        hipaa=("164.312(b)",), cis="18.10.26.1.2, 18.10.26.4.2", roles=ALL, severity=Severity.LOW, interval=DAY / 2,
        script=fragment("windows.eventlog.system_logs"), evaluate=evaluate_logs,
        params={"logs": ["Application", "System"], "min_size_kb": 32768, "allowed_modes": ["Circular", "AutoBackup"]},
        timeout=20, reads="Get-WinEvent -ListLog Application, System: MaximumSizeInBytes, LogMode, IsEnabled",
    ),
]

RUNBOOKS = [
    runbook(
        "windows.eventlog.configure", "Grow event logs and set their retention",
        fixes=("windows.eventlog.security_log", "windows.eventlog.system_logs"), risk=Risk.LOW, script=SET_LOGS,
        timeout=60,
        params_schema=schema({
            "logs": {"type": "array", "minItems": 1, "uniqueItems": True,
                     "items": {"enum": ["Security", "Application", "System"]}},
            "min_size_kb": {"type": "integer", "minimum": 1024, "maximum": 4194240},
            "mode": {"enum": ["Circular", "AutoBackup"]},
        }, ("logs", "min_size_kb", "mode")),
        description="EventLogConfiguration.MaximumSizeInBytes and LogMode, then SaveChanges(): no event is "
                    "lost, the service applies the new size at once. " + _CONTEXT_NOTE,
    ),
]
