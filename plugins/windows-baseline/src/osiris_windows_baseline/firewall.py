"""Windows Firewall: inbound traffic blocked by default, logging of drops.

(The windows plugin's ``windows.firewall.profiles_enabled`` checks that each
profile is on; these checks look at what an enabled profile does.)

Fragments read ``Get-NetFirewallProfile -PolicyStore ActiveStore``: the
effective settings, whether they come from local policy or a GPO. In
Windows PowerShell 5.1 ``ConvertTo-Json`` writes the profile's enums as
numbers (``Enabled``: GpoBoolean 1/0/2, ``DefaultInboundAction``: Action
0 NotConfigured, 2 Allow, 4 Block); the fragments cast them to their names
and the evaluators read either shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import Risk, Severity, Verdict
from osiris_windows.checks import PROFILES

from .common import ALL, HOUR, check, runbook, schema, verdict
from .facts import FactError, as_bool, as_int, enum_name, listify
from .ps import check_header, runbook_header

ACTIONS = {0: "NotConfigured", 2: "Allow", 4: "Block"}
WINRM_PORTS = (5985, 5986)


def profiles_by_name(facts: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out = {}
    for p in listify(facts.get("profiles")):
        if not isinstance(p, Mapping) or "Name" not in p:
            raise FactError("each profile needs a Name")
        out[str(p["Name"])] = p
    return out


def profile_fragment(check_id: str, doc: str, fields: dict[str, str], version: int = 1) -> str:
    """A fragment reporting ``fields`` (name -> PowerShell cast) of each
    profile's effective settings."""
    rows = "".join(f"        {name} = {cast}$_.{name}\n" for name, cast in fields.items())
    return check_header(check_id, version, doc) + (
        "$profiles = @(Get-NetFirewallProfile -PolicyStore ActiveStore | ForEach-Object {\n"
        "    [ordered]@{\n" + rows + "    }\n})\n@{ profiles = $profiles }\n")


def per_profile(facts: Mapping[str, Any], params: Mapping[str, Any], judge) -> list[str]:
    """``judge(profile) -> [problem...]`` for each profile the params name."""
    seen = profiles_by_name(facts)
    problems = []
    for name in params["profiles"]:
        p = seen.get(name)
        why = ["not reported"] if p is None else judge(p)
        if why:
            problems.append(f"{name}: {', '.join(why)}")
    return problems


# -- default inbound action ------------------------------------------------------------------

DEFAULT_INBOUND = profile_fragment(
    "windows.firewall.default_inbound_block", "Effective profile settings (ActiveStore: local policy merged with GPO).",
    {"Name": "[string]", "Enabled": "[string]", "DefaultInboundAction": "[string]",
     "AllowLocalFirewallRules": "[string]"})


def evaluate_default_inbound(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    # NotConfigured in the active store leaves Windows' default: block.
    problems = per_profile(facts, params, lambda p: ["inbound connections are allowed by default"]
                           if enum_name(p.get("DefaultInboundAction"), ACTIONS) == "Allow" else [])
    return verdict(problems, f"inbound connections are blocked by default on {', '.join(params['profiles'])}",
                   "firewall ")


# -- logging of dropped packets ------------------------------------------------------------

LOGGING = profile_fragment(
    "windows.firewall.logging", "Effective logging settings of each profile (ActiveStore).",
    {"Name": "[string]", "LogBlocked": "[string]", "LogAllowed": "[string]", "LogMaxSizeKilobytes": "[int]",
     "LogFileName": "[string]"})


def evaluate_logging(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    def judge(p: Mapping[str, Any]) -> list[str]:
        why = []
        if not as_bool(p.get("LogBlocked"), not_configured=False):
            why.append("dropped packets not logged")
        if params.get("log_allowed") and not as_bool(p.get("LogAllowed"), not_configured=False):
            why.append("successful connections not logged")
        size = as_int(p.get("LogMaxSizeKilobytes"), 4096)
        if size < int(params["min_size_kb"]):
            why.append(f"log limited to {size} KB (at least {params['min_size_kb']} KB)")
        return why

    return verdict(per_profile(facts, params, judge),
                   f"firewall logs dropped packets on {', '.join(params['profiles'])}", "firewall ")


# -- runbooks ------------------------------------------------------------------------------------

BLOCK_INBOUND = runbook_header("windows.firewall.block_inbound_by_default", 1, """\
Keeps the management path open: before inbound traffic is blocked by
default, an allow rule for WinRM (TCP 5985/5986, from the management
addresses) is created or re-enabled, and the runbook refuses to run where
local rules would not take effect.""") + """\
$names = @($P.profiles)
$active = @(Get-NetFirewallProfile -PolicyStore ActiveStore -Profile $names)
$ignored = @($active | Where-Object { [string]$_.AllowLocalFirewallRules -eq 'False' -or [string]$_.AllowInboundRules -eq 'False' } | ForEach-Object { [string]$_.Name })
if ($ignored.Count -gt 0) {
    throw ('refused: on profile(s) ' + ($ignored -join ', ') + ' a GPO makes Windows ignore local allow rules, so ' +
           'blocking inbound traffic here could cut off WinRM; set the default inbound action in that GPO instead')
}
$ports = @($P.winrm_ports | ForEach-Object { [string][int]$_ })
$remote = @($P.management_addresses | ForEach-Object { [string]$_ })
$rule = Get-NetFirewallRule -Name 'Osiris-Management-WinRM' -ErrorAction SilentlyContinue
if ($null -eq $rule) {
    [void](New-NetFirewallRule -Name 'Osiris-Management-WinRM' -DisplayName 'Osiris appliance management (WinRM)' -Direction Inbound -Action Allow -Protocol TCP -LocalPort $ports -RemoteAddress $remote -Profile Any -Enabled True)
    $rule_changed = $true
} else {
    Set-NetFirewallRule -Name 'Osiris-Management-WinRM' -Enabled True -Action Allow -Direction Inbound -Protocol TCP -LocalPort $ports -RemoteAddress $remote -Profile Any
    $rule_changed = $false
}
$changed = @(Get-NetFirewallProfile -Profile $names | Where-Object { [string]$_.DefaultInboundAction -ne 'Block' } | ForEach-Object { [string]$_.Name })
if ($changed.Count -gt 0) { Set-NetFirewallProfile -Profile $changed -DefaultInboundAction Block }
@{ profiles = $names; changed = $changed; management_rule_created = $rule_changed }
"""

ENABLE_LOGGING = runbook_header("windows.firewall.enable_logging", 1, """\
Logs dropped packets and grows (never shrinks) the log size limit.""") + """\
$names = @($P.profiles)
$size = [int]$P.min_size_kb
$changed = New-Object System.Collections.ArrayList
foreach ($p in @(Get-NetFirewallProfile -Profile $names)) {
    if ([string]$p.LogBlocked -ne 'True' -or [int]$p.LogMaxSizeKilobytes -lt $size) {
        $grow = [Math]::Max([int]$p.LogMaxSizeKilobytes, $size)
        Set-NetFirewallProfile -Profile ([string]$p.Name) -LogBlocked True -LogMaxSizeKilobytes $grow
        [void]$changed.Add([string]$p.Name)
    }
}
@{ profiles = $names; changed = @($changed) }
"""

_PROFILES_SCHEMA = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": list(PROFILES)}}

CHECKS = [
    check(
        "windows.firewall.default_inbound_block", "Windows Firewall blocks inbound connections by default",
        hipaa=("164.312(e)(1)", "164.308(a)(1)(ii)(B)"), cis="9.1.2, 9.2.2, 9.3.2", roles=ALL,
        severity=Severity.HIGH, interval=HOUR, script=DEFAULT_INBOUND, evaluate=evaluate_default_inbound,
        params={"profiles": list(PROFILES)}, timeout=20,
        reads="Get-NetFirewallProfile -PolicyStore ActiveStore: DefaultInboundAction per profile",
        description="An enabled profile that allows inbound connections by default protects nothing.",
    ),
    check(
        "windows.firewall.logging", "Windows Firewall logs dropped packets",
        hipaa=("164.312(b)", "164.308(a)(1)(ii)(D)"), cis="9.1.6, 9.1.7, 9.2.6, 9.2.7, 9.3.8, 9.3.9",
        severity=Severity.LOW, interval=6 * HOUR, script=LOGGING, evaluate=evaluate_logging,
        params={"profiles": list(PROFILES), "min_size_kb": 16384, "log_allowed": False}, timeout=20,
        reads="Get-NetFirewallProfile -PolicyStore ActiveStore: LogBlocked, LogAllowed, LogMaxSizeKilobytes",
    ),
]

RUNBOOKS = [
    runbook(
        "windows.firewall.block_inbound_by_default", "Block inbound connections by default, WinRM kept open",
        fixes=("windows.firewall.default_inbound_block",), risk=Risk.MEDIUM, script=BLOCK_INBOUND, timeout=60,
        params_schema=schema({
            "profiles": _PROFILES_SCHEMA,
            "management_addresses": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {
                "type": "string", "pattern": r"^(Any|LocalSubnet|[0-9A-Fa-f:.]+(/[0-9]{1,3})?)$"}},
            "winrm_ports": {"type": "array", "minItems": 1, "uniqueItems": True,
                            "items": {"type": "integer", "enum": list(WINRM_PORTS)}},
        }, ("profiles", "management_addresses", "winrm_ports")),
        description="Sets DefaultInboundAction = Block on the given profiles (local policy). Medium risk: "
                    "services that relied on the open default (file shares, line-of-business apps) need "
                    "their own allow rules.",
        management="first creates or re-enables the inbound allow rule 'Osiris-Management-WinRM' (TCP "
                   "5985/5986 from management_addresses, every profile), and refuses to run where a GPO makes "
                   "Windows ignore local rules (AllowLocalFirewallRules or AllowInboundRules false), where "
                   "that rule would not take effect.",
    ),
    runbook(
        "windows.firewall.enable_logging", "Log dropped packets in Windows Firewall",
        fixes=("windows.firewall.logging",), risk=Risk.LOW, script=ENABLE_LOGGING, timeout=60,
        params_schema=schema({"profiles": _PROFILES_SCHEMA,
                              "min_size_kb": {"type": "integer", "minimum": 4096, "maximum": 32767}},
                             ("profiles", "min_size_kb")),
        description="Sets LogBlocked = True and grows LogMaxSizeKilobytes to the minimum; changes only logging.",
    ),
]
