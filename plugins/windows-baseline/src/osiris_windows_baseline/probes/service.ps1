# osiris-probe: service/v1
# One service's state through Get-Service (Status and StartType as names).
# Input, data from the check pack: $P.probe.name (a service name: no
# wildcards). Output: @{ Name; present; Status; StartType }.
param($P)
$name = [string]$P.probe.name
if ($name -notmatch '^[A-Za-z0-9_.\-]+$') { throw ('not a service name: ' + $name) }
$s = Get-Service -Name $name -ErrorAction SilentlyContinue
if ($null -eq $s) {
    [ordered]@{ Name = $name; present = $false; Status = $null; StartType = $null }
} else {
    [ordered]@{ Name = [string]$s.Name; present = $true; Status = [string]$s.Status; StartType = [string]$s.StartType }
}
