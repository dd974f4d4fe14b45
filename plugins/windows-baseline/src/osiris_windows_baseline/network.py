"""Network protocols: SMB signing and the SMB 1.0 client, NetBIOS over
TCP/IP, and the DNS servers a host asks (a hijacked resolver sends ePHI
traffic wherever it likes).

(The windows plugin's ``windows.smb.v1_disabled`` checks the SMB 1.0
*server*; LLMNR, NTLM and SCHANNEL are registry settings in
:mod:`.policies`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import Risk, Severity, Verdict

from .common import ALL, DAY, HOUR, check, failed, passed, runbook, schema
from .facts import FactError, as_bool, as_int, ip_allowed, listify, require
from .ps import check_header, runbook_header

# -- SMB signing ----------------------------------------------------------------------------------

SERVER_SIGNING = check_header("windows.smb.server_signing", 1) + """\
$c = Get-SmbServerConfiguration
[ordered]@{
    RequireSecuritySignature = [bool]$c.RequireSecuritySignature
    EnableSecuritySignature = [bool]$c.EnableSecuritySignature
    EncryptData = [bool]$c.EncryptData
    RejectUnencryptedAccess = [bool]$c.RejectUnencryptedAccess
}
"""

CLIENT_SIGNING = check_header("windows.smb.client_signing", 1) + """\
$c = Get-SmbClientConfiguration
[ordered]@{
    RequireSecuritySignature = [bool]$c.RequireSecuritySignature
    EnableSecuritySignature = [bool]$c.EnableSecuritySignature
}
"""


def evaluate_server_signing(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    require(facts, "RequireSecuritySignature")
    if as_bool(facts["RequireSecuritySignature"]):
        return passed("the SMB server requires signing")
    if as_bool(facts.get("EncryptData"), not_configured=False) and as_bool(facts.get("RejectUnencryptedAccess"),
                                                                          not_configured=False):
        return passed("the SMB server requires encryption (which protects integrity too)")
    return failed("the SMB server does not require signing: sessions can be relayed and tampered with")


def evaluate_client_signing(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    require(facts, "RequireSecuritySignature")
    if as_bool(facts["RequireSecuritySignature"]):
        return passed("the SMB client requires signing")
    return failed("the SMB client does not require signing")


REQUIRE_SERVER_SIGNING = runbook_header("windows.smb.require_server_signing", 1) + """\
$was = [bool](Get-SmbServerConfiguration).RequireSecuritySignature
if (-not $was) { Set-SmbServerConfiguration -RequireSecuritySignature $true -EnableSecuritySignature $true -Force -Confirm:$false }
@{ changed = (-not $was) }
"""

REQUIRE_CLIENT_SIGNING = runbook_header("windows.smb.require_client_signing", 1) + """\
$was = [bool](Get-SmbClientConfiguration).RequireSecuritySignature
if (-not $was) { Set-SmbClientConfiguration -RequireSecuritySignature $true -EnableSecuritySignature $true -Force -Confirm:$false }
@{ changed = (-not $was) }
"""

# -- SMB 1.0 client -------------------------------------------------------------------------------

SMB1_CLIENT = check_header("windows.smb.v1_client_disabled", 1, """\
The SMB 1.0 client driver (mrxsmb10) and, where DISM knows it, the
SMB1Protocol-Client optional feature (Windows 10 1709+, Server 2019+).""") + """\
$k = Get-Item -LiteralPath 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\mrxsmb10' -ErrorAction SilentlyContinue
$start = $null
if ($null -ne $k) { $start = $k.GetValue('Start', $null) }
$feature = $null
$feature_error = $null
if ($null -ne (Get-Command -Name Get-WindowsOptionalFeature -ErrorAction SilentlyContinue)) {
    try {
        $f = Get-WindowsOptionalFeature -Online -FeatureName SMB1Protocol-Client -ErrorAction Stop
        if ($null -ne $f) { $feature = [string]$f.State }
    } catch {
        $feature_error = $_.Exception.Message
    }
}
[ordered]@{ driver_present = ($null -ne $k); driver_start = $start; feature_state = $feature; feature_error = $feature_error }
"""
_STARTS = {0: "boot", 1: "system", 2: "automatic", 3: "manual", 4: "disabled"}


def evaluate_smb1_client(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    require(facts, "driver_present")
    feature = facts.get("feature_state")
    if feature in ("Disabled", "DisabledWithPayloadRemoved"):
        return passed(f"the SMB 1.0 client feature is {feature}")
    if not as_bool(facts["driver_present"]):
        return passed("the SMB 1.0 client driver is not installed")
    start = as_int(facts.get("driver_start"))
    if start == 4:
        return passed("the SMB 1.0 client driver is disabled")
    return failed(f"the SMB 1.0 client driver starts {_STARTS.get(start, start)}"
                  + (f" (feature {feature})" if feature else ""))


DISABLE_SMB1_CLIENT = runbook_header("windows.smb.disable_v1_client", 1, """\
Disables the SMB 1.0 client driver and removes it from the Workstation
service's dependencies (as Microsoft documents with sc.exe), by registry.
The driver unloads at the next restart.""") + """\
$drv = 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\mrxsmb10'
$ws = 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\LanmanWorkstation'
$changed = New-Object System.Collections.ArrayList
if (Test-Path -LiteralPath $drv) {
    if ((Get-Item -LiteralPath $drv).GetValue('Start', $null) -ne 4) {
        Set-ItemProperty -LiteralPath $drv -Name Start -Value 4 -Type DWord
        [void]$changed.Add('mrxsmb10 Start')
    }
    $deps = @((Get-Item -LiteralPath $ws).GetValue('DependOnService', @()))
    $keep = @($deps | Where-Object { $_ -ne 'MRxSmb10' })
    if ($keep.Count -ne $deps.Count) {
        Set-ItemProperty -LiteralPath $ws -Name DependOnService -Value ([string[]]$keep) -Type MultiString
        [void]$changed.Add('LanmanWorkstation DependOnService')
    }
}
@{ changed = @($changed) }
"""

# -- NetBIOS over TCP/IP --------------------------------------------------------------------------

NETBIOS = check_header("windows.network.netbios_disabled", 1, """\
TcpipNetbiosOptions of each IP-enabled adapter: 0 default (DHCP decides,
on unless DHCP says otherwise), 1 enabled, 2 disabled.""") + """\
$adapters = @(Get-CimInstance -ClassName Win32_NetworkAdapterConfiguration -Filter 'IPEnabled = True' | ForEach-Object {
    [ordered]@{ Description = [string]$_.Description; SettingID = [string]$_.SettingID; TcpipNetbiosOptions = [int]$_.TcpipNetbiosOptions }
})
@{ adapters = $adapters }
"""
_NETBIOS = {0: "on (DHCP default)", 1: "on", 2: "off"}


def evaluate_netbios(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    adapters = listify(facts.get("adapters"))
    bad = [f"{a.get('Description')}: {_NETBIOS.get(as_int(a.get('TcpipNetbiosOptions')), '?')}"
           for a in adapters if as_int(a.get("TcpipNetbiosOptions")) != 2]
    if bad:
        return failed("NetBIOS over TCP/IP answers name queries on " + "; ".join(bad))
    return passed(f"NetBIOS over TCP/IP is off on {len(adapters)} adapter(s)")


DISABLE_NETBIOS = runbook_header("windows.network.disable_netbios", 1) + """\
$changed = New-Object System.Collections.ArrayList
foreach ($a in @(Get-CimInstance -ClassName Win32_NetworkAdapterConfiguration -Filter 'IPEnabled = True')) {
    if ([int]$a.TcpipNetbiosOptions -ne 2) {
        $r = Invoke-CimMethod -InputObject $a -MethodName SetTcpipNetbios -Arguments @{ TcpipNetbiosOptions = [uint32]2 }
        # 0: done; 1: done, restart required
        if ([int]$r.ReturnValue -gt 1) { throw ('SetTcpipNetbios failed on ' + $a.Description + ': ' + $r.ReturnValue) }
        [void]$changed.Add([string]$a.Description)
    }
}
@{ changed = @($changed) }
"""

# -- DNS servers --------------------------------------------------------------------------------

DNS = check_header("windows.dns.servers_allowlist", 1, """\
DNS servers of every interface that has any (AddressFamily 2: IPv4,
23: IPv6).""") + """\
$rows = @(Get-DnsClientServerAddress | Where-Object { @($_.ServerAddresses).Count -gt 0 } | ForEach-Object {
    [ordered]@{
        InterfaceAlias = [string]$_.InterfaceAlias
        InterfaceIndex = [int]$_.InterfaceIndex
        AddressFamily = [int]$_.AddressFamily
        ServerAddresses = @($_.ServerAddresses | ForEach-Object { [string]$_ })
    }
})
@{ interfaces = $rows }
"""

PRIVATE_NETWORKS = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "::1/128", "fc00::/7",
                    "fe80::/10", "fec0::/10"]


def evaluate_dns(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    if "interfaces" not in facts:
        raise FactError("facts lack 'interfaces'")
    allowed = list(params["allowed"])
    bad, n = [], 0
    for i in listify(facts["interfaces"]):
        for addr in listify(i.get("ServerAddresses")):
            n += 1
            if not ip_allowed(str(addr), allowed):
                bad.append(f"{addr} on {i.get('InterfaceAlias')}")
    if bad:
        return failed("DNS servers outside the allowlist: " + ", ".join(bad))
    return passed(f"all {n} configured DNS servers are allowlisted")


SET_DNS = runbook_header("windows.dns.set_servers", 1, """\
Sets the given IPv4 DNS servers on every interface whose IPv4 servers
differ from them (interfaces without configured servers are left alone).""") + """\
$want = @($P.servers | ForEach-Object { [string]$_ })
$changed = New-Object System.Collections.ArrayList
foreach ($i in @(Get-DnsClientServerAddress -AddressFamily IPv4 | Where-Object { @($_.ServerAddresses).Count -gt 0 })) {
    if ((@($i.ServerAddresses) -join ',') -ne ($want -join ',')) {
        Set-DnsClientServerAddress -InterfaceIndex $i.InterfaceIndex -ServerAddresses $want
        [void]$changed.Add([string]$i.InterfaceAlias)
    }
}
@{ changed = @($changed); servers = $want }
"""

_NOT_WINRM = "the appliance's WinRM traffic does not use SMB, NetBIOS or the host's resolver"

CHECKS = [
    check(
        "windows.smb.server_signing", "The SMB server requires signing",
        hipaa=("164.312(e)(2)(i)", "164.312(c)(1)"), cis="2.3.9.2", roles=ALL, severity=Severity.HIGH,
        script=SERVER_SIGNING, evaluate=evaluate_server_signing, timeout=20,
        reads="Get-SmbServerConfiguration: RequireSecuritySignature, EncryptData, RejectUnencryptedAccess",
        description="Unsigned SMB sessions can be relayed (NTLM relay) and their data altered in transit.",
    ),
    check(
        "windows.smb.client_signing", "The SMB client requires signing",
        hipaa=("164.312(e)(2)(i)", "164.312(c)(1)"), cis="2.3.8.1", roles=ALL, severity=Severity.MEDIUM,
        script=CLIENT_SIGNING, evaluate=evaluate_client_signing, timeout=20,
        reads="Get-SmbClientConfiguration: RequireSecuritySignature",
    ),
    check(
        "windows.smb.v1_client_disabled", "The SMB 1.0 client is disabled",
        hipaa=("164.312(e)(1)", "164.308(a)(1)(ii)(B)"), cis="18.4.2", roles=ALL, severity=Severity.HIGH,
        interval=DAY / 2, script=SMB1_CLIENT, evaluate=evaluate_smb1_client, timeout=60,
        reads="registry HKLM\\SYSTEM\\CurrentControlSet\\Services\\mrxsmb10 Start; "
              "Get-WindowsOptionalFeature -Online -FeatureName SMB1Protocol-Client where available",
    ),
    check(
        "windows.network.netbios_disabled", "NetBIOS over TCP/IP is disabled",
        hipaa=("164.312(e)(1)", "164.308(a)(1)(ii)(B)"), cis="18.6.4.2", roles=ALL, severity=Severity.MEDIUM,
        script=NETBIOS, evaluate=evaluate_netbios, timeout=30,
        reads="Win32_NetworkAdapterConfiguration (IPEnabled): TcpipNetbiosOptions",
        description="NBT-NS answers, like LLMNR's, let a machine on the LAN capture NTLM hashes.",
    ),
    check(
        "windows.dns.servers_allowlist", "DNS servers are on the allowlist",
        hipaa=("164.312(e)(1)", "164.308(a)(1)(ii)(B)", "164.312(c)(1)"), roles=ALL, severity=Severity.HIGH,
        interval=HOUR, script=DNS, evaluate=evaluate_dns, params={"allowed": PRIVATE_NETWORKS}, timeout=20,
        reads="Get-DnsClientServerAddress: servers per interface and address family",
        description="By default any private address passes; set the site's DNS servers (the domain "
                    "controllers) as the allowlist to catch a rogue internal resolver too.",
    ),
]

_IPV4 = r"^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}$"

RUNBOOKS = [
    runbook(
        "windows.smb.require_server_signing", "Require SMB signing on the server",
        fixes=("windows.smb.server_signing",), risk=Risk.MEDIUM, script=REQUIRE_SERVER_SIGNING, timeout=60,
        description="Set-SmbServerConfiguration -RequireSecuritySignature $true. Medium risk: old scanners and "
                    "NAS devices that cannot sign stop reaching shares.",
        management=_NOT_WINRM + ".",
    ),
    runbook(
        "windows.smb.require_client_signing", "Require SMB signing on the client",
        fixes=("windows.smb.client_signing",), risk=Risk.MEDIUM, script=REQUIRE_CLIENT_SIGNING, timeout=60,
        description="Set-SmbClientConfiguration -RequireSecuritySignature $true. Medium risk: shares on devices "
                    "that cannot sign become unreachable from this host.",
        management=_NOT_WINRM + ".",
    ),
    runbook(
        "windows.smb.disable_v1_client", "Disable the SMB 1.0 client driver",
        fixes=("windows.smb.v1_client_disabled",), risk=Risk.MEDIUM, script=DISABLE_SMB1_CLIENT, timeout=60,
        description="mrxsmb10 Start = 4 and MRxSmb10 removed from LanmanWorkstation's DependOnService; effective "
                    "after a restart. Medium risk: NAS devices and copiers that only speak SMB 1.0 become "
                    "unreachable from this host.",
        management=_NOT_WINRM + ".",
    ),
    runbook(
        "windows.network.disable_netbios", "Disable NetBIOS over TCP/IP",
        fixes=("windows.network.netbios_disabled",), risk=Risk.MEDIUM, script=DISABLE_NETBIOS, timeout=60,
        description="Win32_NetworkAdapterConfiguration.SetTcpipNetbios(2) on each IP-enabled adapter. Medium "
                    "risk: legacy software that finds machines by NetBIOS name (browsing, old line-of-business "
                    "apps) stops finding them.",
        management=_NOT_WINRM + "; targets are addressed by DNS name or IP address, never by NetBIOS name.",
    ),
    runbook(
        "windows.dns.set_servers", "Point the host's IPv4 DNS at the given servers",
        fixes=("windows.dns.servers_allowlist",), risk=Risk.MEDIUM, script=SET_DNS, timeout=60,
        params_schema=schema({"servers": {"type": "array", "minItems": 1, "maxItems": 4, "uniqueItems": True,
                                          "items": {"type": "string", "pattern": _IPV4}}}, ("servers",)),
        description="Set-DnsClientServerAddress on each interface whose IPv4 servers differ. Medium risk: wrong "
                    "servers break name resolution for the host (the site names them; no default rule). IPv6 "
                    "resolvers are left to escalation.",
        management=_NOT_WINRM + ": the appliance connects to the host's address inbound.",
    ),
]

