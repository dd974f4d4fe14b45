# osiris-probe: wsman_setting/v1
# WinRM settings through the WSMan: drive, which reports the effective value
# and, when a GPO sets it, SourceOfValue = GPO. Input, data from the check
# pack ($P.probe.paths): paths under WSMan:\localhost such as
# 'Service\AllowUnencrypted'. Output: @{ wsman = @{ '<path>' = @{ Value; Source } } }.
param($P)
$out = [ordered]@{}
foreach ($p in @($P.probe.paths)) {
    $path = [string]$p
    if ($path -notmatch '^(Service|Client)(\\[A-Za-z0-9_]+)+$') { throw ('not a WSMan setting path: ' + $path) }
    $i = Get-Item -Path ('WSMan:\localhost\' + $path)
    $out[$path] = [ordered]@{ Value = [string]$i.Value; Source = [string]$i.SourceOfValue }
}
@{ wsman = $out }
