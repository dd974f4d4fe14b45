"""Persistence: scheduled tasks and machine-wide Run keys against a
baseline of what the site expects.

Command lines can carry secrets (a password passed to a backup tool), so
facts keep only the program path and a SHA-256 digest (16 hex characters)
of the full command or arguments: a changed command shows as a changed
digest, and nothing secret is stored in evidence.

Per-user Run keys (HKU\\<SID>\\...\\Run) are outside this check: they live in
hives loaded only while the user is logged on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import Risk, Severity, Verdict

from .common import ALL, HOUR, check, failed, passed, runbook, schema
from .facts import glob_any, listify, plural, require
from .ps import check_header, lit, runbook_header

_DIGEST = """\
$sha = [Security.Cryptography.SHA256]::Create()
function Get-Digest([string]$s) {
    if ([string]::IsNullOrEmpty($s)) { return $null }
    $h = $sha.ComputeHash([Text.Encoding]::UTF8.GetBytes($s))
    return (-join ($h | ForEach-Object { $_.ToString('x2') })).Substring(0, 16)
}
"""

# -- scheduled tasks --------------------------------------------------------------------------

TASKS = check_header("windows.persistence.scheduled_tasks", 1, """\
Every scheduled task outside \\Microsoft\\: path, state, run-as account and
actions (program, digest of the arguments).""") + _DIGEST + """\
$tasks = @(Get-ScheduledTask | Where-Object { $_.TaskPath -notlike '\\Microsoft\\*' } | ForEach-Object {
    $t = $_
    [ordered]@{
        path = [string]$t.TaskPath + [string]$t.TaskName
        state = [string]$t.State
        author = [string]$t.Author
        run_as = [string]$t.Principal.UserId
        actions = @($t.Actions | ForEach-Object {
            [ordered]@{ execute = [string]$_.Execute; arguments_sha256 = (Get-Digest ([string]$_.Arguments)) }
        })
    }
})
@{ tasks = $tasks }
"""
TASK_STATES = {0: "Unknown", 1: "Disabled", 2: "Queued", 3: "Ready", 4: "Running"}


def unexpected_tasks(facts: Mapping[str, Any], params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out = []
    for t in listify(facts.get("tasks")):
        state = t.get("state")
        state = TASK_STATES.get(state, state) if isinstance(state, int) else state
        if state == "Disabled" and not params.get("include_disabled"):
            continue
        if not glob_any(str(t.get("path")), params["baseline"]):
            out.append(t)
    return out


def evaluate_tasks(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    require(facts, "tasks")
    bad = unexpected_tasks(facts, params)
    if bad:
        shown = [f"{t.get('path')} -> {', '.join(str(a.get('execute')) for a in listify(t.get('actions'))) or '?'}"
                 f" (as {t.get('run_as') or '?'})" for t in bad[:10]]
        return failed(f"{plural(len(bad), 'scheduled task')} not in the baseline: {'; '.join(shown)}")
    return passed(f"{plural(len(listify(facts['tasks'])), 'non-Microsoft scheduled task')}, all in the baseline")


# -- Run keys --------------------------------------------------------------------------------------

RUN_KEYS = {
    "run": "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
    "runonce": "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\RunOnce",
    "run32": "HKLM:\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Run",
    "runonce32": "HKLM:\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\RunOnce",
}

_KEYS_PS = "$keys = [ordered]@{\n" + "".join(f"    {k} = {lit(v)}\n" for k, v in RUN_KEYS.items()) + "}\n"

# The program a command line starts: a quoted path, else up to the first
# executable extension, else the first word.
_PROGRAM = """\
function Get-Program([string]$c) {
    $c = $c.Trim()
    if ($c.StartsWith('"')) {
        $end = $c.IndexOf('"', 1)
        if ($end -gt 0) { return $c.Substring(1, $end - 1) }
    }
    $m = [regex]::Match($c, '^(.+?\\.(exe|com|bat|cmd|ps1|vbs|js|dll))(\\s|,|$)', 'IgnoreCase')
    if ($m.Success) { return $m.Groups[1].Value }
    return $c.Split(' ')[0]
}
"""

RUN = check_header("windows.persistence.run_keys", 1, """\
Values of the machine-wide Run and RunOnce keys (64- and 32-bit views):
name, program, digest of the whole command.""") + _DIGEST + _KEYS_PS + _PROGRAM + """\
$entries = New-Object System.Collections.ArrayList
foreach ($id in $keys.Keys) {
    $key = Get-Item -LiteralPath $keys[$id] -ErrorAction SilentlyContinue
    if ($null -eq $key) { continue }
    foreach ($n in $key.GetValueNames()) {
        if ([string]::IsNullOrEmpty($n)) { continue }
        $cmd = [string]$key.GetValue($n, $null, [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames)
        [void]$entries.Add([ordered]@{ key = $id; name = [string]$n; program = (Get-Program $cmd); command_sha256 = (Get-Digest $cmd) })
    }
}
@{ entries = @($entries) }
"""


def _baseline_match(entry: Mapping[str, Any], baseline: list[str]) -> bool:
    name, program = str(entry.get("name")), str(entry.get("program") or "")
    for b in baseline:
        bname, sep, bprog = b.partition("=")
        if glob_any(name, [bname]) and (not sep or glob_any(program, [bprog])):
            return True
    return False


def unexpected_run_entries(facts: Mapping[str, Any], params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [e for e in listify(facts.get("entries")) if not _baseline_match(e, list(params["baseline"]))]


def evaluate_run(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    require(facts, "entries")
    bad = unexpected_run_entries(facts, params)
    if bad:
        shown = [f"{e.get('key')}\\{e.get('name')} -> {e.get('program')}" for e in bad[:10]]
        return failed(f"{plural(len(bad), 'autostart entry', 'autostart entries')} not in the baseline: "
                      f"{'; '.join(shown)}")
    n = len(listify(facts["entries"]))
    return passed(f"{plural(n, 'Run key entry', 'Run key entries')}, all in the baseline")


# -- runbooks ---------------------------------------------------------------------------------

DISABLE_TASK = runbook_header("windows.persistence.disable_task", 1, """\
Disables one scheduled task by its full path (never one under \\Microsoft\\).
Disabling keeps the task for inspection; running it again changes nothing.""") + """\
$full = [string]$P.path
if ($full -like '\\Microsoft\\*') { throw 'refused: tasks under \\Microsoft\\ belong to Windows' }
$i = $full.LastIndexOf('\\')
$taskPath = $full.Substring(0, $i + 1)
$taskName = $full.Substring($i + 1)
$t = Get-ScheduledTask -TaskPath $taskPath -TaskName $taskName -ErrorAction SilentlyContinue
$changed = $false
if ($null -ne $t -and [string]$t.State -ne 'Disabled') {
    [void](Disable-ScheduledTask -TaskPath $taskPath -TaskName $taskName)
    $changed = $true
}
@{ path = $full; found = ($null -ne $t); changed = $changed }
"""

REMOVE_RUN = runbook_header("windows.persistence.remove_run_value", 1, """\
Removes one value from a machine-wide Run or RunOnce key; returns its
program so evidence shows what was removed.""") + _KEYS_PS + _PROGRAM + """\
$id = [string]$P.key
if (-not $keys.Contains($id)) { throw ('unknown key ' + $id) }
$key = Get-Item -LiteralPath $keys[$id] -ErrorAction SilentlyContinue
$name = [string]$P.name
$removed = $null
if ($null -ne $key -and @($key.GetValueNames()) -contains $name) {
    $removed = Get-Program ([string]$key.GetValue($name, $null, [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames))
    Remove-ItemProperty -LiteralPath $keys[$id] -Name $name
}
@{ key = $id; name = $name; removed_program = $removed; changed = ($null -ne $removed) }
"""

_WHY = (" The fix for a legitimate entry is adding it to the site's baseline (checks.<id>.params.baseline); for "
        "an unknown one, the runbook below, chosen by a person or planner: no default rule runs it.")

CHECKS = [
    check(
        "windows.persistence.scheduled_tasks", "Scheduled tasks match the site's baseline",
        hipaa=("164.308(a)(5)(ii)(B)", "164.308(a)(1)(ii)(D)", "164.312(c)(1)"), roles=ALL, severity=Severity.HIGH,
        interval=HOUR, script=TASKS, evaluate=evaluate_tasks, timeout=60,
        params={"include_disabled": False, "baseline": [
            "\\MicrosoftEdgeUpdateTaskMachine*", "\\GoogleUpdateTaskMachine*", "\\OneDrive *",
            "\\Adobe Acrobat Update Task", "\\CreateExplorerShellUnelevatedTask", "\\npcapwatchdog",
            "\\Mozilla\\Firefox *"]},
        reads="Get-ScheduledTask outside \\Microsoft\\: path, state, author, principal, actions (program and a "
              "digest of the arguments)",
        description="Attackers and unwanted software persist as scheduled tasks." + _WHY,
    ),
    check(
        "windows.persistence.run_keys", "Machine-wide Run keys match the site's baseline",
        hipaa=("164.308(a)(5)(ii)(B)", "164.308(a)(1)(ii)(D)", "164.312(c)(1)"), roles=ALL, severity=Severity.HIGH,
        interval=HOUR, script=RUN, evaluate=evaluate_run, timeout=30,
        params={"baseline": ["SecurityHealth=*SecurityHealthSystray.exe", "VMware User Process=*vmtoolsd.exe"]},
        reads="registry HKLM ...\\CurrentVersion\\Run and RunOnce (native and WOW6432Node): name, program, "
              "digest of the command",
        description="Baseline entries are 'name' or 'name=program' with wildcards." + _WHY,
    ),
]

_HIGH = (" High risk: the entry may be something the practice needs; a person or an L2 planner names it, no "
         "default rule runs this runbook.")

RUNBOOKS = [
    runbook(
        "windows.persistence.disable_task", "Disable an unexpected scheduled task",
        fixes=("windows.persistence.scheduled_tasks",), risk=Risk.HIGH, script=DISABLE_TASK, timeout=60,
        params_schema=schema({"path": {"type": "string", "minLength": 2, "maxLength": 400,
                                       "pattern": r"^\\([^\\]+\\)*[^\\]+$"}}, ("path",)),
        description="Disable-ScheduledTask on the task's full path as the check reports it." + _HIGH,
        management="refuses anything under \\Microsoft\\; the appliance runs no scheduled task of its own.",
    ),
    runbook(
        "windows.persistence.remove_run_value", "Remove an unexpected Run key entry",
        fixes=("windows.persistence.run_keys",), risk=Risk.HIGH, script=REMOVE_RUN, timeout=60,
        params_schema=schema({"key": {"enum": list(RUN_KEYS)},
                              "name": {"type": "string", "minLength": 1, "maxLength": 255}}, ("key", "name")),
        description="Remove-ItemProperty of one value of a Run/RunOnce key (the program it started is returned, "
                    "the file itself is left for investigation)." + _HIGH,
    ),
]

