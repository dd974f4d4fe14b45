"""The catalogue: what the plugin contributes, how its fragments are
written, its default rules; loaded the way the agent loads plugins."""

from __future__ import annotations

import json
import re

import pytest

from osiris import Risk
from osiris.app import load
from osiris.healing.rules import load_rules, parse_file
from osiris_windows import script
from osiris_windows_baseline import catalog, plugin, policies
from osiris_windows_baseline.common import NOTES
from osiris_windows_baseline.ps import lit, read_registry

CHECKS = {c.id: c for c in catalog.CHECKS}
RUNBOOKS = {r.id: r for r in catalog.RUNBOOKS}

# Checks that have no runbook on purpose (the reason is in their description).
NO_RUNBOOK = {
    "windows.defender.tamper_protection", "windows.updates.recent_install", "windows.updates.pending_security",
    "windows.updates.reboot_pending", "windows.backup.recent", "windows.winrm.service_no_basic",
    "windows.bitlocker.data_volumes_encrypted",
}
# Runbooks whose change could touch the appliance's own access: each says how the management path stays open.
MANAGEMENT = {
    "windows.firewall.block_inbound_by_default", "windows.services.restore_firewall",
    "windows.winrm.disallow_unencrypted",
    "windows.winrm.harden_client", "windows.tls.disable_legacy_protocols", "windows.uac.enable",
    "windows.accounts.remove_admin_members", "windows.accounts.set_lockout_policy", "windows.ntlm.set_lm_compatibility",
    "windows.dns.set_servers", "windows.network.disable_netbios",
}
CITATION_PREFIXES = ("164.308(a)", "164.310(d)", "164.312(")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    loaded = load(config_data={"state_dir": str(tmp_path_factory.mktemp("state"))},
                  environ={"OSIRIS_PLUGINS": "windows,windows-baseline"})
    yield loaded
    loaded.ctx.close()


def test_at_least_thirty_checks_and_their_runbooks_load_through_the_agent(loaded):
    mine = {cid for cid, c in loaded.registry.checks.items() if c.plugin == "windows-baseline"}
    assert mine == set(CHECKS) and len(mine) >= 30
    assert {rid for rid, r in loaded.registry.runbooks.items() if r.plugin == "windows-baseline"} == set(RUNBOOKS)
    # no collision with the windows plugin's own checks: both load side by side
    assert "windows.firewall.profiles_enabled" in loaded.registry.checks


def test_osiris_plugins_and_checks_list_the_baseline(tmp_path):
    from click.testing import CliRunner

    from osiris.cli import cli
    env = {"OSIRIS_PLUGINS": "windows,windows-baseline", "OSIRIS_STATE_DIR": str(tmp_path), "OSIRIS_CONFIG": None}
    plugins = json.loads(CliRunner(env=env).invoke(cli, ["plugins", "--format", "json"]).output)
    mine = next(p for p in plugins if p["name"] == "windows-baseline")
    assert mine["distribution"] == "osiris-windows-baseline"
    assert {"osiris_checks", "osiris_runbooks", "osiris_rules"} <= set(mine["hooks"])
    listed = json.loads(CliRunner(env=env).invoke(cli, ["checks", "--format", "json"]).output)
    baseline = [c for c in listed if c["plugin"] == "windows-baseline"]
    assert len(baseline) == len(CHECKS) >= 30 and all(c["hipaa"] for c in baseline)


def test_every_check_is_described_cited_and_scoped():
    titles = set()
    for cid, c in CHECKS.items():
        assert re.fullmatch(r"windows\.[a-z0-9_]+\.[a-z0-9_]+", cid), cid
        assert c.target_kind == "windows" and c.roles and c.roles <= {"dc", "server", "workstation"}, cid
        assert c.hipaa and all(h.startswith(CITATION_PREFIXES) for h in c.hipaa), cid
        assert "|" not in c.title and c.title not in titles, cid  # a row of docs/hipaa-mapping.md
        titles.add(c.title)
        assert 60 <= c.interval <= 86400 and 5 <= c.timeout <= 300, cid
        json.dumps(c.params)  # data, overridable per site
        assert NOTES[cid].reads and NOTES[cid].context, cid


def test_citations_are_chosen_per_check():
    assert CHECKS["windows.session.rdp_idle_limit"].hipaa == ("164.312(a)(2)(iii)",)
    assert "164.308(a)(5)(ii)(C)" in CHECKS["windows.audit.logon"].hipaa
    assert "164.308(a)(5)(ii)(C)" not in CHECKS["windows.audit.process_creation"].hipaa
    assert "164.308(a)(7)(ii)(A)" in CHECKS["windows.backup.recent"].hipaa
    assert "164.312(a)(2)(iv)" in CHECKS["windows.media.removable_storage"].hipaa
    assert len({c.hipaa for c in CHECKS.values()}) >= 25


def test_runbooks_fix_baseline_checks_and_every_healable_check_has_one():
    fixed = set()
    for rid, r in RUNBOOKS.items():
        assert set(r.fixes) <= set(CHECKS), rid
        assert r.params_schema["type"] == "object" and r.params_schema["additionalProperties"] is False, rid
        assert 10 <= r.timeout <= 300 and r.description, rid
        fixed |= set(r.fixes)
    assert set(CHECKS) - fixed == NO_RUNBOOK
    for cid in NO_RUNBOOK:
        doc = CHECKS[cid].description
        assert "No runbook" in doc or "no runbook" in doc.lower(), cid


def test_runbooks_that_touch_the_management_path_say_how_it_stays_open():
    for rid in MANAGEMENT:
        assert "Management path: " in RUNBOOKS[rid].description, rid
    assert "Osiris-Management-WinRM" in RUNBOOKS["windows.firewall.block_inbound_by_default"].description
    assert "refuses" in RUNBOOKS["windows.services.restore_firewall"].description


@pytest.mark.parametrize("kind,spec", [("check", c) for c in catalog.CHECKS]
                         + [("runbook", r) for r in catalog.RUNBOOKS],
                         ids=lambda x: x if isinstance(x, str) else x.id)
def test_fragments_are_units_the_executor_accepts(kind, spec):
    """Their grammar and Windows PowerShell 5.1 rules: tests/test_powershell.py."""
    unit = script.unit(kind, spec.id, spec.script)  # marker line, embeddable in the batch
    assert unit.version == 1


def test_parameters_reach_fragments_as_data_under_names_that_exist():
    """Fragments read parameters from $P at run time (the executor passes
    them as one base64 JSON value); every $P.<name> a fragment reads must
    be a parameter the check has, or one its runbook's schema requires."""
    for cid, c in CHECKS.items():
        used = set(re.findall(r"\$P\.([A-Za-z_]+)", c.script))
        assert used <= set(c.params), f"{cid}: reads {used - set(c.params)} that its params lack"
    for rid, r in RUNBOOKS.items():
        used = set(re.findall(r"\$P\.([A-Za-z_]+)", r.script))
        assert used <= set(r.params_schema.get("required", [])), f"{rid}: reads {used} beyond its required params"
        assert set(r.params_schema.get("required", [])) <= used, f"{rid}: requires params it never reads"
    assert "$P.logs" in CHECKS["windows.eventlog.security_log"].script
    # generated fragments accept only our own safe literals
    with pytest.raises(ValueError):
        lit("a'; Remove-Item C:\\ -Recurse; '")
    with pytest.raises(ValueError):
        read_registry("windows.x.y", [policies.RegValue("HKLM:\\A\nB", "n")])


def test_batch_of_every_check_fits_one_round_trip():
    units = tuple(script.unit("check", c.id, c.script) for c in catalog.CHECKS)
    env = script.environment(script.compose(units), script.encode_params(
        units, {c.id: c.params for c in catalog.CHECKS}, {c.id: c.timeout for c in catalog.CHECKS}))
    assert script.envelope_bytes(env) < 150 * 1024  # the executor's default max_envelope_kb


def test_default_rules_load_and_cover_every_low_risk_runbook(loaded):
    # the rule file, and the heal entries of the shipped packs
    rules = load_rules(plugin.osiris_rules(loaded.ctx), loaded.registry.runbooks, loaded.registry.checks)
    used = {r.model.action.runbook for r in rules.rules}
    low = {rid for rid, r in RUNBOOKS.items() if r.risk is Risk.LOW}
    assert used == low
    for r in rules.rules:
        assert RUNBOOKS[r.model.action.runbook].risk is Risk.LOW and r.model.mode is None
    by_check = {r.model.match.check: r for r in rules.rules}
    audit_checks = [c for c in CHECKS.values() if "guid" in c.params.get("probe", {})]
    assert {c.id for c in audit_checks} == {c.id for c in catalog.CHECKS if c.source is not None
                                            and c.source.file.endswith("/audit.yaml")}
    for c in audit_checks:  # each audit check turns on exactly what it requires
        assert by_check[c.id].model.action.params_for(c.params) == {
            "subcategory": c.params["probe"]["guid"], "success": c.params["success"], "failure": c.params["failure"]}
    roles = {tuple(r.model.match.roles): r.model.action.params["au_option"] for r in parse_file(plugin.RULES)
             if r.model.match.check == "windows.updates.automatic"}
    assert roles == {("workstation",): 4, ("dc", "server"): 3}


def test_the_plugin_module_does_not_import_the_lab():
    import subprocess
    import sys
    code = ("import sys, osiris_windows_baseline.plugin; "
            "print(sorted(m for m in sys.modules if m.startswith('osiris_lab') or m.endswith('.lab')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_docs_catalogue_is_current_and_names_everything():
    from pathlib import Path

    from osiris_windows_baseline.docs import splice
    doc_path = Path(__file__).resolve().parents[3] / "docs" / "windows-baseline.md"
    doc = doc_path.read_text()
    assert splice(doc) == doc, "docs/windows-baseline.md is stale: python -m osiris_windows_baseline.docs " \
                               "docs/windows-baseline.md"
    for name in [*CHECKS, *RUNBOOKS]:
        assert f"`{name}`" in doc, name
