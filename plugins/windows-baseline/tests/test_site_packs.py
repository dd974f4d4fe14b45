"""A site's own check pack, end to end against the lab: configured in the
plugin's settings, its checks run through the windows executor on an
emulated host that has no emulation written for them (the lab emulates
each probe type once), `osiris checks` names the pack as their source,
their heal entries are L1 rules that heal them, a heal naming a runbook
nobody provides is an error at the pack's file and line, and the pack's
digest is in the evidence."""

from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from osiris import Status, budget
from osiris.app import load
from osiris.cli import cli
from osiris.engine import Engine
from osiris.evidence.log import EvidenceLog
from osiris.healing.ladder import Ladder
from osiris.runtime import Agent
from osiris.store import Store
from osiris_lab import Lab
from osiris_windows_baseline import packset

PLUGINS = "windows,windows-baseline"
FAST = {"connect_timeout": 10, "operation_timeout": 5, "retries": 1, "backoff": 0.05, "script_overhead": 5}
FILE_SHARE = "{0CCE9224-69AE-11D9-BED3-505054503030}"
POINT_AND_PRINT = "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows NT\\Printers\\PointAndPrint"
SITE_PACK = f"""\
description: Clinic policies beyond the baseline
checks:
  - id: site.printers.driver_install_admins_only
    title: Only administrators install printer drivers (PrintNightmare)
    hipaa: ['164.308(a)(5)(ii)(B)']
    cis: '18.4.6'
    roles: [workstation]
    severity: high
    interval: 1h
    probe:
      type: registry_value
      values:
        admins_only: {{path: '{POINT_AND_PRINT}', name: RestrictDriverInstallationToAdministrators}}
    expect:
      admins_only: {{eq: 1}}
    fail: users may install printer drivers
    heal:
      runbook: windows.registry.set_value
      params: {{path: '{POINT_AND_PRINT}', name: RestrictDriverInstallationToAdministrators, kind: DWord, value: 1}}
  - id: site.audit.file_share
    title: 'Audit policy: File Share (Success)'
    hipaa: ['164.312(b)']
    roles: [workstation]
    params: {{success: true, failure: false}}
    probe: {{type: audit_subcategory, guid: '{FILE_SHARE}', name: File Share}}
    expect:
      success: {{ge: {{param: success}}}}
      failure: {{ge: {{param: failure}}}}
    heal:
      id: site-audit-file-share
      runbook: windows.audit.enable_subcategory
      params: {{subcategory: '{FILE_SHARE}', success: true, failure: false}}
  - id: site.services.spooler_off
    title: The print spooler is off
    hipaa: ['164.308(a)(1)(ii)(B)']
    roles: [workstation]
    probe: {{type: service, name: Spooler, absent: {{status: Stopped, start_type: Disabled}}}}
    expect:
      start_type: {{eq: Disabled}}
"""
MINE = {"site.printers.driver_install_admins_only", "site.audit.file_share", "site.services.spooler_off"}
# where things are in SITE_PACK: the printers check's entry and heal entry, the audit check's
PRINTERS, PRINTERS_HEAL, FILE_SHARE_CHECK, FILE_SHARE_HEAL = 3, 17, 20, 29


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab([("ws01", "workstation")], workdir=tmp_path_factory.mktemp("lab"))
    with lab.running(control=True):
        yield lab


@pytest.fixture(autouse=True)
def _restore(lab):
    yield
    lab.reset()


def test_the_line_numbers_used_below_are_where_the_pack_says():
    lines = SITE_PACK.splitlines()
    assert lines[PRINTERS - 1].endswith("id: site.printers.driver_install_admins_only")
    assert lines[FILE_SHARE_CHECK - 1].endswith("id: site.audit.file_share")
    assert lines[PRINTERS_HEAL - 1] == lines[FILE_SHARE_HEAL - 1] == "    heal:"
    assert PRINTERS < PRINTERS_HEAL < FILE_SHARE_CHECK < FILE_SHARE_HEAL


def config(lab, tmp_path, packs, healing="off"):
    return {"state_dir": str(tmp_path / "state"), "agent": {"check_self": False, "http": {"enabled": False}},
            "secrets": {"files": {lab.credential_name: str(lab.credential_file)}},
            "targets": lab.targets("https"), "healing": {"mode": healing},
            "plugins": {"windows": FAST, "windows-baseline": {"packs": [str(p) for p in packs]}}}


def write_config(tmp_path, cfg):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture
def site_pack(tmp_path):
    path = tmp_path / "packs" / "clinic.yaml"
    path.parent.mkdir()
    path.write_text(SITE_PACK)
    return path


async def test_a_site_pack_runs_against_the_lab_and_heals_at_l1(lab, tmp_path, site_pack):
    loaded = load(config_data=config(lab, tmp_path, [site_pack.parent], "full"), environ={"OSIRIS_PLUGINS": PLUGINS})
    store = Store(loaded.ctx.state_dir)
    try:
        specs = {cid: c.spec for cid, c in loaded.registry.checks.items() if cid in MINE}
        assert {s.source.file for s in specs.values()} == {str(site_pack)}
        target = loaded.targets[0]
        observed = {o.check: o for o in await loaded.registry.executor("windows").observe(target, list(specs.values()),
                                                                               deadline=budget.after(300))}
        assert {c: o.status for c, o in observed.items()} == {
            "site.printers.driver_install_admins_only": Status.FAIL, "site.audit.file_share": Status.FAIL,
            "site.services.spooler_off": Status.PASS}, {c: o.reason for c, o in observed.items()}
        assert observed["site.printers.driver_install_admins_only"].reason == (
            "users may install printer drivers: RestrictDriverInstallationToAdministrators not set, expected 1")
        assert observed["site.services.spooler_off"].reason == \
            "the Spooler service is not installed, counted as stopped (Disabled)"
        # chaos on a service the lab has no setting of its own for: the pack's check sees it
        lab.set_setting("ws01", "services.other", {"spooler": {"start": "Automatic", "status": "Running"}})
        [spooler] = await loaded.registry.executor("windows").observe(target, [specs["site.services.spooler_off"]],
                                                                    deadline=budget.after(300))
        assert spooler.status is Status.FAIL and spooler.reason == "the Spooler service is start type Automatic"

        ladder = Ladder(loaded.ctx, loaded.pm, loaded.registry, store, loaded.config.healing, loaded.targets, [])
        engine = Engine(loaded.registry, store, loaded.targets, downstream=ladder)
        ladder.start()
        assert ladder.rule_errors == []
        by_check = {r.model.match.check: r for r in ladder.rules.rules}
        assert (by_check["site.audit.file_share"].file, by_check["site.audit.file_share"].line) == (str(site_pack), FILE_SHARE_HEAL)
        await engine.sweep(force=True, only_checks=MINE - {"site.services.spooler_off"})
        await ladder.drain()
        ended = {i.check_id: (i.outcome, i.tier, i.detail) for i in store.incidents(None)}
        assert ended["site.printers.driver_install_admins_only"][:2] == ("healed", "L1")
        assert "rule site.printers.driver_install_admins_only: runbook windows.registry.set_value verified" in \
            ended["site.printers.driver_install_admins_only"][2]
        assert ended["site.audit.file_share"][:2] == ("healed", "L1")
        state = lab.host("ws01").state
        assert state["registry.other"] == {
            (POINT_AND_PRINT + "\\RestrictDriverInstallationToAdministrators").lower(): 1}
        assert state["audit.other"] == {FILE_SHARE.lower(): "Success"}
    finally:
        store.close()
        loaded.ctx.close()


def test_osiris_checks_and_rules_name_the_pack(lab, tmp_path, site_pack):
    env = {"OSIRIS_PLUGINS": PLUGINS, "OSIRIS_CONFIG": None}
    cfg = write_config(tmp_path, config(lab, tmp_path, [site_pack]))
    listed = CliRunner(env=env).invoke(cli, ["-c", str(cfg), "checks"], catch_exceptions=False).output
    rows = {line.split()[0]: line.split()[1] for line in listed.splitlines()[1:] if line.strip()}
    assert rows["site.printers.driver_install_admins_only"] == f"{site_pack}:{PRINTERS}"
    assert rows["windows.audit.logon"].startswith("osiris_windows_baseline/packs/audit.yaml:")
    assert rows["windows.backup.recent"] == "windows-baseline"  # declared in code
    rules = CliRunner(env=env).invoke(cli, ["-c", str(cfg), "rules", "list"], catch_exceptions=False)
    assert rules.exit_code == 0, rules.output
    assert f"{site_pack}:{FILE_SHARE_HEAL}" in rules.output and "site-audit-file-share" in rules.output

    # a heal entry naming a runbook no plugin provides: the error names the pack's file and line
    site_pack.write_text(SITE_PACK.replace("runbook: windows.registry.set_value", "runbook: windows.registry.set"))
    rules = CliRunner(env=env).invoke(cli, ["-c", str(cfg), "rules", "list"], catch_exceptions=False)
    assert rules.exit_code == 2
    assert (f"{site_pack}:{PRINTERS_HEAL}: rule 'site.printers.driver_install_admins_only': action.runbook "
            "'windows.registry.set' is not provided by any installed plugin") in rules.output


async def test_pack_digests_are_in_the_evidence(lab, tmp_path, site_pack):
    loaded = load(config_data=config(lab, tmp_path, [site_pack]), environ={"OSIRIS_PLUGINS": PLUGINS})
    await Agent(loaded).run(once=True)
    log = EvidenceLog(tmp_path / "state" / "evidence" / "log.sqlite3", create=False)
    bundles = [json.loads(e.body) for e in log.iter_entries()]
    [packs] = [b["payload"]["packs"] for b in bundles if b["kind"] == "check_packs"]
    digest = hashlib.sha256(site_pack.read_bytes()).hexdigest()
    site = next(p for p in packs if p["origin"] == "site")
    assert site == {"file": str(site_pack), "origin": "site", "status": "loaded", "sha256": digest,
                    "checks": sorted(MINE, key=SITE_PACK.index), "errors": []}
    shipped = {p["file"]: p for p in packs if p["origin"] == "shipped"}
    assert set(shipped) == {name for name, _path in packset.shipped_files()}
    assert all(p["status"] == "loaded" and len(p["sha256"]) == 64 for p in shipped.values())
    # each sweep names the pack (and its digest) behind every verdict it records
    [sweep] = [b for b in bundles if b["kind"] == "sweep"]
    policy = sweep["policy"]["checks"]
    assert policy["site.audit.file_share"]["source"] == {"file": str(site_pack), "line": FILE_SHARE_CHECK, "sha256": digest}
    assert policy["windows.audit.logon"]["source"]["sha256"] == \
        shipped["osiris_windows_baseline/packs/audit.yaml"]["sha256"]
    assert "source" not in policy["windows.firewall.logging"]  # declared in code
    # the agent kept each pack as its last good copy, private to it
    kept = sorted((tmp_path / "state" / "windows-baseline" / "packs").iterdir())
    assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in kept) == sorted(p["sha256"] for p in packs)
    assert all(p.stat().st_mode & 0o077 == 0 for p in kept)

    # the pack breaks: the next start keeps its checks from the last good copy, and says so
    site_pack.write_text(SITE_PACK.replace("type: service", "type: shell"))
    again = load(config_data=config(lab, tmp_path, [site_pack]), environ={"OSIRIS_PLUGINS": PLUGINS})
    try:
        specs = {cid: c.spec for cid, c in again.registry.checks.items() if cid in MINE}
        assert set(specs) == MINE and {s.source.sha256 for s in specs.values()} == {digest}
        from osiris_windows_baseline import plugin
        [site] = [p for p in plugin.packs(again.ctx).evidence()["packs"] if p["origin"] == "site"]
        assert site["status"] == "last_good" and site["sha256"] == digest
        assert site["errors"][0].startswith(f"{site_pack}:") and "Input tag 'shell'" in site["errors"][0]
    finally:
        again.ctx.close()
