"""WinRM itself, the appliance's own path into the host: the runbooks.

The checks (no unencrypted traffic, no Basic authentication on the service,
a hardened client) are the check pack ``packs/winrm.yaml``, probe type
``wsman_setting``: the WSMan: drive (``Get-Item WSMan:\\localhost\\Service\\...``)
reports the effective value and, when a GPO sets it, ``SourceOfValue`` =
``GPO``. The values are strings ("true"/"false").

Basic authentication on the service has no runbook: the windows executor
uses HTTPS with Basic for local accounts by default, so turning Basic off
could cut the appliance off. Switch the appliance to ``auth: ntlm`` (or
``transport: ntlm``) first, then disable Basic by GPO.
"""

from __future__ import annotations

from osiris import Risk

from .common import runbook
from .ps import runbook_header

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

CHECKS: list = []  # packs/winrm.yaml

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
