# osiris-probe: registry_value/v1
# Registry values under HKLM, each read with RegistryKey.GetValue: an absent
# key or value reads as $null (the check pack says what Windows then does).
# Inputs, data from the check pack ($P.probe.values): a list of
# @{ k = 'HKLM:\<key>'; n = '<value name>' }. Output: @{ values = @{
# '<k>\<n>' = <the value, or $null> } }, so the facts name what was read.
param($P)
$values = [ordered]@{}
foreach ($r in @($P.probe.values)) {
    $k = [string]$r.k
    $n = [string]$r.n
    if (-not $k.StartsWith('HKLM:\', [StringComparison]::OrdinalIgnoreCase)) { throw ('not a key under HKLM: ' + $k) }
    $v = $null
    $key = Get-Item -LiteralPath $k -ErrorAction SilentlyContinue
    if ($null -ne $key) { $v = $key.GetValue($n, $null) }
    $values[$k + '\' + $n] = $v
}
@{ values = $values }
