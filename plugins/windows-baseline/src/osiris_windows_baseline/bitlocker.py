"""BitLocker on fixed data volumes: the disks where practice software keeps
its databases and scanned documents (the EHR's D: drive), not only the OS.

(The windows plugin's ``windows.bitlocker.os_volume_encrypted`` checks the
OS volume.)

The fragment uses ``Get-BitLockerVolume`` where the BitLocker module exists
and otherwise the WMI provider ``Win32_EncryptableVolume`` (namespace
``root\\cimv2\\Security\\MicrosoftVolumeEncryption``), which servers have
once the BitLocker feature is installed even without the PowerShell
module. Where neither exists BitLocker is not installed, which fails the
check only if the host has fixed data volumes to protect.

No runbook: turning BitLocker on needs a protector plan (TPM, recovery key
escrowed in AD or elsewhere) and hours of conversion; it is a project, not
a heal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import Severity, Verdict

from .common import ALL, HOUR, check, failed, passed
from .facts import as_int, enum_name, listify, require
from .ps import check_header

# Win32_EncryptableVolume.ConversionStatus and ProtectionStatus; the module's
# VolumeStatus / ProtectionStatus names.
CONVERSION = {0: "FullyDecrypted", 1: "FullyEncrypted", 2: "EncryptionInProgress", 3: "DecryptionInProgress",
              4: "EncryptionPaused", 5: "DecryptionPaused"}
PROTECTION = {0: "Off", 1: "On", 2: "Unknown"}

DATA_VOLUMES = check_header("windows.bitlocker.data_volumes_encrypted", 1, """\
Fixed data volumes (not the OS volume, not removable ones).""") + """\
$vols = @()
$source = 'module'
if ($null -ne (Get-Command -Name Get-BitLockerVolume -ErrorAction SilentlyContinue)) {
    $vols = @(Get-BitLockerVolume | Where-Object { [string]$_.VolumeType -eq 'FixedData' } | ForEach-Object {
        [ordered]@{ MountPoint = [string]$_.MountPoint; ProtectionStatus = [string]$_.ProtectionStatus
                    VolumeStatus = [string]$_.VolumeStatus; EncryptionPercentage = [double]$_.EncryptionPercentage }
    })
} else {
    $source = 'wmi'
    try {
        # VolumeType 1: fixed data (Windows 8 / Server 2012 and later)
        $vols = @(Get-CimInstance -Namespace 'root\\cimv2\\Security\\MicrosoftVolumeEncryption' -ClassName Win32_EncryptableVolume -ErrorAction Stop |
            Where-Object { $_.VolumeType -eq 1 } | ForEach-Object {
                [ordered]@{ MountPoint = [string]$_.DriveLetter; ProtectionStatus = [int]$_.ProtectionStatus
                            ConversionStatus = [int]$_.ConversionStatus }
            })
    } catch {
        $source = 'none'
    }
}
if ($source -eq 'none') {
    # No BitLocker: list the fixed data volumes that would need it.
    $sys = $env:SystemDrive
    $vols = @(Get-CimInstance -ClassName Win32_LogicalDisk -Filter 'DriveType = 3' | Where-Object { $_.DeviceID -ne $sys } | ForEach-Object {
        [ordered]@{ MountPoint = [string]$_.DeviceID; ProtectionStatus = 'Off'; VolumeStatus = 'FullyDecrypted' }
    })
}
@{ source = $source; volumes = $vols }
"""


def _state(volume: Mapping[str, Any]) -> tuple[str, str]:
    protection = enum_name(volume.get("ProtectionStatus"), PROTECTION)
    status = volume.get("VolumeStatus", volume.get("ConversionStatus"))
    return protection, enum_name(status, CONVERSION) if status is not None else "Unknown"


def evaluate_data_volumes(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    require(facts, "source", "volumes")
    volumes = listify(facts["volumes"])
    if not volumes:
        return passed("no fixed data volumes")
    bad = []
    for v in volumes:
        protection, status = _state(v)
        if protection != "On" or status != "FullyEncrypted":
            pct = v.get("EncryptionPercentage")
            extra = f", {as_int(pct) if isinstance(pct, (int, float)) else pct}%" if pct is not None else ""
            bad.append(f"{v.get('MountPoint') or '?'} (protection {protection}, {status}{extra})")
    if bad:
        prefix = "BitLocker is not installed; " if facts["source"] == "none" else ""
        return failed(f"{prefix}unencrypted fixed data volumes: {', '.join(bad)}")
    return passed(f"fixed data volumes encrypted: {', '.join(str(v.get('MountPoint')) for v in volumes)}")


CHECKS = [
    check(
        "windows.bitlocker.data_volumes_encrypted", "Fixed data volumes are encrypted with BitLocker",
        hipaa=("164.312(a)(2)(iv)", "164.310(d)(1)"), cis="18.10.9.1", roles=ALL, severity=Severity.HIGH,
        interval=6 * HOUR, script=DATA_VOLUMES, evaluate=evaluate_data_volumes, timeout=60,
        reads="Get-BitLockerVolume (VolumeType FixedData), else Win32_EncryptableVolume (VolumeType 1), else "
              "Win32_LogicalDisk fixed disks other than the system drive",
        description="Encryption at rest for the disks that hold practice data. No runbook: enabling BitLocker "
                    "needs a protector and recovery-key plan and hours of conversion.",
    ),
]

RUNBOOKS: list = []

