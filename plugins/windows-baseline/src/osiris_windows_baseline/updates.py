"""Patching: when updates were last installed, security updates waiting,
and a restart that keeps installed updates from taking effect.

(``windows.updates.automatic``, the policy, is in :mod:`.policies`.)

The Windows Update Agent API (``Microsoft.Update.Session``) can search and
read history from a WinRM session, but not download or install: Windows
refuses those calls from a remote session (``E_ACCESSDENIED``). So these
checks have no runbook; installing and restarting belong to the site's
patch management, which the escalation names. Ages are computed against
the host's own clock (``now_utc`` is kept in the facts), so a verdict is a
pure function of the facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from osiris import Severity, Verdict

from .common import ALL, HOUR, check, failed, passed
from .facts import FactError, as_bool, as_datetime, as_int, listify, plural, require
from .ps import check_header

SECURITY_UPDATES = "0fa1201d-4330-4fa8-8ae9-b877473b6441"  # WSUS/WU classification GUIDs
CRITICAL_UPDATES = "e6cf1350-c01b-414d-a61f-263d14d133b4"

# -- last successful installation ----------------------------------------------------------

RECENT_INSTALL = check_header("windows.updates.recent_install", 1, """\
The newest successful installation in the Windows Update history (UTC),
and the newest hotfix by Get-HotFix (a local date), whichever is later.""") + """\
$last = $null
$count = 0
$wu_error = $null
try {
    $searcher = (New-Object -ComObject Microsoft.Update.Session).CreateUpdateSearcher()
    $count = [int]$searcher.GetTotalHistoryCount()
    if ($count -gt 0) {
        foreach ($e in $searcher.QueryHistory(0, [Math]::Min($count, 500))) {
            # Operation 1: installation; ResultCode 2: succeeded, 3: succeeded with errors
            if ($e.Operation -eq 1 -and ($e.ResultCode -eq 2 -or $e.ResultCode -eq 3)) {
                $d = [DateTime]::SpecifyKind($e.Date, [DateTimeKind]::Utc)
                if ($null -eq $last -or $d -gt $last) { $last = $d }
            }
        }
    }
} catch {
    $wu_error = $_.Exception.Message
}
$hf = Get-HotFix | Where-Object { $null -ne $_.InstalledOn } | Sort-Object InstalledOn -Descending | Select-Object -First 1
[ordered]@{
    wu_last_success_utc = $(if ($null -ne $last) { $last.ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture) } else { $null })
    wu_history_count = $count
    wu_error = $wu_error
    hotfix_id = $(if ($null -ne $hf) { [string]$hf.HotFixID } else { $null })
    hotfix_installed_on = $(if ($null -ne $hf) { $hf.InstalledOn.ToString('yyyy-MM-dd', [Globalization.CultureInfo]::InvariantCulture) } else { $null })
    now_utc = [DateTime]::UtcNow.ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture)
}
"""


def last_install(facts: Mapping[str, Any]) -> datetime | None:
    dates = [as_datetime(facts.get("wu_last_success_utc")), as_datetime(facts.get("hotfix_installed_on"))]
    dates = [d for d in dates if d is not None]
    return max(dates) if dates else None


def evaluate_recent_install(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    require(facts, "now_utc")
    now = as_datetime(facts["now_utc"])
    last = last_install(facts)
    limit = int(params["max_age_days"])
    if last is None:
        extra = f" (Windows Update: {facts['wu_error']})" if facts.get("wu_error") else ""
        return failed(f"no successful update installation is recorded{extra}")
    days = (now - last).total_seconds() / 86400.0
    when = last.date().isoformat()
    if days > limit:
        return failed(f"the last update was installed {days:.0f} days ago ({when}); at most {limit} days allowed")
    return passed(f"the last update was installed {days:.0f} days ago ({when})")


# -- security updates waiting ----------------------------------------------------------------------

PENDING = check_header("windows.updates.pending_security", 1, """\
Updates applicable and not installed (searching is allowed over WinRM;
downloading and installing are not). Classification by category GUID, so
localised category names do not matter.""") + """\
$searcher = (New-Object -ComObject Microsoft.Update.Session).CreateUpdateSearcher()
$result = $searcher.Search("IsInstalled=0 and IsHidden=0 and Type='Software'")
$now = [DateTime]::UtcNow
$updates = New-Object System.Collections.ArrayList
foreach ($u in $result.Updates) {
    $released = [DateTime]::SpecifyKind($u.LastDeploymentChangeTime, [DateTimeKind]::Utc)
    $cats = New-Object System.Collections.ArrayList
    foreach ($c in $u.Categories) { [void]$cats.Add(([string]$c.CategoryID).ToLowerInvariant()) }
    $kbs = New-Object System.Collections.ArrayList
    foreach ($k in $u.KBArticleIDs) { [void]$kbs.Add('KB' + [string]$k) }
    [void]$updates.Add([ordered]@{
        title = [string]$u.Title
        kb = @($kbs)
        msrc_severity = [string]$u.MsrcSeverity
        categories = @($cats)
        released_utc = $released.ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture)
    })
}
[ordered]@{ result_code = [int]$result.ResultCode; updates = @($updates); now_utc = $now.ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture) }
"""


def is_security(update: Mapping[str, Any]) -> bool:
    cats = {str(c).lower() for c in listify(update.get("categories"))}
    return bool(cats & {SECURITY_UPDATES, CRITICAL_UPDATES}) or bool(update.get("msrc_severity"))


def evaluate_pending(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    require(facts, "updates", "now_utc")
    now = as_datetime(facts["now_utc"])
    grace = int(params["grace_days"])
    # OperationResultCode 2: succeeded, 3: succeeded with errors
    if as_int(facts.get("result_code"), 2) not in (2, 3):
        raise FactError(f"the update search did not succeed (result code {facts.get('result_code')})")
    pending = [u for u in listify(facts["updates"]) if is_security(u)]
    overdue = []
    for u in pending:
        age = (now - as_datetime(u["released_utc"])).total_seconds() / 86400.0
        if age > grace:
            overdue.append(f"{'/'.join(listify(u.get('kb'))) or u.get('title', '?')} "
                           f"({u.get('msrc_severity') or 'security'}, {age:.0f} days)")
    if overdue:
        return failed(f"{plural(len(overdue), 'security update')} released more than {grace} days ago not "
                      f"installed: {', '.join(overdue[:10])}{' ...' if len(overdue) > 10 else ''}")
    if pending:
        return passed(f"{plural(len(pending), 'security update')} pending, all within the {grace}-day grace period")
    return passed("no security update is pending")


# -- restart pending ----------------------------------------------------------------------------------

REBOOT = check_header("windows.updates.reboot_pending", 1, """\
Restart flags of Windows Update and Component Based Servicing, and uptime.
PendingFileRenameOperations is counted only (applications set it too).""") + """\
$wu = Test-Path -LiteralPath 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired'
$cbs = Test-Path -LiteralPath 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending'
$pfro = (Get-Item -LiteralPath 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager').GetValue('PendingFileRenameOperations', $null)
$boot = (Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime
[ordered]@{
    wu_reboot_required = [bool]$wu
    cbs_reboot_pending = [bool]$cbs
    pending_file_renames = @($pfro | Where-Object { $_ }).Count
    last_boot_utc = $boot.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture)
    now_utc = [DateTime]::UtcNow.ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture)
}
"""


def evaluate_reboot(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    require(facts, "wu_reboot_required", "cbs_reboot_pending", "last_boot_utc", "now_utc")
    up = (as_datetime(facts["now_utc"]) - as_datetime(facts["last_boot_utc"])).total_seconds() / 86400.0
    flags = [name for key, name in (("wu_reboot_required", "Windows Update"), ("cbs_reboot_pending", "servicing"))
             if as_bool(facts[key])]
    grace = float(params["grace_days"])
    if flags and up > grace:
        return failed(f"a restart required by {' and '.join(flags)} is pending and the host has been up "
                      f"{up:.0f} days: installed updates are not in effect")
    if flags:
        return passed(f"a restart is pending ({' and '.join(flags)}), within the {grace:g}-day grace period")
    return passed(f"no restart is pending (up {up:.1f} days)")


_NO_RUNBOOK = " No runbook: installing updates and restarting are the site's patch management."

CHECKS = [
    check(
        "windows.updates.recent_install", "Updates were installed recently",
        hipaa=("164.308(a)(1)(ii)(B)", "164.308(a)(5)(ii)(B)"), roles=ALL, severity=Severity.HIGH,
        interval=12 * HOUR, script=RECENT_INSTALL, evaluate=evaluate_recent_install,
        params={"max_age_days": 35}, timeout=90,
        reads="Microsoft.Update.Session history (QueryHistory: newest successful installation) and Get-HotFix",
        description="Monthly patching with a margin: the last successful installation is at most 35 days old."
                    + _NO_RUNBOOK,
    ),
    check(
        "windows.updates.pending_security", "No security update is overdue",
        hipaa=("164.308(a)(1)(ii)(B)", "164.308(a)(5)(ii)(B)"), roles=ALL, severity=Severity.HIGH,
        interval=12 * HOUR, script=PENDING, evaluate=evaluate_pending, params={"grace_days": 14}, timeout=300,
        reads="Microsoft.Update.Session search \"IsInstalled=0 and IsHidden=0 and Type='Software'\": "
              "classification GUIDs, MSRC severity, release date",
        description="A security or critical update released more than the grace period ago and still not "
                    "installed fails the check." + _NO_RUNBOOK,
    ),
    check(
        "windows.updates.reboot_pending", "No restart has been pending for long",
        hipaa=("164.308(a)(1)(ii)(B)",), roles=ALL, severity=Severity.MEDIUM, interval=6 * HOUR,
        script=REBOOT, evaluate=evaluate_reboot, params={"grace_days": 7}, timeout=30,
        reads="registry: WindowsUpdate\\Auto Update\\RebootRequired and Component Based Servicing\\RebootPending "
              "keys, PendingFileRenameOperations (count); Win32_OperatingSystem.LastBootUpTime",
        description="Installed updates protect nothing until the host restarts." + _NO_RUNBOOK,
    ),
]

RUNBOOKS: list = []
