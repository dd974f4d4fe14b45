"""Services the safeguards depend on: the runbooks that restore them.

The checks (Windows Update, the Event Log, the Defender antivirus service
and the firewall service must not be disabled; the last three must also
run; each cited for the safeguard that stops working without it) are the
check pack ``packs/services.yaml``, probe type ``service`` (``Get-Service``:
``Status`` and ``StartType``; in a raw ``ConvertTo-Json`` both are numbers,
read with :data:`STATUS` and :data:`START`).
"""

from __future__ import annotations

from osiris import Risk

from .common import runbook, schema
from .ps import runbook_header

STATUS = {1: "Stopped", 2: "StartPending", 3: "StopPending", 4: "Running", 5: "ContinuePending",
          6: "PausePending", 7: "Paused"}
START = {0: "Boot", 1: "System", 2: "Automatic", 3: "Manual", 4: "Disabled"}


# What windows.services.restore restores, as its script's table says:
# service -> (start type, must run).
RESTORED = {"wuauserv": ("Manual", False), "EventLog": ("Automatic", True), "WinDefend": ("Automatic", True)}
FIXES = {"wuauserv": "windows.services.windows_update", "EventLog": "windows.services.event_log",
         "WinDefend": "windows.services.defender"}


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

CHECKS: list = []  # packs/services.yaml

RUNBOOKS = [
    runbook(
        "windows.services.restore", "Restore a safeguard service's start type and start it",
        fixes=tuple(FIXES.values()), risk=Risk.LOW, script=RESTORE, timeout=90,
        params_schema=schema({"service": {"enum": list(RESTORED)}}, ("service",)),
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
