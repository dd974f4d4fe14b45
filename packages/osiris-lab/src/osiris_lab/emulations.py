"""Built-in emulations: the state and fragments of the ``windows`` plugin.

Each emulation returns exactly the facts its PowerShell fragment prints on
a real host (same keys, same types), reading the settings declared here,
and raises what the fragment would throw where the host lacks a feature
(no Defender, no BitLocker module). Runbook emulations change the state as
the real cmdlets change Windows, so a healed setting reads healthy again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .emulation import HostView, PSError, check, command_not_found, runbook
from .state import declare

# Windows' own set (what Set-NetFirewallProfile -Profile accepts), kept apart
# from the windows plugin's PROFILES on purpose: the lab is the emulated OS,
# so a profile name the plugins got wrong fails against it.
PROFILES = ("Domain", "Private", "Public")

for _p in PROFILES:
    declare(f"firewall.{_p.lower()}.enabled", True, False, f"Windows Firewall {_p} profile enabled")
    declare(f"firewall.{_p.lower()}.default_inbound", "Block", "Allow", f"{_p} profile default inbound action")

declare("defender.installed", True, False, "Microsoft Defender Antivirus present (Get-MpComputerStatus exists)")
declare("defender.antivirus_enabled", True, False, "Defender antivirus engine enabled")
declare("defender.realtime_enabled", True, False, "Defender real-time protection enabled")
declare("defender.signature_age_days", 0, 30, "Days since the antivirus signatures were updated")
declare("smb.server.smb1_enabled", False, True, "SMB 1.0 server protocol enabled (Get-SmbServerConfiguration)")
declare("policy.inactivity_timeout_secs", {"workstation": 900, "server": 900, "dc": 900}, None,
        "Interactive logon: machine inactivity limit (InactivityTimeoutSecs), None when not configured")
declare("bitlocker.installed", True, False, "BitLocker PowerShell module and feature present")
declare("bitlocker.os_volume.protection_status", "On", "Off", "BitLocker protection of the OS volume")
declare("bitlocker.os_volume.volume_status", "FullyEncrypted", "FullyDecrypted", "BitLocker conversion state")
declare("bitlocker.os_volume.encryption_percentage", 100.0, 0.0, "Percent of the OS volume encrypted")


def _profile_names(params: Mapping[str, Any]) -> list[str]:
    names = params.get("profiles") or list(PROFILES)
    for n in names:
        if n not in PROFILES:
            raise PSError(f"Cannot validate argument on parameter 'Profile'. The argument \"{n}\" does not belong "
                          f"to the set \"Domain,Private,Public\"",
                          "System.Management.Automation.ParameterBindingValidationException")
    return list(names)


@check("windows.firewall.profiles_enabled", 1)
def firewall_profiles(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    return {"profiles": [{"name": p, "enabled": host[f"firewall.{p.lower()}.enabled"],
                          "default_inbound": host[f"firewall.{p.lower()}.default_inbound"]} for p in PROFILES]}


@check("windows.defender.realtime_protection", 1, cost_ms=20)
def defender_status(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    if not host["defender.installed"]:
        raise command_not_found("Get-MpComputerStatus")
    return {"am_service_enabled": host["defender.antivirus_enabled"],
            "antivirus_enabled": host["defender.antivirus_enabled"],
            "realtime_enabled": host["defender.realtime_enabled"],
            "signature_age_days": host["defender.signature_age_days"]}


@check("windows.smb.v1_disabled", 1)
def smb1(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    return {"smb1_server_enabled": host["smb.server.smb1_enabled"]}


@check("windows.session.inactivity_lock", 1)
def inactivity(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    return {"inactivity_timeout_secs": host["policy.inactivity_timeout_secs"]}


@check("windows.bitlocker.os_volume_encrypted", 1, cost_ms=30)
def bitlocker(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    if not host["bitlocker.installed"]:
        raise command_not_found("Get-BitLockerVolume")
    return {"mount_point": "C:", "protection_status": host["bitlocker.os_volume.protection_status"],
            "volume_status": host["bitlocker.os_volume.volume_status"],
            "encryption_percentage": host["bitlocker.os_volume.encryption_percentage"],
            "encryption_method": "XtsAes256"}


@runbook("windows.firewall.enable_profiles", 1)
def enable_profiles(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    names = _profile_names(params)
    changed = [n for n in names if not host[f"firewall.{n.lower()}.enabled"]]
    for n in names:
        host.state.set(f"firewall.{n.lower()}.enabled", True)
    return {"profiles": names, "changed": changed}


@runbook("windows.smb.disable_v1", 1)
def disable_smb1(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    was = host["smb.server.smb1_enabled"]
    host.state.set("smb.server.smb1_enabled", False)
    return {"changed": bool(was)}
