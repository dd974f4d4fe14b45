"""Advanced audit policy: the runbook that turns on the auditing a check
asks for.

The checks, one per subcategory so each maps to its own HIPAA paragraph and
CIS recommendation, are the check pack ``packs/audit.yaml`` (probe type
``audit_subcategory``: ``auditpol /get /subcategory:{GUID} /r``, parsed in
:mod:`.parsers`, which reads the numeric Setting Value column where auditpol
prints it and the English Inclusion Setting otherwise). A site pack can add
subcategories: the runbook fixes every audit check whose pack heal entry
names it, and accepts exactly their GUIDs.

(``windows.audit.subcategory_override``, which makes these settings win over
legacy category settings, is in ``packs/policies.yaml``.)
"""

from __future__ import annotations

from collections.abc import Mapping

from osiris import Risk, RunbookSpec

from .common import runbook, schema
from .ps import NATIVE_PREAMBLE, runbook_header

ENABLE_ID = "windows.audit.enable_subcategory"

ENABLE = runbook_header("windows.audit.enable_subcategory", 1, """\
Turns on success and/or failure auditing of one subcategory (by GUID),
where not already on. Never turns auditing off; running it again changes
nothing. The current setting is read from the Setting Value column (or the
English inclusion text); when neither can be read, the flags are set anyway.""") + NATIVE_PREAMBLE + """\
$guid = [string]$P.subcategory
if (-not $P.success -and -not $P.failure) { throw 'nothing to enable: success and failure are both false' }
$has = @{ success = $false; failure = $false }
$row = @(& auditpol.exe /get ('/subcategory:' + $guid) /r | Where-Object { $_ -like ('*' + $guid + '*') })
if ($row.Count -gt 0) {
    $cols = $row[0].Split(',')
    if ($cols.Count -ge 7 -and $cols[6] -match '^[0-9]+$') {
        $v = [int]$cols[6]
        $has.success = ($v -band 1) -ne 0
        $has.failure = ($v -band 2) -ne 0
    } elseif ($cols[4] -eq 'Success and Failure') { $has.success = $true; $has.failure = $true }
    elseif ($cols[4] -eq 'Success') { $has.success = $true }
    elseif ($cols[4] -eq 'Failure') { $has.failure = $true }
}
$flags = New-Object System.Collections.ArrayList
if ($P.success -and -not $has.success) { [void]$flags.Add('/success:enable') }
if ($P.failure -and -not $has.failure) { [void]$flags.Add('/failure:enable') }
if ($flags.Count -gt 0) {
    $out = @(& auditpol.exe /set ('/subcategory:' + $guid) @flags)
    if ($LASTEXITCODE -ne 0) { throw ('auditpol /set failed (' + $LASTEXITCODE + '): ' + ($out -join ' ')) }
}
@{ subcategory = $guid; changed = @($flags) }
"""

CHECKS: list = []  # packs/audit.yaml


def enable_runbook(guids: Mapping[str, str]) -> RunbookSpec:
    """The runbook for these checks (check id -> the GUID it reads)."""
    return runbook(
        ENABLE_ID, "Turn on auditing of an audit policy subcategory",
        fixes=tuple(guids), risk=Risk.LOW, script=ENABLE, timeout=30,
        params_schema=schema({
            "subcategory": {"type": "string", "enum": sorted(set(guids.values()))},
            "success": {"type": "boolean"},
            "failure": {"type": "boolean"},
        }, ("subcategory", "success", "failure")),
        description="auditpol /set /subcategory:{GUID} /success:enable and/or /failure:enable. Only adds "
                    "auditing; more Security log events, nothing else. Where a GPO sets advanced audit policy, "
                    "the GPO's setting returns at the next refresh and the fix belongs there.",
    )


RUNBOOKS: list = []  # enable_runbook, for the checks the loaded packs declare (catalog.runbooks)
