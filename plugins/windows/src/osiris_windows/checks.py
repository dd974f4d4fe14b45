"""The windows plugin's own checks and runbooks: a few core controls that
prove the path end to end (the broad baseline is another plugin's job).

Each fragment is Windows PowerShell 5.1, starts with its versioned marker,
takes ``param($P)`` (its params, as decoded JSON) and returns one hashtable
of facts. Evaluators are pure functions of (facts, params) so a verdict can
be recomputed from evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import CheckSpec, Risk, RunbookSpec, Severity, Status, Verdict

KIND = "windows"
#: The Windows Firewall profiles, as Get-NetFirewallProfile names them (the
#: one definition: windows-baseline's firewall checks and its lab use it).
PROFILES = ("Domain", "Private", "Public")

FIREWALL = r"""
# osiris-check: windows.firewall.profiles_enabled/v1
param($P)
# ActiveStore: the effective settings, whether from local policy or GPO.
$profiles = @(Get-NetFirewallProfile -PolicyStore ActiveStore | ForEach-Object {
    @{ name = [string]$_.Name; enabled = ([string]$_.Enabled -eq 'True'); default_inbound = [string]$_.DefaultInboundAction }
})
@{ profiles = $profiles }
"""

DEFENDER = r"""
# osiris-check: windows.defender.realtime_protection/v1
param($P)
$s = Get-MpComputerStatus
@{
    am_service_enabled = [bool]$s.AMServiceEnabled
    antivirus_enabled = [bool]$s.AntivirusEnabled
    realtime_enabled = [bool]$s.RealTimeProtectionEnabled
    signature_age_days = [int]$s.AntivirusSignatureAge
}
"""

SMB1 = r"""
# osiris-check: windows.smb.v1_disabled/v1
param($P)
$c = Get-SmbServerConfiguration
@{ smb1_server_enabled = [bool]$c.EnableSMB1Protocol }
"""

INACTIVITY = r"""
# osiris-check: windows.session.inactivity_lock/v1
param($P)
# "Interactive logon: Machine inactivity limit" (local or domain policy).
$key = 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System'
$v = (Get-ItemProperty -Path $key -Name InactivityTimeoutSecs -ErrorAction SilentlyContinue).InactivityTimeoutSecs
@{ inactivity_timeout_secs = $(if ($null -eq $v) { $null } else { [int]$v }) }
"""

BITLOCKER = r"""
# osiris-check: windows.bitlocker.os_volume_encrypted/v1
param($P)
$v = Get-BitLockerVolume -MountPoint $env:SystemDrive
@{
    mount_point = [string]$v.MountPoint
    protection_status = [string]$v.ProtectionStatus
    volume_status = [string]$v.VolumeStatus
    encryption_percentage = [double]$v.EncryptionPercentage
    encryption_method = [string]$v.EncryptionMethod
}
"""

ENABLE_FIREWALL = r"""
# osiris-runbook: windows.firewall.enable_profiles/v1
param($P)
$names = @($P.profiles)
$before = @(Get-NetFirewallProfile -Name $names -PolicyStore ActiveStore | Where-Object { [string]$_.Enabled -ne 'True' } | ForEach-Object { [string]$_.Name })
Set-NetFirewallProfile -Profile $names -Enabled True
@{ profiles = $names; changed = $before }
"""

DISABLE_SMB1 = r"""
# osiris-runbook: windows.smb.disable_v1/v1
param($P)
$was = [bool](Get-SmbServerConfiguration).EnableSMB1Protocol
Set-SmbServerConfiguration -EnableSMB1Protocol $false -Force -Confirm:$false
@{ changed = $was }
"""


def evaluate_firewall(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    seen = {p["name"]: p for p in facts["profiles"]}
    missing = [n for n in params["profiles"] if n not in seen]
    off = [n for n in params["profiles"] if n in seen and not seen[n]["enabled"]]
    if missing or off:
        parts = ([f"disabled: {', '.join(off)}"] if off else []) + ([f"not reported: {', '.join(missing)}"] if missing else [])
        return Verdict(Status.FAIL, "firewall profiles " + "; ".join(parts))
    return Verdict(Status.PASS, f"firewall enabled on {', '.join(params['profiles'])}")


def evaluate_defender(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    problems = []
    if not facts["antivirus_enabled"]:
        problems.append("antivirus disabled")
    if not facts["realtime_enabled"]:
        problems.append("real-time protection off")
    age = facts["signature_age_days"]
    if age > params["max_signature_age_days"]:
        problems.append(f"signatures {age} days old (limit {params['max_signature_age_days']})")
    if problems:
        return Verdict(Status.FAIL, "Defender: " + ", ".join(problems))
    return Verdict(Status.PASS, f"Defender real-time protection on, signatures {age} days old")


def evaluate_smb1(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    if facts["smb1_server_enabled"]:
        return Verdict(Status.FAIL, "SMB 1.0 server protocol is enabled")
    return Verdict(Status.PASS, "SMB 1.0 server protocol is disabled")


def evaluate_inactivity(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    secs = facts["inactivity_timeout_secs"]
    limit = params["max_seconds"]
    if secs is None or secs == 0:
        return Verdict(Status.FAIL, "no machine inactivity limit is configured")
    if secs > limit:
        return Verdict(Status.FAIL, f"inactivity limit {secs} s exceeds {limit} s")
    return Verdict(Status.PASS, f"session locks after {secs} s of inactivity")


def evaluate_bitlocker(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    where = facts.get("mount_point") or "OS volume"
    if facts["protection_status"] != "On":
        return Verdict(Status.FAIL, f"BitLocker protection is {facts['protection_status']} on {where} "
                                    f"({facts['volume_status']}, {facts['encryption_percentage']:g}%)")
    if facts["volume_status"] != "FullyEncrypted":
        return Verdict(Status.FAIL, f"{where} is {facts['volume_status']} ({facts['encryption_percentage']:g}%)")
    return Verdict(Status.PASS, f"{where} fully encrypted ({facts['encryption_method']}), protection on")


def checks() -> list[CheckSpec]:
    return [
        CheckSpec(
            id="windows.firewall.profiles_enabled",
            title="Windows Firewall is enabled on every profile",
            target_kind=KIND,
            hipaa=("164.312(e)(1)", "164.308(a)(1)(ii)(B)"),
            severity=Severity.HIGH,
            script=FIREWALL,
            evaluate=evaluate_firewall,
            params={"profiles": list(PROFILES)},
            timeout=20,
            cis="9.1.1, 9.2.1, 9.3.1",
            description="A host firewall limits what can reach ePHI systems over the network.",
        ),
        CheckSpec(
            id="windows.defender.realtime_protection",
            title="Microsoft Defender real-time protection is on with current signatures",
            target_kind=KIND,
            hipaa=("164.308(a)(5)(ii)(B)",),
            severity=Severity.HIGH,
            script=DEFENDER,
            evaluate=evaluate_defender,
            params={"max_signature_age_days": 7},
            timeout=30,
            description="Protection from malicious software: the engine on, real-time scanning on, signatures fresh.",
        ),
        CheckSpec(
            id="windows.smb.v1_disabled",
            title="SMB 1.0 server protocol is disabled",
            target_kind=KIND,
            hipaa=("164.312(e)(1)", "164.308(a)(1)(ii)(B)"),
            severity=Severity.HIGH,
            script=SMB1,
            evaluate=evaluate_smb1,
            timeout=20,
            cis="18.3.3",
            description="SMBv1 has no encryption and carried WannaCry; file shares of ePHI must not speak it.",
        ),
        CheckSpec(
            id="windows.session.inactivity_lock",
            title="Sessions lock after a period of inactivity",
            target_kind=KIND,
            roles=frozenset({"workstation"}),
            hipaa=("164.312(a)(2)(iii)",),
            severity=Severity.MEDIUM,
            script=INACTIVITY,
            evaluate=evaluate_inactivity,
            params={"max_seconds": 900},
            timeout=15,
            cis="2.3.7.3",
            description="Automatic logoff: an unattended workstation must lock (15 minutes at most by default).",
        ),
        CheckSpec(
            id="windows.bitlocker.os_volume_encrypted",
            title="The OS volume is encrypted with BitLocker",
            target_kind=KIND,
            roles=frozenset({"workstation", "server"}),
            hipaa=("164.312(a)(2)(iv)", "164.310(d)(1)"),
            severity=Severity.CRITICAL,
            script=BITLOCKER,
            evaluate=evaluate_bitlocker,
            timeout=30,
            description="Encryption of ePHI at rest protects it when a disk or laptop leaves the practice.",
        ),
    ]


def runbooks() -> list[RunbookSpec]:
    return [
        RunbookSpec(
            id="windows.firewall.enable_profiles",
            title="Enable Windows Firewall on the given profiles",
            target_kind=KIND,
            fixes=("windows.firewall.profiles_enabled",),
            risk=Risk.LOW,
            script=ENABLE_FIREWALL,
            params_schema={
                "type": "object",
                "properties": {"profiles": {"type": "array", "minItems": 1, "uniqueItems": True,
                                            "items": {"enum": list(PROFILES)}}},
                "required": ["profiles"],
                "additionalProperties": False,
            },
            timeout=60,
        ),
        RunbookSpec(
            id="windows.smb.disable_v1",
            title="Disable the SMB 1.0 server protocol",
            target_kind=KIND,
            fixes=("windows.smb.v1_disabled",),
            risk=Risk.MEDIUM,
            script=DISABLE_SMB1,
            timeout=60,
            description="Old scanners and NAS devices may still need SMBv1: medium risk.",
        ),
    ]
