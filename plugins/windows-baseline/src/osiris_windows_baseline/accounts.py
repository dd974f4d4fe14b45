"""Accounts: password and lockout policy, the guest account, who is a local
administrator.

Where the domain and the host differ, each check reads the policy that
actually governs the accounts it is about:

* on a domain controller (``Win32_ComputerSystem.DomainRole`` 4 or 5), the
  domain's own policy, which every domain account is held to, through
  ``Get-ADDefaultDomainPasswordPolicy`` (readable by any authenticated
  account; fine-grained policies are listed too);
* on members and standalone hosts, the effective local policy, which
  governs the host's local accounts, through ``secedit /export`` (needs
  administrator rights, which the appliance's account has); ``net accounts``
  only when secedit fails, since its output is English-only text.

Never through a local SYSTEM process on a member, which would see only the
local policy and report it as the domain's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import Risk, Severity, Verdict

from .common import ALL, DAY, HOUR, check, failed, passed, runbook, schema, verdict
from .facts import FactError, as_bool, as_int, glob_any, listify, plural, require
from .parsers import policy_from_net_accounts, policy_from_secedit
from .ps import NATIVE_PREAMBLE, check_header, runbook_header

POLICY_CONTEXT = ("on a DC: the domain policy via the ActiveDirectory module, as the appliance's domain account "
                  "(any authenticated account may read it); on members and standalone hosts: the effective local "
                  "policy (local accounts) via secedit /export, as the appliance's administrator account")

_ROLE = "$role = [int](Get-CimInstance -ClassName Win32_ComputerSystem).DomainRole\n"

# The same body for every policy check: which source, then the values.
_POLICY_BODY = _ROLE + """\
$out = [ordered]@{ domain_role = $role }
if ($role -ge 4 -and $null -ne (Get-Module -ListAvailable -Name ActiveDirectory)) {
    Import-Module ActiveDirectory -Verbose:$false
    $d = Get-ADDefaultDomainPasswordPolicy
    $out.source = 'ad'
    $out.policy = [ordered]@{
        min_length = [int]$d.MinPasswordLength
        history = [int]$d.PasswordHistoryCount
        max_age_days = [Math]::Floor($d.MaxPasswordAge.TotalDays)
        min_age_days = [Math]::Floor($d.MinPasswordAge.TotalDays)
        complexity = [bool]$d.ComplexityEnabled
        reversible = [bool]$d.ReversibleEncryptionEnabled
        lockout_threshold = [int]$d.LockoutThreshold
        lockout_duration_min = [Math]::Floor($d.LockoutDuration.TotalMinutes)
        lockout_window_min = [Math]::Floor($d.LockoutObservationWindow.TotalMinutes)
    }
    $out.fine_grained = @(Get-ADFineGrainedPasswordPolicy -Filter * | ForEach-Object {
        [ordered]@{ name = [string]$_.Name; precedence = [int]$_.Precedence; min_length = [int]$_.MinPasswordLength
                    lockout_threshold = [int]$_.LockoutThreshold }
    })
} else {
    $dir = [IO.Path]::GetTempPath()
    if (-not (Test-Path -LiteralPath $dir)) { $dir = Join-Path $env:SystemRoot 'Temp' }
    $cfg = Join-Path $dir ('osiris-' + [guid]::NewGuid().ToString('N') + '.inf')
""" + NATIVE_PREAMBLE + """\
    try {
        $null = & secedit.exe /export /cfg $cfg /areas SECURITYPOLICY /quiet
        $code = $LASTEXITCODE
        if ($code -eq 0 -and (Test-Path -LiteralPath $cfg)) {
            # UTF-16 LE with a byte order mark; only [System Access] is sent.
            $section = New-Object System.Collections.ArrayList
            $inside = $false
            foreach ($line in ([IO.File]::ReadAllText($cfg) -split "`r?`n")) {
                if ($line -match '^\\[(.+)\\]\\s*$') { $inside = ($Matches[1] -eq 'System Access'); continue }
                if ($inside -and $line.Trim()) { [void]$section.Add($line.Trim()) }
            }
            $out.source = 'secedit'
            $out.text = "[System Access]`n" + ($section -join "`n")
        } else {
            $out.source = 'net_accounts'
            $out.secedit_exit_code = $code
            $out.text = (& net.exe accounts) -join "`n"
        }
    } finally {
        Remove-Item -LiteralPath $cfg -Force -ErrorAction SilentlyContinue
    }
}
$out
"""


def policy_fragment(check_id: str, version: int = 1) -> str:
    return check_header(check_id, version, """\
Domain controllers: the domain's policy (Get-ADDefaultDomainPasswordPolicy).
Other hosts: the effective local policy (secedit /export; net accounts if
secedit fails).""") + _POLICY_BODY


def read_policy(facts: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(a description of the source, the normalised policy)."""
    require(facts, "source")
    source = facts["source"]
    if source == "ad":
        p = dict(facts.get("policy") or {})
        fgpp = listify(facts.get("fine_grained"))
        where = "domain policy" + (f" (+{plural(len(fgpp), 'fine-grained policy', 'fine-grained policies')})"
                                   if fgpp else "")
        return where, p
    if source == "secedit":
        return "local policy", policy_from_secedit(str(facts.get("text") or ""))
    if source == "net_accounts":
        return "local policy (net accounts)", policy_from_net_accounts(str(facts.get("text") or ""))
    raise FactError(f"unknown policy source {source!r}")


def _num(p: Mapping[str, Any], key: str) -> int | None:
    return as_int(p.get(key))


def evaluate_length(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    where, p = read_policy(facts)
    n, want = _num(p, "min_length") or 0, int(params["min_length"])
    weaker = [f"{f['name']} ({f['min_length']})" for f in listify(facts.get("fine_grained"))
              if as_int(f.get("min_length"), 0) < want]
    problems = []
    if n < want:
        problems.append(f"minimum password length is {n} (at least {want})")
    if weaker:
        problems.append(f"fine-grained policies allow shorter passwords: {', '.join(weaker)}")
    return verdict(problems, f"{where}: passwords of at least {n} characters", f"{where}: ")


def evaluate_history(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    where, p = read_policy(facts)
    n, want = _num(p, "history") or 0, int(params["min_history"])
    if n < want:
        return failed(f"{where}: {plural(n, 'previous password')} remembered (at least {want})")
    return passed(f"{where}: {n} previous passwords remembered")


def evaluate_age(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    where, p = read_policy(facts)
    max_age, min_age = _num(p, "max_age_days") or 0, _num(p, "min_age_days") or 0
    problems = []
    if max_age <= 0:
        problems.append("passwords never expire")
    elif max_age > int(params["max_age_days"]):
        problems.append(f"passwords expire after {max_age} days (at most {params['max_age_days']})")
    if min_age < int(params["min_age_days"]):
        problems.append(f"minimum password age {min_age} days (at least {params['min_age_days']}: "
                        "otherwise history is bypassed by changing passwords repeatedly)")
    return verdict(problems, f"{where}: passwords expire after {max_age} days, minimum age {min_age}", f"{where}: ")


def evaluate_complexity(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    where, p = read_policy(facts)
    if p.get("complexity") is None:
        raise FactError(f"{where}: complexity is not reported by this source")
    problems = []
    if not as_bool(p["complexity"]):
        problems.append("complexity requirements are off")
    if as_bool(p.get("reversible"), not_configured=False):
        problems.append("passwords are stored with reversible encryption")
    return verdict(problems, f"{where}: complexity required, no reversible encryption", f"{where}: ")


def evaluate_lockout(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    where, p = read_policy(facts)
    threshold = _num(p, "lockout_threshold") or 0
    duration, window = _num(p, "lockout_duration_min"), _num(p, "lockout_window_min")
    problems = []
    if threshold == 0:
        problems.append("accounts are never locked out")
    elif threshold > int(params["max_threshold"]):
        problems.append(f"lockout after {threshold} bad passwords (at most {params['max_threshold']})")
    if threshold:
        # A negative duration (or AD's minimum TimeSpan) means: until an administrator unlocks.
        if duration is not None and 0 <= duration < int(params["min_duration_minutes"]):
            problems.append(f"lockout lasts {duration} min (at least {params['min_duration_minutes']})")
        if window is not None and 0 <= window < int(params["min_window_minutes"]):
            problems.append(f"bad-password count resets after {window} min (at least {params['min_window_minutes']})")
    return verdict(problems, f"{where}: lockout after {threshold} bad passwords", f"{where}: ")


# -- guest account ------------------------------------------------------------------------------

GUEST = check_header("windows.accounts.guest_disabled", 1, """\
The guest account is found by its SID (RID 501), whatever it was renamed to.""") + _ROLE + """\
if ($role -ge 4) {
    Import-Module ActiveDirectory -Verbose:$false
    $sid = (Get-ADDomain).DomainSID.Value + '-501'
    $u = Get-ADUser -Identity $sid -Properties Enabled
    [ordered]@{ source = 'ad'; domain_role = $role; name = [string]$u.SamAccountName; sid = $sid; enabled = [bool]$u.Enabled }
} else {
    $u = @(Get-LocalUser | Where-Object { $_.SID.Value -like 'S-1-5-21-*-501' })
    if ($u.Count -eq 0) {
        [ordered]@{ source = 'local'; domain_role = $role; name = $null; sid = $null; enabled = $false }
    } else {
        [ordered]@{ source = 'local'; domain_role = $role; name = [string]$u[0].Name; sid = [string]$u[0].SID.Value; enabled = [bool]$u[0].Enabled }
    }
}
"""


def evaluate_guest(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    require(facts, "enabled")
    name = facts.get("name") or "Guest"
    where = "domain" if facts.get("source") == "ad" else "local"
    if facts.get("sid") is None:
        return passed("there is no guest account")
    if as_bool(facts["enabled"]):
        return failed(f"the {where} guest account ({name}) is enabled")
    return passed(f"the {where} guest account ({name}) is disabled")


# -- local Administrators --------------------------------------------------------------------------

ADMINS = check_header("windows.accounts.local_admins", 1, """\
Members of BUILTIN\\Administrators (S-1-5-32-544). On a DC that is the
domain's Builtin group. Get-LocalGroupMember fails on a group that holds an
orphaned SID (a deleted account); ADSI (WinNT provider) still lists it.""") + _ROLE + """\
$members = New-Object System.Collections.ArrayList
$method = 'localaccounts'
$fallback = $null
if ($role -ge 4) {
    Import-Module ActiveDirectory -Verbose:$false
    $method = 'ad'
    foreach ($m in Get-ADGroupMember -Identity 'S-1-5-32-544') {
        [void]$members.Add([ordered]@{ name = [string]$m.Name; sid = [string]$m.SID.Value; class = [string]$m.objectClass })
    }
} else {
    try {
        foreach ($m in Get-LocalGroupMember -SID 'S-1-5-32-544' -ErrorAction Stop) {
            [void]$members.Add([ordered]@{ name = [string]$m.Name; sid = [string]$m.SID.Value; class = [string]$m.ObjectClass })
        }
    } catch {
        $method = 'adsi'
        $fallback = $_.Exception.Message
        $members.Clear()
        $group = (New-Object Security.Principal.SecurityIdentifier('S-1-5-32-544')).Translate([Security.Principal.NTAccount]).Value.Split('\\')[1]
        $g = [ADSI]('WinNT://./' + $group + ',group')
        foreach ($m in @($g.Invoke('Members'))) {
            $t = $m.GetType()
            $path = [string]$t.InvokeMember('ADsPath', 'GetProperty', $null, $m, $null)
            $sid = (New-Object Security.Principal.SecurityIdentifier($t.InvokeMember('objectSid', 'GetProperty', $null, $m, $null), 0)).Value
            # WinNT://DOMAIN/name, WinNT://DOMAIN/HOST/name, or WinNT://S-1-5-21-... when orphaned
            $parts = $path.Substring(8).Split('/')
            $name = $parts[0]
            if ($parts.Count -ge 2) { $name = $parts[-2] + '\\' + $parts[-1] }
            [void]$members.Add([ordered]@{ name = $name; sid = $sid; class = [string]$t.InvokeMember('Class', 'GetProperty', $null, $m, $null) })
        }
    }
}
[ordered]@{ domain_role = $role; method = $method; fallback_reason = $fallback; members = @($members) }
"""


def unapproved_admins(facts: Mapping[str, Any], params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    allowed = list(params["allowed"])
    out = []
    for m in listify(facts.get("members")):
        name, sid = str(m.get("name") or ""), str(m.get("sid") or "")
        if not (glob_any(name, allowed) or glob_any(sid, allowed)):
            out.append(m)
    return out


def evaluate_admins(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    require(facts, "members")
    members = listify(facts["members"])
    bad = unapproved_admins(facts, params)
    if bad:
        shown = []
        for m in bad:
            name, sid = str(m.get("name") or ""), str(m.get("sid") or "")
            shown.append(f"{sid} (orphaned: a deleted account)" if name == sid or name.startswith("S-1-")
                         else f"{name} ({sid})")
        return failed(f"Administrators has {plural(len(bad), 'member')} outside the allowlist: {', '.join(shown)}")
    return passed(f"Administrators: {', '.join(str(m.get('name')) for m in members)} (all allowlisted)")


# -- runbooks ----------------------------------------------------------------------------------------
#
# Both policy runbooks only tighten: a value already stricter than asked
# is left alone, so running one twice changes nothing the second time.

_READ_CURRENT = _ROLE + """\
$cur = @{}
if ($role -ge 4) {
    Import-Module ActiveDirectory -Verbose:$false
    $d = Get-ADDefaultDomainPasswordPolicy
    $cur.MinimumPasswordLength = [int]$d.MinPasswordLength
    $cur.PasswordHistorySize = [int]$d.PasswordHistoryCount
    $cur.MaximumPasswordAge = [Math]::Floor($d.MaxPasswordAge.TotalDays)
    $cur.MinimumPasswordAge = [Math]::Floor($d.MinPasswordAge.TotalDays)
    $cur.PasswordComplexity = [int][bool]$d.ComplexityEnabled
    $cur.ClearTextPassword = [int][bool]$d.ReversibleEncryptionEnabled
    $cur.LockoutBadCount = [int]$d.LockoutThreshold
    $cur.LockoutDuration = [Math]::Floor($d.LockoutDuration.TotalMinutes)
    $cur.ResetLockoutCount = [Math]::Floor($d.LockoutObservationWindow.TotalMinutes)
} else {
    $dir = [IO.Path]::GetTempPath()
    if (-not (Test-Path -LiteralPath $dir)) { $dir = Join-Path $env:SystemRoot 'Temp' }
    $stem = Join-Path $dir ('osiris-' + [guid]::NewGuid().ToString('N'))
""" + NATIVE_PREAMBLE + """\
    $null = & secedit.exe /export /cfg ($stem + '.old.inf') /areas SECURITYPOLICY /quiet
    if ($LASTEXITCODE -ne 0) { throw "secedit /export failed with exit code $LASTEXITCODE" }
    foreach ($line in [IO.File]::ReadAllLines($stem + '.old.inf')) {
        if ($line -match '^\\s*(\\w+)\\s*=\\s*(-?\\d+)\\s*$') { $cur[$Matches[1]] = [int]$Matches[2] }
    }
    Remove-Item -LiteralPath ($stem + '.old.inf') -Force -ErrorAction SilentlyContinue
}
function Get-Cur([string]$k) { if ($cur.ContainsKey($k)) { return $cur[$k] } else { return 0 } }
$want = [ordered]@{}
"""

# $want: INF key -> number. Domain: the matching AD parameters; local: an
# INF of just those values, applied with secedit /configure.
_APPLY = """\
if ($want.Count -gt 0) {
    if ($role -ge 4) {
        $set = @{}
        foreach ($k in $want.Keys) {
            $v = [int]$want[$k]
            switch ($k) {
                'MinimumPasswordLength' { $set.MinPasswordLength = $v }
                'PasswordHistorySize' { $set.PasswordHistoryCount = $v }
                'MaximumPasswordAge' { $set.MaxPasswordAge = New-TimeSpan -Days $v }
                'MinimumPasswordAge' { $set.MinPasswordAge = New-TimeSpan -Days $v }
                'PasswordComplexity' { $set.ComplexityEnabled = ($v -eq 1) }
                'ClearTextPassword' { $set.ReversibleEncryptionEnabled = ($v -eq 1) }
                'LockoutBadCount' { $set.LockoutThreshold = $v }
                'LockoutDuration' { $set.LockoutDuration = New-TimeSpan -Minutes $v }
                'ResetLockoutCount' { $set.LockoutObservationWindow = New-TimeSpan -Minutes $v }
            }
        }
        Set-ADDefaultDomainPasswordPolicy -Identity (Get-ADDomain).DistinguishedName @set
    } else {
        $lines = New-Object System.Collections.ArrayList
        [void]$lines.Add('[Unicode]')
        [void]$lines.Add('Unicode=yes')
        [void]$lines.Add('[System Access]')
        foreach ($k in $want.Keys) { [void]$lines.Add(('{0} = {1}' -f $k, [int]$want[$k])) }
        [void]$lines.Add('[Version]')
        [void]$lines.Add('signature="$CHICAGO$"')
        [void]$lines.Add('Revision=1')
        [IO.File]::WriteAllLines($stem + '.new.inf', [string[]]$lines, [Text.Encoding]::Unicode)
        try {
            $null = & secedit.exe /configure /db ($stem + '.sdb') /cfg ($stem + '.new.inf') /areas SECURITYPOLICY /quiet
            if ($LASTEXITCODE -ne 0) { throw "secedit /configure failed with exit code $LASTEXITCODE" }
        } finally {
            Remove-Item -LiteralPath ($stem + '.new.inf'), ($stem + '.sdb'), ($stem + '.jfm') -Force -ErrorAction SilentlyContinue
        }
    }
}
@{ changed = @($want.Keys); domain = ($role -ge 4) }
"""

SET_PASSWORD_POLICY = runbook_header("windows.accounts.set_password_policy", 1, """\
Tightens the password policy where it is weaker than asked: the domain's
on a DC, the local policy elsewhere.""") + _READ_CURRENT + """\
if ((Get-Cur 'MinimumPasswordLength') -lt [int]$P.min_length) { $want.MinimumPasswordLength = [int]$P.min_length }
if ((Get-Cur 'PasswordHistorySize') -lt [int]$P.history) { $want.PasswordHistorySize = [int]$P.history }
$max = Get-Cur 'MaximumPasswordAge'
if ($max -le 0 -or $max -gt [int]$P.max_age_days) { $want.MaximumPasswordAge = [int]$P.max_age_days }
if ((Get-Cur 'MinimumPasswordAge') -lt [int]$P.min_age_days) { $want.MinimumPasswordAge = [int]$P.min_age_days }
if ((Get-Cur 'PasswordComplexity') -ne 1) { $want.PasswordComplexity = 1 }
if ((Get-Cur 'ClearTextPassword') -ne 0) { $want.ClearTextPassword = 0 }
""" + _APPLY

SET_LOCKOUT_POLICY = runbook_header("windows.accounts.set_lockout_policy", 1, """\
Tightens the lockout policy: a threshold no higher than asked, a duration
and a reset window no shorter.""") + """\
if ([int]$P.window_minutes -gt [int]$P.duration_minutes) {
    throw 'refused: the reset window cannot be longer than the lockout duration (Windows rejects it)'
}
""" + _READ_CURRENT + """\
$t = Get-Cur 'LockoutBadCount'
if ($t -eq 0 -or $t -gt [int]$P.threshold) { $want.LockoutBadCount = [int]$P.threshold }
$d = Get-Cur 'LockoutDuration'
if ($d -ge 0 -and $d -lt [int]$P.duration_minutes) { $want.LockoutDuration = [int]$P.duration_minutes }
$w = Get-Cur 'ResetLockoutCount'
if ($w -lt [int]$P.window_minutes) { $want.ResetLockoutCount = [int]$P.window_minutes }
""" + _APPLY

DISABLE_GUEST = runbook_header("windows.accounts.disable_guest", 1) + _ROLE + """\
if ($role -ge 4) {
    Import-Module ActiveDirectory -Verbose:$false
    $sid = (Get-ADDomain).DomainSID.Value + '-501'
    $was = [bool](Get-ADUser -Identity $sid -Properties Enabled).Enabled
    if ($was) { Disable-ADAccount -Identity $sid }
} else {
    $u = @(Get-LocalUser | Where-Object { $_.SID.Value -like 'S-1-5-21-*-501' })
    $was = $false
    if ($u.Count -gt 0) {
        $sid = $u[0].SID.Value
        $was = [bool]$u[0].Enabled
        if ($was) { Disable-LocalUser -SID $u[0].SID }
    }
}
@{ changed = $was }
"""

REMOVE_ADMINS = runbook_header("windows.accounts.remove_admin_members", 1, """\
Removes the given SIDs from BUILTIN\\Administrators. Never removes the
account this session runs as, any group in its token (through which it may
hold its own administrator rights), the built-in Administrator (RID 500) or
Domain Admins (RID 512).""") + _ROLE + """\
$me = [Security.Principal.WindowsIdentity]::GetCurrent()
$mine = @($me.User.Value) + @($me.Groups | ForEach-Object { $_.Value })
$removed = New-Object System.Collections.ArrayList
$kept = New-Object System.Collections.ArrayList
foreach ($s in @($P.members | ForEach-Object { [string]$_ })) {
    if ($mine -contains $s) { [void]$kept.Add($s + ': the appliance account or one of its groups'); continue }
    if ($s -like 'S-1-5-21-*-500' -or $s -like 'S-1-5-21-*-512') { [void]$kept.Add($s + ': built-in'); continue }
    if ($role -ge 4) {
        Import-Module ActiveDirectory -Verbose:$false
        if (@(Get-ADGroupMember -Identity 'S-1-5-32-544' | Where-Object { $_.SID.Value -eq $s }).Count -gt 0) {
            Remove-ADGroupMember -Identity 'S-1-5-32-544' -Members $s -Confirm:$false
            [void]$removed.Add($s)
        }
        continue
    }
    try {
        Remove-LocalGroupMember -SID 'S-1-5-32-544' -Member $s -ErrorAction Stop
        [void]$removed.Add($s)
    } catch [Microsoft.PowerShell.Commands.MemberNotFoundException] {
        # not a member (any more): nothing to do
    } catch {
        # an orphaned SID in the group makes the LocalAccounts cmdlets fail: ADSI can remove by SID
        $group = (New-Object Security.Principal.SecurityIdentifier('S-1-5-32-544')).Translate([Security.Principal.NTAccount]).Value.Split('\\')[1]
        $g = [ADSI]('WinNT://./' + $group + ',group')
        $present = @($g.Invoke('Members') | Where-Object {
            (New-Object Security.Principal.SecurityIdentifier($_.GetType().InvokeMember('objectSid', 'GetProperty', $null, $_, $null), 0)).Value -eq $s })
        if ($present.Count -gt 0) {
            $g.Remove('WinNT://' + $s)
            [void]$removed.Add($s)
        }
    }
}
@{ removed = @($removed); kept = @($kept) }
"""

_POLICY_DESC = (" On a DC this changes the domain's default password policy directly; where the Default Domain "
                "Policy GPO defines the value, the PDC re-applies the GPO's value at its next refresh and the fix "
                "belongs in that GPO (the check fails again and the flap guard escalates). On members it changes "
                "the local policy, which governs local accounts only.")

CHECKS = [
    check(
        "windows.accounts.password_length", "Passwords have a minimum length",
        hipaa=("164.308(a)(5)(ii)(D)", "164.312(d)"), cis="1.1.4", roles=ALL, severity=Severity.HIGH,
        script=policy_fragment("windows.accounts.password_length"), evaluate=evaluate_length,
        params={"min_length": 14}, timeout=60, context=POLICY_CONTEXT,
        reads="password policy: minimum length (and fine-grained policies on a DC)",
    ),
    check(
        "windows.accounts.password_history", "Previous passwords cannot be reused",
        hipaa=("164.308(a)(5)(ii)(D)",), cis="1.1.1", roles=ALL, severity=Severity.MEDIUM,
        script=policy_fragment("windows.accounts.password_history"), evaluate=evaluate_history,
        params={"min_history": 24}, timeout=60, context=POLICY_CONTEXT, reads="password policy: history size",
    ),
    check(
        "windows.accounts.password_age", "Passwords expire and cannot be changed back at once",
        hipaa=("164.308(a)(5)(ii)(D)",), cis="1.1.2, 1.1.3", roles=ALL, severity=Severity.LOW,
        script=policy_fragment("windows.accounts.password_age"), evaluate=evaluate_age,
        params={"max_age_days": 365, "min_age_days": 1}, timeout=60, context=POLICY_CONTEXT,
        reads="password policy: maximum and minimum age",
    ),
    check(
        "windows.accounts.password_complexity", "Passwords must be complex and are not stored reversibly",
        hipaa=("164.308(a)(5)(ii)(D)", "164.312(d)"), cis="1.1.5, 1.1.7", roles=ALL, severity=Severity.HIGH,
        script=policy_fragment("windows.accounts.password_complexity"), evaluate=evaluate_complexity,
        timeout=60, context=POLICY_CONTEXT, reads="password policy: complexity, reversible encryption",
    ),
    check(
        "windows.accounts.lockout", "Accounts lock out after repeated bad passwords",
        hipaa=("164.308(a)(5)(ii)(C)", "164.312(d)"), cis="1.2.1, 1.2.2, 1.2.4", roles=ALL, severity=Severity.HIGH,
        script=policy_fragment("windows.accounts.lockout"), evaluate=evaluate_lockout,
        params={"max_threshold": 5, "min_duration_minutes": 15, "min_window_minutes": 15}, timeout=60,
        context=POLICY_CONTEXT, reads="lockout policy: threshold, duration, observation window",
    ),
    check(
        "windows.accounts.guest_disabled", "The guest account is disabled",
        hipaa=("164.312(a)(2)(i)", "164.312(d)"), cis="2.3.1.2", roles=ALL, severity=Severity.HIGH,
        script=GUEST, evaluate=evaluate_guest, timeout=30, interval=DAY / 4,
        context="on a DC: the domain's guest account (ActiveDirectory module); elsewhere: the local one "
                "(Get-LocalUser), as the appliance's administrator account",
        reads="the account with RID 501 (renamed or not) and whether it is enabled",
        description="The guest account is shared and anonymous: it defeats unique user identification.",
    ),
    check(
        "windows.accounts.local_admins", "Local Administrators match an allowlist",
        hipaa=("164.308(a)(4)(ii)(B)", "164.308(a)(3)(ii)(A)", "164.312(a)(1)"), roles=ALL,
        severity=Severity.HIGH, interval=HOUR, script=ADMINS, evaluate=evaluate_admins, timeout=60,
        params={"allowed": ["S-1-5-21-*-500", "S-1-5-21-*-512", "S-1-5-21-*-519"]},
        context="on a DC: BUILTIN\\Administrators of the domain (Get-ADGroupMember); elsewhere: the local group "
                "(Get-LocalGroupMember, ADSI WinNT when an orphaned SID makes it fail), as the appliance's "
                "administrator account",
        reads="members of S-1-5-32-544: name, SID, class",
        description="Allowlist entries are names (DOMAIN\\user) or SIDs, wildcards allowed; by default the "
                    "built-in Administrator, Domain Admins and Enterprise Admins. Add the appliance's own account "
                    "if it is a direct member. Orphaned SIDs (deleted accounts) always fail.",
    ),
]

_POLICY_SCHEMA = schema({
    "min_length": {"type": "integer", "minimum": 8, "maximum": 14},
    "history": {"type": "integer", "minimum": 1, "maximum": 24},
    "max_age_days": {"type": "integer", "minimum": 1, "maximum": 999},
    "min_age_days": {"type": "integer", "minimum": 0, "maximum": 998},
}, ("min_length", "history", "max_age_days", "min_age_days"))

RUNBOOKS = [
    runbook(
        "windows.accounts.set_password_policy", "Tighten the password policy",
        fixes=("windows.accounts.password_length", "windows.accounts.password_history",
               "windows.accounts.password_age", "windows.accounts.password_complexity"),
        risk=Risk.MEDIUM, script=SET_PASSWORD_POLICY, timeout=120, params_schema=_POLICY_SCHEMA,
        description="Raises minimum length and history, bounds the maximum age, sets a minimum age, turns "
                    "complexity on and reversible encryption off, where weaker. Users meet it at their next "
                    "password change; nobody is locked out. Medium risk: it changes what every user must "
                    "choose." + _POLICY_DESC,
    ),
    runbook(
        "windows.accounts.set_lockout_policy", "Tighten the account lockout policy",
        fixes=("windows.accounts.lockout",), risk=Risk.MEDIUM, script=SET_LOCKOUT_POLICY, timeout=120,
        params_schema=schema({
            "threshold": {"type": "integer", "minimum": 3, "maximum": 10},
            "duration_minutes": {"type": "integer", "minimum": 15, "maximum": 1440},
            "window_minutes": {"type": "integer", "minimum": 15, "maximum": 1440},
        }, ("threshold", "duration_minutes", "window_minutes")),
        description="Sets the lockout threshold, duration and reset window where weaker. Medium risk: a "
                    "service or phone with a stale password can lock its account out." + _POLICY_DESC,
        management="the appliance's account locks out only on bad passwords, which the appliance does not "
                   "retry (its retries are for network faults); the built-in Administrator is exempt from "
                   "lockout unless 'Allow Administrator account lockout' is set.",
    ),
    runbook(
        "windows.accounts.disable_guest", "Disable the guest account",
        fixes=("windows.accounts.guest_disabled",), risk=Risk.LOW, script=DISABLE_GUEST, timeout=60,
        description="Disables the RID-501 account (Disable-ADAccount on a DC, Disable-LocalUser elsewhere).",
    ),
    runbook(
        "windows.accounts.remove_admin_members", "Remove accounts from local Administrators",
        fixes=("windows.accounts.local_admins",), risk=Risk.HIGH, script=REMOVE_ADMINS, timeout=120,
        params_schema=schema({"members": {"type": "array", "minItems": 1, "uniqueItems": True,
                                          "items": {"type": "string", "pattern": r"^S-1-[0-9]+(-[0-9]+)+$"}}},
                             ("members",)),
        description="Removes the listed SIDs (as reported by the check) from BUILTIN\\Administrators, including "
                    "orphaned ones. High risk: someone loses administrator rights; a person or planner names "
                    "the members, no default rule runs it.",
        management="never removes the SID the session runs as, nor any group in the session's token (the "
                   "membership through which the appliance is an administrator), nor the built-in "
                   "Administrator or Domain Admins.",
    ),
]
