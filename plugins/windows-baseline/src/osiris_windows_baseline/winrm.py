"""WinRM itself, the appliance's own path into the host: no unencrypted
traffic, no Basic authentication on the service, a hardened client.

Fragments read the WSMan: drive (``Get-Item WSMan:\\localhost\\Service\\...``),
which reports the effective value and, when a GPO sets it,
``SourceOfValue`` = ``GPO``. The values are strings ("true"/"false").

Basic authentication on the service has no runbook: the windows executor
uses HTTPS with Basic for local accounts by default, so turning Basic off
could cut the appliance off. Switch the appliance to ``auth: ntlm`` (or
``transport: ntlm``) first, then disable Basic by GPO.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import Risk, Severity, Verdict

from .common import ALL, DAY, check, failed, passed, runbook, verdict
from .facts import FactError, as_bool
from .ps import check_header, lit, runbook_header

_READ = """\
$out = [ordered]@{{}}
foreach ($path in @({paths})) {{
    $i = Get-Item -Path ('WSMan:\\localhost\\' + $path)
    $out[$path] = [ordered]@{{ Value = [string]$i.Value; Source = [string]$i.SourceOfValue }}
}}
@{{ wsman = $out }}
"""


def _fragment(check_id: str, paths: tuple[str, ...], version: int = 1) -> str:
    return check_header(check_id, version, "WinRM configuration through the WSMan: drive.") + _READ.format(
        paths=", ".join(lit(p) for p in paths))


def _value(facts: Mapping[str, Any], path: str) -> tuple[bool, str]:
    wsman = facts.get("wsman")
    if not isinstance(wsman, Mapping) or path not in wsman:
        raise FactError(f"facts lack wsman.{path}")
    item = wsman[path]
    value = as_bool(item.get("Value") if isinstance(item, Mapping) else item)
    if value is None:
        raise FactError(f"wsman.{path}: expected true or false")
    source = item.get("Source") if isinstance(item, Mapping) else ""
    return value, (" (set by GPO)" if source == "GPO" else "")


SVC_UNENCRYPTED = "Service\\AllowUnencrypted"
SVC_BASIC = "Service\\Auth\\Basic"
CLIENT_UNENCRYPTED = "Client\\AllowUnencrypted"
CLIENT_BASIC = "Client\\Auth\\Basic"


def evaluate_unencrypted(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    on, gpo = _value(facts, SVC_UNENCRYPTED)
    if on:
        return failed(f"the WinRM service accepts unencrypted traffic{gpo}")
    return passed("the WinRM service refuses unencrypted traffic")


def evaluate_basic(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    on, gpo = _value(facts, SVC_BASIC)
    if on:
        return failed(f"the WinRM service accepts Basic authentication{gpo} (a password on every request)")
    return passed("the WinRM service refuses Basic authentication")


def evaluate_client(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    problems = []
    unenc, g1 = _value(facts, CLIENT_UNENCRYPTED)
    basic, g2 = _value(facts, CLIENT_BASIC)
    if unenc:
        problems.append(f"sends unencrypted traffic{g1}")
    if basic:
        problems.append(f"uses Basic authentication{g2}")
    return verdict(problems, "the WinRM client uses neither unencrypted traffic nor Basic", "the WinRM client ")


DISALLOW_UNENCRYPTED = runbook_header("windows.winrm.disallow_unencrypted", 1, """\
Sets the service's AllowUnencrypted to false. Listeners are not touched and
the service is not restarted.""") + """\
$i = Get-Item -Path 'WSMan:\\localhost\\Service\\AllowUnencrypted'
$was = [string]$i.Value -eq 'true'
if ($was) { Set-Item -Path 'WSMan:\\localhost\\Service\\AllowUnencrypted' -Value $false -Force }
@{ changed = $was }
"""

HARDEN_CLIENT = runbook_header("windows.winrm.harden_client", 1) + """\
$changed = New-Object System.Collections.ArrayList
foreach ($path in @('Client\\AllowUnencrypted', 'Client\\Auth\\Basic')) {
    $full = 'WSMan:\\localhost\\' + $path
    if ([string](Get-Item -Path $full).Value -eq 'true') {
        Set-Item -Path $full -Value $false -Force
        [void]$changed.Add($path)
    }
}
@{ changed = @($changed) }
"""

CHECKS = [
    check(
        "windows.winrm.service_encrypted", "The WinRM service refuses unencrypted traffic",
        hipaa=("164.312(e)(2)(ii)", "164.312(e)(1)"), cis="18.10.90.2.3", roles=ALL, severity=Severity.HIGH,
        interval=DAY / 4, script=_fragment("windows.winrm.service_encrypted", (SVC_UNENCRYPTED,)),
        evaluate=evaluate_unencrypted, timeout=20, reads="WSMan:\\localhost\\Service\\AllowUnencrypted",
    ),
    check(
        "windows.winrm.service_no_basic", "The WinRM service refuses Basic authentication",
        hipaa=("164.312(d)", "164.312(e)(1)"), cis="18.10.90.2.1", roles=ALL, severity=Severity.MEDIUM,
        interval=DAY / 4, script=_fragment("windows.winrm.service_no_basic", (SVC_BASIC,)), evaluate=evaluate_basic,
        timeout=20, reads="WSMan:\\localhost\\Service\\Auth\\Basic",
        description="No runbook: the appliance itself may use Basic over HTTPS (the windows executor's default "
                    "for local accounts); move it to NTLM or Kerberos first, then disable Basic by GPO.",
    ),
    check(
        "windows.winrm.client_hardened", "The WinRM client uses neither unencrypted traffic nor Basic",
        hipaa=("164.312(e)(2)(ii)", "164.312(d)"), cis="18.10.90.1.1, 18.10.90.1.2", roles=ALL,
        severity=Severity.LOW, interval=DAY / 4,
        script=_fragment("windows.winrm.client_hardened", (CLIENT_UNENCRYPTED, CLIENT_BASIC)),
        evaluate=evaluate_client, timeout=20,
        reads="WSMan:\\localhost\\Client\\AllowUnencrypted and Client\\Auth\\Basic",
    ),
]

RUNBOOKS = [
    runbook(
        "windows.winrm.disallow_unencrypted", "Make the WinRM service refuse unencrypted traffic",
        fixes=("windows.winrm.service_encrypted",), risk=Risk.LOW, script=DISALLOW_UNENCRYPTED, timeout=30,
        description="Set-Item WSMan:\\localhost\\Service\\AllowUnencrypted $false. Fails where a GPO sets the "
                    "value (the fix then belongs in the GPO).",
        management="the appliance talks to WinRM over HTTPS (TLS) or over HTTP with NTLM/Kerberos message "
                   "encryption, neither of which needs AllowUnencrypted; only the executor's lab-only "
                   "'basic' transport (refused in production) would lose access. No listener is removed or "
                   "changed and the service is not restarted, so the session running the runbook completes.",
    ),
    runbook(
        "windows.winrm.harden_client", "Harden the host's WinRM client",
        fixes=("windows.winrm.client_hardened",), risk=Risk.LOW, script=HARDEN_CLIENT, timeout=30,
        description="Sets Client\\AllowUnencrypted and Client\\Auth\\Basic to false.",
        management="the client settings govern connections this host makes; the appliance's connections into "
                   "the host use the service settings, which are not touched.",
    ),
]
