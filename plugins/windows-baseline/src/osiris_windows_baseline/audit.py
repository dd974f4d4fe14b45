"""Advanced audit policy: one check per subcategory, so each maps to its own
HIPAA paragraph and CIS recommendation, and one runbook that turns on the
auditing a check asks for.

Fragments run ``auditpol /get /subcategory:{GUID} /r``: subcategories are
named by GUID because their names (and the CSV header, and the Inclusion
Setting text) are localised. The evaluator reads the numeric Setting Value
column where auditpol prints it and the English Inclusion Setting
otherwise. auditpol needs administrator rights (SeSecurityPrivilege).

(``windows.audit.subcategory_override``, which makes these settings win over
legacy category settings, is in :mod:`.policies`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from osiris import Risk, Severity, Verdict

from .common import ALL, DAY, check, failed, passed, runbook, schema
from .facts import FactError, as_int, require
from .parsers import parse_auditpol_csv
from .ps import NATIVE_PREAMBLE, check_header, lit, runbook_header

_SUFFIX = "-69AE-11D9-BED3-505054503030"


@dataclass(frozen=True)
class Subcategory:
    key: str  # check id suffix
    name: str  # English name, for reasons and docs
    guid: str
    success: bool
    failure: bool
    cis: str
    hipaa: tuple[str, ...]
    severity: Severity
    roles: frozenset[str] = ALL
    why: str = ""

    @property
    def check_id(self) -> str:
        return f"windows.audit.{self.key}"

    def wanted(self) -> str:
        return setting_words(self.success, self.failure)


def _g(prefix: str) -> str:
    return "{" + prefix + _SUFFIX + "}"


LOGIN_MONITORING = "164.308(a)(5)(ii)(C)"
AUDIT = "164.312(b)"
ACCESS_MOD = "164.308(a)(4)(ii)(C)"

SUBCATEGORIES = (
    Subcategory("credential_validation", "Credential Validation", _g("0CCE923F"), True, True, "17.1.1",
                (LOGIN_MONITORING, AUDIT), Severity.HIGH, why="NTLM and local logon attempts, failed ones included"),
    Subcategory("kerberos_authentication", "Kerberos Authentication Service", _g("0CCE9242"), True, True, "17.1.2",
                (LOGIN_MONITORING, AUDIT), Severity.HIGH, frozenset({"dc"}), why="domain logons (TGT requests)"),
    Subcategory("logon", "Logon", _g("0CCE9215"), True, True, "17.5.4", (LOGIN_MONITORING, AUDIT), Severity.HIGH,
                why="who logged on where, and failed logons (events 4624/4625)"),
    Subcategory("logoff", "Logoff", _g("0CCE9216"), True, False, "17.5.3", (AUDIT,), Severity.LOW),
    Subcategory("account_lockout", "Account Lockout", _g("0CCE9217"), False, True, "17.5.1",
                (LOGIN_MONITORING, AUDIT), Severity.MEDIUM, why="logons refused because the account is locked"),
    Subcategory("special_logon", "Special Logon", _g("0CCE921B"), True, False, "17.5.6", (LOGIN_MONITORING, AUDIT),
                Severity.MEDIUM, why="logons with administrator-equivalent privileges (event 4672)"),
    Subcategory("user_account_management", "User Account Management", _g("0CCE9235"), True, True, "17.2.6",
                (AUDIT, ACCESS_MOD), Severity.MEDIUM, why="accounts created, changed, enabled, deleted"),
    Subcategory("security_group_management", "Security Group Management", _g("0CCE9237"), True, False, "17.2.5",
                (AUDIT, ACCESS_MOD), Severity.MEDIUM, why="group membership changes (who became an administrator)"),
    Subcategory("directory_service_changes", "Directory Service Changes", _g("0CCE923C"), True, False, "17.4.2",
                (AUDIT, ACCESS_MOD), Severity.MEDIUM, frozenset({"dc"}), why="changes to Active Directory objects"),
    Subcategory("audit_policy_change", "Audit Policy Change", _g("0CCE922F"), True, False, "17.7.1",
                (AUDIT, "164.312(c)(1)"), Severity.HIGH, why="someone turning auditing off"),
    Subcategory("removable_storage", "Removable Storage", _g("0CCE9245"), True, True, "17.6.4",
                (AUDIT, "164.310(d)(1)"), Severity.MEDIUM, why="files read from and written to removable media"),
    Subcategory("process_creation", "Process Creation", _g("0CCE922B"), True, False, "17.3.2",
                (AUDIT, "164.308(a)(1)(ii)(D)"), Severity.LOW, why="which programs ran (event 4688)"),
    Subcategory("sensitive_privilege_use", "Sensitive Privilege Use", _g("0CCE9228"), True, True, "17.8.1",
                (AUDIT,), Severity.LOW),
    Subcategory("security_system_extension", "Security System Extension", _g("0CCE9211"), True, False, "17.9.4",
                (AUDIT, "164.308(a)(5)(ii)(B)"), Severity.MEDIUM, why="services and authentication packages installed"),
)
BY_GUID = {s.guid.lower(): s for s in SUBCATEGORIES}


def setting_words(success: bool, failure: bool) -> str:
    """What auditpol calls a subcategory's setting (English locale)."""
    return {(True, True): "Success and Failure", (True, False): "Success", (False, True): "Failure",
            (False, False): "No Auditing"}[(success, failure)]


def fragment(sub: Subcategory, version: int = 1) -> str:
    return check_header(sub.check_id, version, f"Audit subcategory {sub.name}, by GUID (names are localised).") \
        + NATIVE_PREAMBLE + f"""\
$rows = @(& auditpol.exe /get {lit('/subcategory:' + sub.guid)} /r)
$code = $LASTEXITCODE
@{{ guid = {lit(sub.guid)}; exit_code = [int]$code; csv = ($rows -join "`n") }}
"""


def evaluate_subcategory(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    require(facts, "guid", "csv")
    code = as_int(facts.get("exit_code"), 0)
    if code != 0:
        first = str(facts["csv"]).strip().splitlines()[:1]
        raise FactError(f"auditpol exited with {code}: {first[0] if first else 'no output'}")
    guid = str(facts["guid"]).lower()
    rows = parse_auditpol_csv(str(facts["csv"]))
    row = rows.get(guid)
    if row is None:
        raise FactError(f"auditpol did not report subcategory {facts['guid']}")
    sub = BY_GUID.get(guid)
    name = sub.name if sub else row["name"]
    want_s, want_f = bool(params["success"]), bool(params["failure"])
    missing = [w for w, want, have in (("success", want_s, row["success"]), ("failure", want_f, row["failure"]))
               if want and not have]
    have = setting_words(row["success"], row["failure"])
    if missing:
        return failed(f"{name}: {' and '.join(missing)} not audited (audits: {have}; required: "
                      f"{setting_words(want_s, want_f)})")
    return passed(f"{name}: {have} audited")


ENABLE = runbook_header("windows.audit.enable_subcategory", 1, """\
Turns on success and/or failure auditing of one subcategory (by GUID),
where not already on. Never turns auditing off; running it again changes
nothing. The current setting is read from the Setting Value column (or the
English inclusion text); when neither can be read, the flags are set anyway.""") + NATIVE_PREAMBLE + """\
$guid = [string]$P.subcategory
if (-not $P.success -and -not $P.failure) { throw 'nothing to enable: success and failure are both false' }
$has = @{ success = $false; failure = $false }
$row = @(& auditpol.exe /get ('/subcategory:' + $guid) /r | Where-Object { $_ -like ('*' + $guid + '*') })
if ($row.Count -gt 0) {
    $cols = $row[0].Split(',')
    if ($cols.Count -ge 7 -and $cols[6] -match '^[0-9]+$') {
        $v = [int]$cols[6]
        $has.success = ($v -band 1) -ne 0
        $has.failure = ($v -band 2) -ne 0
    } elseif ($cols[4] -eq 'Success and Failure') { $has.success = $true; $has.failure = $true }
    elseif ($cols[4] -eq 'Success') { $has.success = $true }
    elseif ($cols[4] -eq 'Failure') { $has.failure = $true }
}
$flags = New-Object System.Collections.ArrayList
if ($P.success -and -not $has.success) { [void]$flags.Add('/success:enable') }
if ($P.failure -and -not $has.failure) { [void]$flags.Add('/failure:enable') }
if ($flags.Count -gt 0) {
    $out = @(& auditpol.exe /set ('/subcategory:' + $guid) @flags)
    if ($LASTEXITCODE -ne 0) { throw ('auditpol /set failed (' + $LASTEXITCODE + '): ' + ($out -join ' ')) }
}
@{ subcategory = $guid; changed = @($flags) }
"""

CHECKS = [
    check(
        s.check_id, f"Audit policy: {s.name} ({s.wanted()})",
        hipaa=s.hipaa, cis=s.cis, roles=s.roles, severity=s.severity, interval=DAY / 2,
        script=fragment(s), evaluate=evaluate_subcategory, params={"success": s.success, "failure": s.failure},
        timeout=20, reads=f"auditpol /get /subcategory:{s.guid} /r",
        description=f"Records {s.why}." if s.why else "",
    )
    for s in SUBCATEGORIES
]

RUNBOOKS = [
    runbook(
        "windows.audit.enable_subcategory", "Turn on auditing of an audit policy subcategory",
        fixes=tuple(s.check_id for s in SUBCATEGORIES), risk=Risk.LOW, script=ENABLE, timeout=30,
        params_schema=schema({
            "subcategory": {"type": "string", "enum": [s.guid for s in SUBCATEGORIES]},
            "success": {"type": "boolean"},
            "failure": {"type": "boolean"},
        }, ("subcategory", "success", "failure")),
        description="auditpol /set /subcategory:{GUID} /success:enable and/or /failure:enable. Only adds "
                    "auditing; more Security log events, nothing else. Where a GPO sets advanced audit policy, "
                    "the GPO's setting returns at the next refresh and the fix belongs there.",
    ),
]
