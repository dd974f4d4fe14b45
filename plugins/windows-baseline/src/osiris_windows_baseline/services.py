"""Services the safeguards depend on: Windows Update, the Event Log, the
Defender antivirus service and the firewall service must not be disabled
(the last three must also run). A check per service, each cited for the
safeguard that stops working without it.

Fragments use ``Get-Service`` (``Status`` and ``StartType``; in a raw
``ConvertTo-Json`` both are numbers: ServiceControllerStatus 1 Stopped,
4 Running; ServiceStartMode 2 Automatic, 3 Manual, 4 Disabled).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from osiris import Risk, Severity, Verdict

from .common import ALL, HOUR, check, failed, passed, runbook, schema
from .facts import as_bool, enum_name, require
from .ps import check_header, lit, runbook_header

STATUS = {1: "Stopped", 2: "StartPending", 3: "StopPending", 4: "Running", 5: "ContinuePending",
          6: "PausePending", 7: "Paused"}
START = {0: "Boot", 1: "System", 2: "Automatic", 3: "Manual", 4: "Disabled"}


@dataclass(frozen=True)
class Service:
    key: str
    name: str
    display: str
    must_run: bool
    start: str  # what the runbook restores
    hipaa: tuple[str, ...]
    severity: Severity
    why: str

    @property
    def check_id(self) -> str:
        return f"windows.services.{self.key}"


SERVICES = (
    Service("windows_update", "wuauserv", "Windows Update", False, "Manual",
            ("164.308(a)(1)(ii)(B)", "164.308(a)(5)(ii)(B)"), Severity.HIGH,
            "A disabled Windows Update service (a common 'fix' for surprise restarts) stops all patching; "
            "it is trigger-started, so it need not be running."),
    Service("event_log", "EventLog", "Windows Event Log", True, "Automatic", ("164.312(b)",), Severity.CRITICAL,
            "Without the Event Log service nothing is audited."),
    Service("defender", "WinDefend", "Microsoft Defender Antivirus", True, "Automatic",
            ("164.308(a)(5)(ii)(B)",), Severity.HIGH,
            "Fails where Defender is absent (another antivirus): disable the check for such a site."),
    Service("firewall", "mpssvc", "Windows Defender Firewall", True, "Automatic",
            ("164.312(e)(1)",), Severity.CRITICAL,
            "With the firewall service stopped, every profile's rules are void whatever they say."),
)
BY_NAME = {s.name: s for s in SERVICES}


def fragment(svc: Service, version: int = 1) -> str:
    return check_header(svc.check_id, version, f"The {svc.display} service ({svc.name}).") + f"""\
$s = Get-Service -Name {lit(svc.name)} -ErrorAction SilentlyContinue
if ($null -eq $s) {{
    [ordered]@{{ Name = {lit(svc.name)}; present = $false; Status = $null; StartType = $null }}
}} else {{
    [ordered]@{{ Name = [string]$s.Name; present = $true; Status = [string]$s.Status; StartType = [string]$s.StartType }}
}}
"""


def evaluate_service(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    require(facts, "Name", "present")
    name = str(facts["Name"])
    if not as_bool(facts["present"]):
        return failed(f"the {name} service is not installed")
    status = enum_name(facts.get("Status"), STATUS)
    start = enum_name(facts.get("StartType"), START)
    problems = []
    if start not in params["allowed_start"]:
        problems.append(f"start type {start}")
    if params["must_run"] and status != "Running":
        problems.append(status.lower())
    if problems:
        return failed(f"the {name} service is {' and '.join(problems)}")
    return passed(f"the {name} service is {status.lower()} ({start})")


# The baseline per service is a constant table here; $P.service only picks
# a row, and must be one of them.
RESTORE = runbook_header("windows.services.restore", 1, """\
Restores a safeguard service's start type and starts it if it must run.
The firewall service is not handled here (windows.services.restore_firewall).""") + """\
$baseline = @{
    'wuauserv' = @{ start = 'Manual'; run = $false }
    'EventLog' = @{ start = 'Automatic'; run = $true }
    'WinDefend' = @{ start = 'Automatic'; run = $true }
}
$name = [string]$P.service
if (-not $baseline.ContainsKey($name)) { throw ('refused: not a service this runbook restores: ' + $name) }
$b = $baseline[$name]
$s = Get-Service -Name $name
$changed = New-Object System.Collections.ArrayList
if ([string]$s.StartType -eq 'Disabled' -or ($b.run -and [string]$s.StartType -ne $b.start)) {
    Set-Service -Name $name -StartupType $b.start
    [void]$changed.Add('StartType')
}
if ($b.run -and [string]$s.Status -ne 'Running') {
    Start-Service -Name $name
    [void]$changed.Add('started')
}
@{ service = $name; changed = @($changed) }
"""

RESTORE_FIREWALL = runbook_header("windows.services.restore_firewall", 1, """\
Starts the firewall service only when a persistent inbound allow rule for
WinRM (TCP 5985 or 5986) is active, so the management path survives the
rules taking effect.""") + """\
# Local rules, and rules delivered by Group Policy.
$stores = @('HKLM:\\SYSTEM\\CurrentControlSet\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\FirewallRules',
            'HKLM:\\SOFTWARE\\Policies\\Microsoft\\WindowsFirewall\\FirewallRules')
$winrm = @(foreach ($store in $stores) {
    $rules = Get-Item -LiteralPath $store -ErrorAction SilentlyContinue
    if ($null -eq $rules) { continue }
    $rules.GetValueNames() | ForEach-Object { [string]$rules.GetValue($_) } | Where-Object {
        $_ -match '\\|Action=Allow\\|' -and $_ -match '\\|Active=TRUE\\|' -and $_ -match '\\|Dir=In\\|' -and $_ -match '\\|LPort=(5985|5986)\\|'
    }
})
if ($winrm.Count -eq 0) {
    throw 'refused: no active inbound allow rule for WinRM (TCP 5985/5986) is stored; starting the firewall could cut the appliance off'
}
$s = Get-Service -Name mpssvc
$changed = New-Object System.Collections.ArrayList
if ([string]$s.StartType -ne 'Automatic') { Set-Service -Name mpssvc -StartupType Automatic; [void]$changed.Add('StartType') }
if ([string]$s.Status -ne 'Running') { Start-Service -Name mpssvc; [void]$changed.Add('started') }
@{ service = 'mpssvc'; changed = @($changed); winrm_rules = $winrm.Count }
"""

CHECKS = [
    check(
        s.check_id, f"The {s.display} service is {'running' if s.must_run else 'not disabled'}",
        hipaa=s.hipaa, roles=ALL, severity=s.severity, interval=HOUR, script=fragment(s), evaluate=evaluate_service,
        params={"must_run": s.must_run,
                "allowed_start": ["Automatic"] if s.must_run else ["Automatic", "Manual"]},
        timeout=15, reads=f"Get-Service -Name {s.name}: Status, StartType", description=s.why,
    )
    for s in SERVICES
]

RUNBOOKS = [
    runbook(
        "windows.services.restore", "Restore a safeguard service's start type and start it",
        fixes=tuple(s.check_id for s in SERVICES if s.name != "mpssvc"), risk=Risk.LOW, script=RESTORE, timeout=90,
        params_schema=schema({"service": {"enum": [s.name for s in SERVICES if s.name != "mpssvc"]}}, ("service",)),
        description="Set-Service -StartupType (Manual for Windows Update, Automatic for the others) and "
                    "Start-Service. WinDefend refuses changes while Defender is turned off by policy or tamper "
                    "protection: the runbook then fails and the incident escalates.",
    ),
    runbook(
        "windows.services.restore_firewall", "Restart the firewall service, WinRM allowed",
        fixes=("windows.services.firewall",), risk=Risk.MEDIUM, script=RESTORE_FIREWALL, timeout=90,
        description="Sets mpssvc to start automatically and starts it. Medium risk: every stored rule takes "
                    "effect at once, including rules nobody has seen work.",
        management="refuses to start the service unless an active inbound allow rule for TCP 5985 or 5986 is "
                   "stored (FirewallPolicy\\FirewallRules, or the GPO rule store); the rules load with the service, so WinRM stays "
                   "reachable.",
    ),
]
