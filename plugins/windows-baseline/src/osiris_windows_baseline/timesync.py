"""Time synchronisation: audit records are only evidence if their clocks
agree (and Kerberos refuses logons beyond five minutes of skew).

The fragment sends ``w32tm /query /status /verbose`` as text (English
labels; the parser reads ``Source``, ``Leap Indicator``, ``Phase Offset``
and ``Time since Last Good Sync Time``, the last two in seconds), the
W32Time configuration (``Type``: NT5DS follows the domain hierarchy, NTP
uses ``NtpServer``) and the service state. A stopped time service makes
w32tm fail: that is drift, not an unreadable host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import Risk, Severity, Verdict

from .common import ALL, HOUR, check, failed, runbook, schema, verdict
from .facts import as_int, glob_any, require
from .parsers import parse_w32tm_status, w32tm_leading_int, w32tm_seconds
from .ps import NATIVE_PREAMBLE, check_header, runbook_header

STATUS = check_header("windows.time.synchronized", 1, """\
w32tm status (verbose), the W32Time configuration and service state.""") + """\
$role = [int](Get-CimInstance -ClassName Win32_ComputerSystem).DomainRole
$p = Get-Item -LiteralPath 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\W32Time\\Parameters'
$svc = Get-Service -Name W32Time
""" + NATIVE_PREAMBLE + """\
$status = @(& w32tm.exe /query /status /verbose)
$code = $LASTEXITCODE
[ordered]@{
    domain_role = $role
    type = [string]$p.GetValue('Type', $null)
    ntp_server = [string]$p.GetValue('NtpServer', $null)
    service_status = [string]$svc.Status
    service_start = [string]$svc.StartType
    exit_code = [int]$code
    status = ($status -join "`n")
}
"""


def evaluate_time(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    require(facts, "exit_code", "status")
    if as_int(facts["exit_code"]) != 0:
        first = str(facts["status"]).strip().splitlines()[-1:] or ["no output"]
        return failed(f"the Windows Time service does not answer (service {facts.get('service_status', '?')}): "
                      f"{first[0].strip()}")
    st = parse_w32tm_status(str(facts["status"]))
    source = st.get("Source", "")
    problems = []
    if glob_any(source, params["bad_sources"]):
        problems.append(f"no time source: {source}")
    elif params["allowed_sources"] and not glob_any(source, params["allowed_sources"]):
        problems.append(f"source {source} is not an allowed one ({', '.join(params['allowed_sources'])})")
    if w32tm_leading_int(st.get("Leap Indicator")) == 3:
        problems.append("the clock is not synchronised (leap indicator 3)")
    since = w32tm_seconds(st.get("Time since Last Good Sync Time"))
    if since is not None and since > float(params["max_sync_age_hours"]) * 3600:
        problems.append(f"last good sync {since / 3600:.1f} h ago (at most {params['max_sync_age_hours']} h)")
    offset = w32tm_seconds(st.get("Phase Offset"))
    if offset is not None and abs(offset) > float(params["max_offset_seconds"]):
        problems.append(f"clock off by {offset:+.3f} s (at most {params['max_offset_seconds']} s)")
    ok = f"synchronised from {source}" + (f", offset {offset:+.4f} s" if offset is not None else "")
    return verdict(problems, ok, "time: ")


CONFIGURE = runbook_header("windows.time.configure_sync", 1, """\
Domain members and additional DCs follow the domain hierarchy (NT5DS); the
PDC emulator and standalone hosts use the given NTP servers. Then the
service is set to start automatically, started, told to reread its
configuration and to resynchronise.""") + """\
$role = [int](Get-CimInstance -ClassName Win32_ComputerSystem).DomainRole
$key = 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\W32Time\\Parameters'
$k = Get-Item -LiteralPath $key
$want = [ordered]@{ Type = 'NT5DS' }
if ($role -eq 5 -or $role -eq 0 -or $role -eq 2) { $want = [ordered]@{ Type = 'NTP'; NtpServer = [string]$P.ntp_servers } }
$changed = New-Object System.Collections.ArrayList
foreach ($n in $want.Keys) {
    if ([string]$k.GetValue($n, '') -ne $want[$n]) {
        Set-ItemProperty -LiteralPath $key -Name $n -Value $want[$n] -Type String
        [void]$changed.Add($n)
    }
}
$svc = Get-Service -Name W32Time
if ([string]$svc.StartType -eq 'Disabled') { Set-Service -Name W32Time -StartupType Automatic; [void]$changed.Add('StartType') }
if ([string]$svc.Status -ne 'Running') { Start-Service -Name W32Time; [void]$changed.Add('started') }
""" + NATIVE_PREAMBLE + """\
$null = & w32tm.exe /config /update
$null = & w32tm.exe /resync /nowait
@{ changed = @($changed); type = $want.Type }
"""

# w32tm's peer list: host[,0xFLAGS] separated by spaces.
_PEERS = r"^[A-Za-z0-9.:-]+(,0x[0-9A-Fa-f]+)?( [A-Za-z0-9.:-]+(,0x[0-9A-Fa-f]+)?)*$"

CHECKS = [
    check(
        "windows.time.synchronized", "The clock is synchronised from a real time source",
        hipaa=("164.312(b)", "164.312(c)(1)"), roles=ALL, severity=Severity.MEDIUM, interval=HOUR,
        script=STATUS, evaluate=evaluate_time, timeout=30,
        params={"bad_sources": ["Local CMOS Clock", "Free-running System Clock"], "allowed_sources": [],
                "max_sync_age_hours": 24, "max_offset_seconds": 2.0},
        reads="w32tm /query /status /verbose (Source, Leap Indicator, Phase Offset, time since last good sync); "
              "registry W32Time\\Parameters Type and NtpServer; Get-Service W32Time",
        description="Fails on a free-running clock, a stale sync, or an offset beyond 2 s. allowed_sources "
                    "(wildcards) can pin the source, e.g. the site's domain controllers.",
    ),
]

RUNBOOKS = [
    runbook(
        "windows.time.configure_sync", "Configure and restart time synchronisation",
        fixes=("windows.time.synchronized",), risk=Risk.LOW, script=CONFIGURE, timeout=60,
        params_schema=schema({"ntp_servers": {"type": "string", "minLength": 1, "maxLength": 255,
                                              "pattern": _PEERS}}, ("ntp_servers",)),
        description="Sets W32Time Type (NT5DS on members, NTP with NtpServer on the PDC emulator and standalone "
                    "hosts), starts the service and resynchronises. The clock is slewed, not stepped, when "
                    "close; nothing else changes.",
    ),
]
