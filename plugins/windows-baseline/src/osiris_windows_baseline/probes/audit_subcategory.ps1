# osiris-probe: audit_subcategory/v1
# One advanced audit policy subcategory, by GUID (names, the CSV header and
# the Inclusion Setting text are localised): auditpol /get /r, sent as text
# and parsed by the plugin. auditpol needs SeSecurityPrivilege (administrators).
# Input, data from the check pack: $P.probe.guid. Output: @{ guid; exit_code; csv }.
param($P)
$ErrorActionPreference = 'Continue'
$guid = [string]$P.probe.guid
if ($guid -notmatch '^\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}$') {
    throw ('not an audit subcategory GUID: ' + $guid)
}
$rows = @(& auditpol.exe /get ('/subcategory:' + $guid) /r)
$code = $LASTEXITCODE
@{ guid = $guid; exit_code = [int]$code; csv = ($rows -join "`n") }
