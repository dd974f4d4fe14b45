"""Every PowerShell script is parsed by a real grammar (tree-sitter's
PowerShell grammar) and held to the executor's and Windows PowerShell 5.1's
rules (tests/pslint.py): each check's and runbook's fragment as the agent
loads it from every installed plugin (so scripts added later, check packs
included, are covered without being named here), every batch the windows
executor composes for a host and for a runbook, and the bootstrap on the
command line. The lab never runs PowerShell, so this is where a script that
Windows would refuse is caught."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from osiris import budget
from osiris.app import load
from osiris_windows import client, script

_spec = importlib.util.spec_from_file_location("osiris_tests_pslint", Path(__file__).with_name("pslint.py"))
pslint = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pslint)

ROLES = ("dc", "server", "workstation")


def _config(tmp_path, **extra):
    secret = tmp_path / "winrm"
    secret.write_text("LAB\\osiris:not-a-real-password")
    return {
        "state_dir": str(tmp_path / "state"),
        "agent": {"check_self": False, "http": {"enabled": False}},
        "secrets": {"files": {"winrm": str(secret)}},
        "targets": [{"name": f"{role}01", "kind": "windows", "role": role, "address": "127.0.0.1",
                     "credential": "winrm", "options": {"transport": "ntlm"}} for role in ROLES],
        **extra,
    }


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The agent with every installed plugin, as `osiris run` loads it."""
    loaded = load(config_data=_config(tmp_path_factory.mktemp("ps")), environ={})
    yield loaded
    loaded.ctx.close()


def fragments(registry) -> list[tuple[str, str, str]]:
    """(plugin, "check <id>" / "runbook <id>", script) for every contributed
    script; every script is PowerShell for the windows executor."""
    out = []
    for kind, contributed in (("check", registry.checks), ("runbook", registry.runbooks)):
        for uid, c in sorted(contributed.items()):
            if c.spec.script is None:
                continue
            assert c.spec.target_kind == "windows", (
                f"{kind} {uid} ({c.plugin}) carries a script for {c.spec.target_kind!r}: teach this test its language")
            out.append((c.plugin, f"{kind} {uid}", c.spec.script))
    return out


def report(label: str, text: str, fragment: bool = True) -> list[str]:
    return [f"{label}: {p}" for p in pslint.problems(text, fragment=fragment)]


# -- what the executor sends ------------------------------------------------------------------

_UNIT_ADD = re.compile(r"^\[void\]\$Units\.Add\(@\{ Kind = '(\w+)'; Id = '([^']+)'; Body = @'$")


def batch_report(label: str, batch: str) -> list[str]:
    """Problems of a composed batch, each saying where: the batch's head,
    a unit's here-string (by the unit's id), or the batch's tail."""
    lines = batch.split("\n")
    out = []
    for p in pslint.problems(batch, fragment=False):
        m = re.match(r"line (\d+)", p)
        part = "the batch's head"
        for ln in lines[:int(m.group(1)) if m else 0]:
            if found := _UNIT_ADD.match(ln):
                part = f"{found.group(1)} {found.group(2)}"
            elif ln == "'@ })":
                part = "the batch's tail"
        out.append(f"{label}: {p} (in {part})")
    return out


def _joined(env, name: str) -> str:
    b64 = "".join(env[f"{name}_{i}"] for i in range(int(env[f"{name}_N"])))
    return base64.b64decode(b64).decode("utf-8")


@pytest.fixture
def sent(monkeypatch):
    """What the executor hands to WinRM, captured in place of the network:
    (bootstrap, batch) per request. Each request answers with an empty
    result document."""
    captured: list[tuple[str, str]] = []
    empty = base64.b64encode(json.dumps({"osiris": "batch/v1", "results": []}).encode()).decode()

    def run(self, command, args, env, deadline):
        assert command == "powershell.exe" and args[-2] == "-EncodedCommand"
        captured.append((base64.b64decode(args[-1]).decode("utf-16-le"), _joined(env, "OSIRIS_SCRIPT")))
        return client.Output(f"OSIRIS-RESULT {empty}\n".encode(), b"", 0)

    monkeypatch.setattr(client.Session, "run", run)
    return captured


async def composed(loaded, sent) -> dict[str, str]:
    """label -> script for every batch the windows executor composes: each
    role's host batch of checks, each runbook's batch, and the bootstrap."""
    executor = loaded.registry.executor("windows")
    out: dict[str, str] = {}
    for target in loaded.targets:
        checks = [c for c in loaded.registry.checks_for(target) if c.target_kind == "windows"]
        await executor.observe(target, checks, deadline=budget.after(300))
        assert sent, f"the executor sent nothing for {target.name}"
        for i, (bootstrap, batch) in enumerate(sent):
            out["bootstrap"] = bootstrap
            out[f"batch {i + 1} of {len(sent)} for {target.name} ({target.role})"] = batch
        assert {c.id for c in checks} == {
            m.group(1) for _, batch in sent for m in re.finditer(r"^# osiris-check: (\S+)/v\d+$", batch, re.M)}
        sent.clear()
    workstation = next(t for t in loaded.targets if t.role == "workstation")
    for rid, c in sorted(loaded.registry.runbooks.items()):
        if c.spec.script is not None:
            await executor.run_runbook(workstation, c.spec, {}, deadline=budget.after(300))
            (bootstrap, batch), = sent
            assert f"# osiris-runbook: {rid}/v" in batch
            out[f"runbook {rid}'s batch"] = batch
            sent.clear()
    return out


# -- the tests ----------------------------------------------------------------------------------


def test_every_fragment_of_every_plugin_parses_and_keeps_the_rules(loaded):
    found = fragments(loaded.registry)
    assert {"windows", "windows-baseline"} <= {plugin for plugin, _, _ in found}
    bad = [p for _, label, text in found for p in report(label, text)]
    assert bad == []


async def test_every_batch_the_executor_composes_parses(loaded, sent):
    batches = await composed(loaded, sent)
    assert batches["bootstrap"] == script.BOOTSTRAP
    assert sum(label.startswith("batch") for label in batches) >= len(ROLES)
    bad = [p for label, text in batches.items() for p in batch_report(label, text)]
    assert bad == []


def test_a_planted_syntax_error_is_reported_with_its_check_and_line(tmp_path, monkeypatch):
    """A plugin added later is covered through the registry, and the error
    names its check and the line and column the grammar stopped at."""
    (tmp_path / "planted_plugin.py").write_text('''\
from osiris import CheckSpec, Verdict, hookimpl

SCRIPT = """# osiris-check: windows.planted.broken/v1
param($P)
$values = @{
    a = (Get-Item -LiteralPath 'HKLM:\\\\SOFTWARE'
}
@{ values = $values }
"""

@hookimpl
def osiris_checks(ctx):
    return [CheckSpec(id="windows.planted.broken", title="Planted", target_kind="windows",
                      evaluate=lambda facts, params: Verdict(True, "ok"), hipaa=("164.312(b)",), script=SCRIPT)]
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load(config_data=_config(tmp_path, plugin_modules=["planted_plugin"]),
                  environ={"OSIRIS_PLUGINS": "windows"})
    try:
        bad = [p for plugin, label, text in fragments(loaded.registry) if plugin == "planted_plugin"
               for p in report(label, text)]
    finally:
        loaded.ctx.close()
        sys.modules.pop("planted_plugin", None)
    assert bad and all(p.startswith("check windows.planted.broken: line ") for p in bad)
    assert re.match(r"check windows\.planted\.broken: line [45], column \d+: (syntax error|missing)", bad[0])


def test_a_broken_batch_is_reported_with_the_line_and_the_part_it_is_in():
    one = script.unit("check", "windows.a.one", "# osiris-check: windows.a.one/v1\nparam($P)\n@{ a = 1 }")
    two = script.unit("check", "windows.b.two", "# osiris-check: windows.b.two/v1\nparam($P)\n@{ b = 2 }")
    batch = script.compose((one, two))
    assert batch_report("batch", batch) == []
    planted = "$r.ms = [int]$clock.ElapsedMilliseconds)"  # one parenthesis too many
    broken = batch.replace("$r.ms = [int]$clock.ElapsedMilliseconds", planted, 1)
    before = broken[:broken.index(planted) + len(planted)]
    line, column = before.count("\n") + 1, len(before.rsplit("\n", 1)[1])
    assert batch_report("batch", broken) == [
        f"batch: line {line}, column {column}: syntax error at ')' (in the batch's tail)"]
    # a fragment that ends its here-string early (script.unit refuses one; composed here by hand)
    escaped = script.Unit("check", "windows.b.two", 1, "# osiris-check: windows.b.two/v1\nparam($P)\n'@\n@{ b = (2 }")
    bad = batch_report("batch", script.compose((one, escaped)))
    assert bad[0].endswith("(in check windows.b.two)")  # the first error, where the parse went wrong


def test_the_linter_catches_what_it_claims():
    head = "# osiris-check: x.y/v1\nparam($P)\n"
    problems, code_only = pslint.problems, pslint.code_only
    assert problems(head + "$a = $b ?? 1\n")  # the grammar refuses it (PowerShell 7)
    assert problems(head + "$a = $x ? 1 : 2\n")
    assert problems(head + "$x = ConvertFrom-Json $t -AsHashtable\n") == ["uses -AsHashtable (PowerShell 6+)"]
    assert problems(head + "Get-Item a && Get-Item b\n") == ["uses && / || pipeline chains (PowerShell 7)"]
    assert problems(head + "$o = & auditpol.exe /get\n") == [
        "calls a native program before relaxing $ErrorActionPreference"]
    assert problems(head + "$ErrorActionPreference = 'Continue'\n$o = & auditpol.exe /get\n") == []
    assert problems(head + "if ($x) { exit 1 }\n") == ["line 3: uses exit (ends the batch's runspace)"]
    assert problems(head + "try { 1 }\n@{}\n") == ["line 3: try without catch or finally (PowerShell refuses it)"]
    assert problems(head + "@{ a = (1 }\n") == ["line 3, column 4: syntax error at 'a = (1'"]
    assert problems(head + "$s = 'never closed\n") and problems(head + "if ($x) {\n")
    assert problems(head + "$s = 'a ?? b (' # ?? in a comment\n") == []
    assert problems("$x = 1\n") == ["the first statement must be param($P)"]
    assert problems("$x = 1\n", fragment=False) == []
    assert code_only("$x = \"it's $($y.Name) ok\"") == '$x = ""'
    assert code_only("<# a\nb #>$e = 'Continue' # c\n$h = @'\nx\n'@") == "\n$e = '' \n$h = ''\n\n"
    bad = ".ToString('yyyy-MM-ddTHH:mm:ssZ')"
    assert problems(head + f"@{{ t = $d{bad} }}\n") == [
        f"formats a date under the host's culture: {bad} (use InvariantCulture)"]
    assert problems(head + "@{ t = $d.ToString('yyyy-MM-dd', [Globalization.CultureInfo]::InvariantCulture) }\n") == []
    assert problems(head + "@{ t = $d.ToString('o'); g = [guid]::NewGuid().ToString('N'); h = $b.ToString('x2') }\n") == []
    assert len(problems(head + "@{ t = (Get-Date -Format 'yyyy-MM-dd'); u = '{0:dd.MM.yyyy}' -f $d }\n")) == 2
    assert len(problems(head + "@{ t = $d.ToString('yyyy-MM-dd', (Get-Culture)) }\n")) == 1


def test_a_parameter_name_with_a_digit_parses_and_still_hides_no_error():
    """The grammar's gap (upstream issue #59) is bridged for parameter names
    only: the same line with a real error is still refused."""
    assert pslint.syntax_errors("Set-SmbServerConfiguration -EnableSMB1Protocol $false -Confirm:$false\n") == []
    assert pslint.syntax_errors("Set-SmbServerConfiguration -EnableSMB1Protocol ($false -Confirm:$false\n")
    assert pslint.syntax_errors("$a = 1 -eq 1\n$b = @(1,2)[0]\n") == []


def test_no_fragment_or_plugin_source_formats_a_date_under_the_hosts_culture(loaded):
    """th-TH writes Buddhist years and other cultures other separators: a
    date a fragment prints must not depend on the host's culture. Every
    fragment as loaded (generated ones included), and every source file
    under plugins/ as a backstop."""
    bad = {label: found for _, label, text in fragments(loaded.registry)
           if (found := pslint.culture_dependent_dates(text))}
    plugins = Path(__file__).resolve().parents[1] / "plugins"
    sources = [p for p in plugins.rglob("*.py") if "tests" not in p.relative_to(plugins).parts]
    assert (plugins / "windows-baseline").is_dir() and len(sources) > 20
    for path in sources:
        if found := pslint.culture_dependent_dates(path.read_text(encoding="utf-8")):
            bad[str(path.relative_to(plugins))] = found
    assert bad == {}
