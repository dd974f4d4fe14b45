"""Check packs (docs/check-packs.md): the format, its errors (file and
line, every one), the last good set, the probe types' evaluation and the
checks, rules and runbooks a pack becomes."""

from __future__ import annotations

import hashlib
import textwrap

import pytest

from osiris import Status
from osiris.healing.rules import load_rules
from osiris_windows_baseline import catalog, pack, packset, probes
from osiris_windows_baseline.facts import FactError

GOOD = """\
description: a site's own checks
checks:
  - id: site.spooler.disabled
    title: The print spooler is disabled on domain controllers
    hipaa: ['164.308(a)(1)(ii)(B)']
    roles: [dc]
    severity: high
    interval: 1h
    probe: {type: service, name: Spooler, absent: {status: Stopped, start_type: Disabled}}
    expect:
      start_type: {eq: Disabled}
  - id: site.smb.signing_policy
    title: SMB server signing is required by policy
    hipaa: ['164.312(e)(2)(i)']
    params: {want: 1}
    probe:
      type: registry_value
      values:
        require: {path: 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\LanmanServer\\Parameters', name: RequireSecuritySignature, absent: 0}
    expect:
      require: {ge: {param: want}}
    fail: SMB signing is not required
    heal:
      runbook: windows.registry.set_value
      params: {path: 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\LanmanServer\\Parameters', name: RequireSecuritySignature, kind: DWord, value: 1}
"""


def parse(text: str, name: str = "/site/packs/site.yaml") -> pack.Pack:
    return pack.parse(textwrap.dedent(text).encode(), name)


def errors(text: str) -> list[str]:
    with pytest.raises(pack.PackError) as exc:
        parse(text)
    return exc.value.messages


def test_a_good_pack_becomes_checks_with_their_source_and_rules():
    p = parse(GOOD)
    spooler, smb = p.checks()
    assert p.sha256 == hashlib.sha256(GOOD.encode()).hexdigest()
    assert (spooler.source.file, spooler.source.line, spooler.source.sha256) == ("/site/packs/site.yaml", 3, p.sha256)
    assert spooler.roles == {"dc"} and spooler.interval == 3600 and spooler.severity.value == "high"
    assert smb.roles == {"dc", "server", "workstation"} and smb.interval == 4 * 3600  # the defaults
    assert smb.params == {"want": 1, "probe": {"values": [
        {"k": "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\LanmanServer\\Parameters", "n": "RequireSecuritySignature"}]}}
    # the script is the probe type's, after the check's own marker: nothing from the pack in it but the id
    assert smb.script == "# osiris-check: site.smb.signing_policy/v1\n" + probes.script("registry_value")
    assert "LanmanServer" not in smb.script
    [rule] = p.rules()
    assert (rule.file, rule.line) == ("/site/packs/site.yaml", 23)
    assert rule.rule["id"] == "site.smb.signing_policy" and rule.rule["match"] == {"check": "site.smb.signing_policy"}


@pytest.mark.parametrize("text,expected", [
    # not YAML: the line of the problem
    ("checks:\n  - id: a.b\n    title: [unclosed\n", "site.yaml:4: not valid YAML"),
    # a probe type nobody reviewed
    (GOOD.replace("type: service", "type: powershell"),
     "site.yaml:9: checks.0.probe: Input tag 'powershell' found using 'type' does not match any of the expected "
     "tags: 'registry_value', 'audit_subcategory', 'service', 'wsman_setting'"),
    # free-form PowerShell is not a field of any probe
    (GOOD.replace("name: Spooler,", "name: Spooler, script: 'Remove-Item C:\\',"),
     "site.yaml:9: checks.0.probe.script: unknown key"),
    # a field with a typo, and one of the wrong type
    (GOOD.replace("    severity: high\n", "    severty: high\n"), "site.yaml:7: checks.0.severty: unknown key"),
    (GOOD.replace("interval: 1h", "interval: often"),
     "site.yaml:8: checks.0.interval: Value error, expected seconds, or a duration such as 30m, 4h, 1d"),
    # a registry path outside HKLM, a wildcard in a service name
    (GOOD.replace("'HKLM:\\SYSTEM", "'HKCU:\\SYSTEM", 1), "site.yaml:19: checks.1.probe.values.require.path:"),
    (GOOD.replace("name: Spooler", "name: 'Spool*'"), "site.yaml:9: checks.0.probe.name: String should match"),
    # a fact the probe does not have, a parameter the check lacks, a condition that is not one
    (GOOD.replace("start_type: {eq: Disabled}", "starttype: {eq: Disabled}"),
     "site.yaml:11: checks.0.expect.starttype: not a fact of probe service"),
    (GOOD.replace("{param: want}", "{param: wanted}"),
     "site.yaml:21: checks.1.expect.require: names parameter(s) 'wanted' that the check's params lack"),
    (GOOD.replace("{ge: {param: want}}", "{atleast: 1}"),
     "site.yaml:21: checks.1.expect.require.atleast: unknown condition"),
    # a citation not to the paragraph (CheckSpec's own rule), a key given twice
    (GOOD.replace("['164.308(a)(1)(ii)(B)']", "['164.308']"), "site.yaml:5: checks.0.hipaa.0: String should match"),
    (GOOD.replace("    roles: [dc]\n", "    roles: [dc]\n    roles: [server]\n"),
     "site.yaml:7: key 'roles' given twice (first on line 6)"),
    (GOOD.replace("site.smb.signing_policy", "site.spooler.disabled", 1),
     "site.yaml:12: checks.1.id: check 'site.spooler.disabled' is declared twice in this pack (first on line 3)"),
    ("- just a list\n", "site.yaml:1: expected a check pack: a mapping with a 'checks' list"),
    # no aliases (nothing to share in a table, and no alias bombs), nothing absurdly deep
    (GOOD.replace("roles: [dc]", "roles: &r [dc]").replace("params: {want: 1}", "params: {want: 1, r: *r}"),
     "site.yaml:15: YAML aliases (*r) are not allowed in a check pack"),
    ("checks:\n  - " + "[" * 100 + "]" * 100 + "\n", "site.yaml:2: nested deeper than 32 levels"),
])
def test_every_error_names_the_file_and_line(text, expected):
    found = errors(text)
    assert any(m.startswith("/site/packs/" + expected.split(":", 1)[0]) and expected in m for m in found), found


def test_all_errors_of_a_pack_are_reported_at_once():
    bad = GOOD.replace("severity: high", "severity: severe").replace("{param: want}", "{param: nope}")
    found = errors(bad)
    assert len(found) == 2 and "checks.0.severity" in found[0] and "'nope'" in found[1]


def test_a_check_pack_check_evaluates_with_site_parameters_and_refuses_another_probe():
    smb = parse(GOOD).checks()[1]
    ref = "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\LanmanServer\\Parameters\\RequireSecuritySignature"
    off = smb.evaluate({"values": {ref: None}}, smb.params)
    assert off.status is Status.FAIL
    assert off.reason == ("SMB signing is not required: RequireSecuritySignature not set (Windows default 0), "
                          "expected at least 1")
    on = smb.evaluate({"values": {ref: 1}}, smb.params)
    assert (on.status, on.reason) == (Status.PASS, "SMB server signing is required by policy "
                                                   "(RequireSecuritySignature = 1)")
    assert smb.evaluate({"values": {ref: None}}, {**smb.params, "want": 0}).status is Status.PASS  # site override
    moved = {**smb.params, "probe": {"values": [{"k": "HKLM:\\SOFTWARE\\Other", "n": "X"}]}}
    with pytest.raises(FactError, match="params.probe is not the probe the pack declares"):
        smb.evaluate({"values": {"HKLM:\\SOFTWARE\\Other\\X": 1}}, moved)
    with pytest.raises(FactError, match="not about the value the pack declares"):
        smb.evaluate({"values": {"HKLM:\\SOFTWARE\\Other\\X": 1}}, smb.params)


def test_a_missing_service_counts_as_the_pack_says():
    spooler = parse(GOOD).checks()[0]
    absent = spooler.evaluate({"Name": "Spooler", "present": False, "Status": None, "StartType": None},
                              spooler.params)
    assert (absent.status, absent.reason) == (Status.PASS, "the Spooler service is not installed, counted as "
                                                           "stopped (Disabled)")
    running = spooler.evaluate({"Name": "Spooler", "present": True, "Status": 4, "StartType": 2}, spooler.params)
    assert (running.status, running.reason) == (Status.FAIL, "the Spooler service is start type Automatic")


def test_shipped_packs_hold_the_table_shaped_checks():
    shipped = [c for c in catalog.CHECKS if c.source is not None]
    assert len(shipped) >= 30
    assert {c.source.file for c in shipped} == {packset.SHIPPED_PREFIX + n for n in catalog.AREA_PACKS.values()}
    assert {c.params["probe"] and c.script.splitlines()[1] for c in shipped} == {
        f"# osiris-probe: {t}/v1" for t in probes.TYPES}  # every probe type is used


# -- the last good set -----------------------------------------------------------------------------------


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_a_broken_pack_falls_back_to_its_last_good_copy(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    site = write(tmp_path / "site.yaml", GOOD)
    first = packset.load([site], state, catalog.taken())
    assert [lp.status for lp in first.loaded if lp.origin == "site"] == ["loaded"] and first.errors == []
    first.keep(state)
    write(site, GOOD.replace("type: service", "type: shell"))
    second = packset.load([site], state, catalog.taken())
    [lp] = [lp for lp in second.loaded if lp.origin == "site"]
    assert lp.status == "last_good" and lp.pack.sha256 == hashlib.sha256(GOOD.encode()).hexdigest()
    assert lp.errors[0].startswith(f"{site}:9: checks.0.probe: Input tag 'shell'")
    assert "using its last good copy" in lp.errors[-1]
    assert {c.id for c in catalog.checks(second.packs)} >= {"site.spooler.disabled", "site.smb.signing_policy"}
    assert second.evidence()["packs"][-1] == {
        "file": str(site), "origin": "site", "status": "last_good", "sha256": lp.pack.sha256,
        "checks": ["site.spooler.disabled", "site.smb.signing_policy"], "errors": lp.errors}
    site.unlink()  # listed but gone: the same
    assert packset.load([site], state, catalog.taken()).loaded[-1].status == "last_good"
    # no good copy yet (another state directory): left out, and said so
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    write(site, GOOD.replace("type: service", "type: shell"))
    [lp] = [lp for lp in packset.load([site], fresh, catalog.taken()).loaded if lp.origin == "site"]
    assert lp.status == "rejected" and lp.pack is None and "no last good copy" in lp.errors[-1]


def test_a_pack_cannot_redeclare_a_check(tmp_path):
    dup = write(tmp_path / "dup.yaml", GOOD.replace("site.smb.signing_policy", "windows.ntlm.no_lm_hash"))
    code = write(tmp_path / "code.yaml", GOOD.replace("site.spooler.disabled", "windows.backup.recent"))
    loaded = packset.load([tmp_path], None, catalog.taken()).loaded
    by = {lp.file: lp for lp in loaded}
    assert by[str(dup)].status == "rejected" and by[str(code)].status == "rejected"
    assert (f"{dup}:12: check 'windows.ntlm.no_lm_hash' is already declared by "
            "osiris_windows_baseline/packs/policies.yaml:") in by[str(dup)].errors[0]
    assert "'windows.backup.recent' is already declared by windows-baseline (code)" in by[str(code)].errors[0]


def test_a_directory_of_packs_loads_its_yaml_files_in_order(tmp_path):
    write(tmp_path / "b.yaml", GOOD)
    write(tmp_path / "a.yml", GOOD.replace("site.", "other."))
    (tmp_path / "notes.txt").write_text("not a pack")
    loaded = [lp for lp in packset.load([tmp_path], None, catalog.taken()).loaded if lp.origin == "site"]
    assert [lp.file for lp in loaded] == [str(tmp_path / "a.yml"), str(tmp_path / "b.yaml")]
    assert all(lp.status == "loaded" for lp in loaded)


# -- runbooks and rules follow the loaded packs -------------------------------------------------------------


def test_generic_runbooks_fix_exactly_the_pack_checks_that_name_them():
    site = parse(GOOD)
    runbooks = {r.id: r for r in catalog.runbooks([*catalog.shipped(), site])}
    set_value = runbooks["windows.registry.set_value"]
    assert set_value.fixes == ("site.smb.signing_policy",) and set_value.risk.value == "medium"
    assert set_value.params_schema["anyOf"] == [{"properties": {
        "path": {"const": "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\LanmanServer\\Parameters"},
        "name": {"const": "RequireSecuritySignature"}}}]
    assert "windows.registry.set_value" not in {r.id for r in catalog.RUNBOOKS}  # no shipped pack names it
    checks = {c.id: c for c in catalog.checks([*catalog.shipped(), site])}
    rules = load_rules([r for p in (*catalog.shipped(), site) for r in p.rules()], runbooks, checks)
    assert rules.match("site.smb.signing_policy", "dc", {}).model.action.params["value"] == 1
    # a value no pack check reads cannot be written through it
    from osiris.healing.rules import validate_params
    assert validate_params(set_value.params_schema, {"path": "HKLM:\\SOFTWARE\\Elsewhere", "name": "X",
                                                     "kind": "DWord", "value": 1})


def test_osiris_packs_check_validates_files_before_deployment(tmp_path):
    import click
    from click.testing import CliRunner

    from osiris_windows_baseline import plugin
    cli = click.Group("osiris")
    plugin.osiris_commands(cli)  # `osiris packs ...`
    good = write(tmp_path / "good.yaml", GOOD)
    bad = write(tmp_path / "bad.yaml", GOOD.replace("site.", "bad.").replace("type: service", "type: shell"))
    ok = CliRunner().invoke(cli, ["packs", "check", str(good)])
    assert ok.exit_code == 0 and ok.output == f"{good}: ok (2 checks, sha256 {hashlib.sha256(GOOD.encode()).hexdigest()})\n"
    both = CliRunner().invoke(cli, ["packs", "check", str(good), str(bad)])
    assert both.exit_code == 2 and f"osiris: {bad}:9: checks.0.probe: Input tag 'shell'" in both.output
    # the same pack twice: its ids are declared twice
    twice = CliRunner().invoke(cli, ["packs", "check", str(good), str(good)])
    assert twice.exit_code == 2 and f"is already declared by {good}:3" in twice.output


def test_scripts_only_a_site_pack_brings_in_parse_as_windows_powershell():
    """tests/test_powershell.py parses every script of the installed plugins
    with tree-sitter's grammar; the generic runbook exists only when a pack
    names it, so it is parsed here, with a pack that does."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("pslint_for_packs",
                                                  Path(__file__).resolve().parents[3] / "tests" / "pslint.py")
    pslint = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pslint)
    runbooks = {r.id: r for r in catalog.runbooks([parse(GOOD)])}
    assert pslint.problems(runbooks["windows.registry.set_value"].script) == []
    assert pslint.problems(runbooks["windows.registry.set_value"].script + "\n@{ a = (1 }\n") != []
