"""Backup recency on servers and domain controllers (Windows Server Backup).

``Get-WBSummary`` (module WindowsServerBackup, installed with the
Windows-Server-Backup feature) gives the last successful backup, the result
of the last attempt (an HRESULT, 0 on success) and the number of versions.
A server without Windows Server Backup fails: if another product backs it
up, the site disables this check (and proves its backups otherwise).

No runbook: starting a backup is not a fix for a broken backup job, and a
full backup run takes hours and disk space nobody reserved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import Severity, Verdict

from .common import HOUR, SERVERS, check, failed, passed
from .facts import as_bool, as_datetime, as_int, require
from .ps import check_header

RECENCY = check_header("windows.backup.recent", 1) + """\
$now = [DateTime]::UtcNow
if ($null -eq (Get-Command -Name Get-WBSummary -ErrorAction SilentlyContinue)) {
    [ordered]@{ installed = $false; now_utc = $now.ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture) }
} else {
    $s = Get-WBSummary
    $ok = $s.LastSuccessfulBackupTime
    $last = $s.LastBackupTime
    [ordered]@{
        installed = $true
        policy_configured = ($null -ne (Get-WBPolicy -ErrorAction SilentlyContinue))
        LastSuccessfulBackupTime = $(if ($null -ne $ok -and $ok.Year -gt 2000) { $ok.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture) } else { $null })
        LastBackupTime = $(if ($null -ne $last -and $last.Year -gt 2000) { $last.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture) } else { $null })
        LastBackupResultHR = [int]$s.LastBackupResultHR
        NumberOfVersions = [int]$s.NumberOfVersions
        now_utc = $now.ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture)
    }
}
"""


def evaluate_backup(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    require(facts, "installed", "now_utc")
    if not as_bool(facts["installed"]):
        return failed("Windows Server Backup is not installed: no backup of this server is visible")
    now = as_datetime(facts["now_utc"])
    ok = as_datetime(facts.get("LastSuccessfulBackupTime"))
    limit = float(params["max_age_hours"])
    problems = []
    if not as_bool(facts.get("policy_configured"), not_configured=True):
        problems.append("no scheduled backup policy")
    if ok is None:
        problems.append("no successful backup ever")
    else:
        hours = (now - ok).total_seconds() / 3600.0
        if hours > limit:
            problems.append(f"last successful backup {hours:.0f} h ago ({ok:%Y-%m-%d %H:%M} UTC; at most {limit:g} h)")
    hr = as_int(facts.get("LastBackupResultHR"), 0)
    if hr:
        problems.append(f"the last attempt failed (0x{hr & 0xFFFFFFFF:08X})")
    if problems:
        return failed("backup: " + "; ".join(problems))
    return passed(f"last successful backup {ok:%Y-%m-%d %H:%M} UTC, {as_int(facts.get('NumberOfVersions'), 0)} "
                  "versions kept")


CHECKS = [
    check(
        "windows.backup.recent", "A successful backup ran recently",
        hipaa=("164.308(a)(7)(ii)(A)", "164.310(d)(2)(iv)"), roles=SERVERS, severity=Severity.CRITICAL,
        interval=2 * HOUR, script=RECENCY, evaluate=evaluate_backup, params={"max_age_hours": 26}, timeout=60,
        reads="Get-WBSummary: LastSuccessfulBackupTime, LastBackupTime, LastBackupResultHR, NumberOfVersions; "
              "Get-WBPolicy (whether a schedule exists)",
        description="Data backup plan: an exact copy of ePHI retrievable. Daily backups with two hours' slack. "
                    "No runbook: a failed backup job needs a person (target disk, credentials, space).",
    ),
]

RUNBOOKS: list = []
