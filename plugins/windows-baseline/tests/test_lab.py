"""End to end against a 3-host lab practice (real HTTPS, the real pywinrm
client, the windows executor): `osiris check` reports what the lab's state
says; breaking one setting through the chaos API flips exactly its check;
the check's runbook flips it back; running the runbook again changes
nothing; the shipped L1 rules heal low-risk drift through the ladder."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from osiris import Status
from osiris import budget
from osiris.app import load
from osiris.cli import cli
from osiris.engine import Engine
from osiris.healing.ladder import Ladder
from osiris.healing.rules import parse_file
from osiris.store import Store
from osiris_lab import Lab
from osiris_windows_baseline import catalog
from osiris_windows_baseline import plugin as baseline_plugin
from osiris_windows_baseline.lab import model

PLUGINS = "windows,windows-baseline"
HOSTS = [("dc01", "dc"), ("srv01", "server"), ("ws01", "workstation")]
# Quick retries, but timeouts that hundreds of healthy round trips on a loaded
# machine do not reach by accident (a Receive holds at most the 5 s
# OperationTimeout; the HTTP read timeout is then 9 s).
FAST = {"connect_timeout": 10, "operation_timeout": 5, "retries": 1, "backoff": 0.05, "script_overhead": 5}
MINE = {c.id for c in catalog.CHECKS}

# The default mix of the lab practice (docs/windows-baseline.md): every other
# applicable check passes.
FAILING = {
    "dc01": {"windows.defender.tamper_protection", "windows.network.netbios_disabled",
             "windows.winrm.service_no_basic"},
    "srv01": {
        "windows.accounts.local_admins", "windows.accounts.lockout", "windows.accounts.password_age",
        "windows.bitlocker.data_volumes_encrypted", "windows.audit.process_command_line",
        "windows.audit.process_creation", "windows.audit.removable_storage",
        "windows.backup.recent", "windows.defender.exclusions", "windows.defender.pua_protection",
        "windows.defender.tamper_protection", "windows.persistence.scheduled_tasks", "windows.rdp.encryption",
        "windows.rdp.nla_required", "windows.services.windows_update", "windows.session.rdp_idle_limit",
        "windows.smb.server_signing", "windows.smb.v1_client_disabled", "windows.time.synchronized",
        "windows.tls.legacy_protocols_disabled", "windows.updates.pending_security", "windows.updates.recent_install",
        "windows.winrm.client_hardened", "windows.winrm.service_no_basic",
    },
    "ws01": {
        "windows.accounts.anonymous_restrictions", "windows.accounts.local_admins", "windows.accounts.lockout",
        "windows.accounts.password_length", "windows.audit.account_lockout", "windows.audit.credential_validation",
        "windows.audit.powershell_script_blocks", "windows.audit.process_command_line",
        "windows.audit.process_creation", "windows.audit.removable_storage", "windows.audit.security_system_extension",
        "windows.audit.sensitive_privilege_use", "windows.audit.subcategory_override",
        "windows.audit.user_account_management", "windows.dns.servers_allowlist", "windows.eventlog.security_log",
        "windows.eventlog.system_logs", "windows.firewall.logging", "windows.media.autorun_disabled",
        "windows.network.llmnr_disabled", "windows.network.netbios_disabled", "windows.ntlm.lm_compatibility",
        "windows.session.cached_logons", "windows.smb.client_signing", "windows.smb.server_signing",
        "windows.winrm.client_hardened", "windows.winrm.service_no_basic",
    },
}

ALL_PROFILES = ["Domain", "Private", "Public"]
NO_PARAMS: dict = {}

# check -> (host where it passes by default, setting chaos breaks, runbook or None, runbook params)
DRIFT = {
    "windows.firewall.default_inbound_block": ("ws01", "firewall.public.default_inbound",
                                               "windows.firewall.block_inbound_by_default",
                                               {"profiles": ALL_PROFILES, "management_addresses": ["Any"],
                                                "winrm_ports": [5985, 5986]}),
    "windows.firewall.logging": ("srv01", "firewall.domain.log_blocked", "windows.firewall.enable_logging",
                                 {"profiles": ALL_PROFILES, "min_size_kb": 16384}),
    "windows.defender.tamper_protection": ("ws01", "defender.tamper_protected", None, None),
    "windows.defender.pua_protection": ("ws01", "defender.pua_protection", "windows.defender.enable_pua_protection",
                                        NO_PARAMS),
    "windows.defender.exclusions": ("dc01", "defender.exclusions.paths", "windows.defender.remove_exclusions",
                                    {"allowed_paths": [], "allowed_extensions": [], "allowed_processes": []}),
    "windows.bitlocker.data_volumes_encrypted": ("dc01", "bitlocker.data_volumes", None, None),
    "windows.updates.recent_install": ("dc01", "updates.last_install_days_ago", None, None),
    "windows.updates.pending_security": ("dc01", "updates.pending", None, None),
    "windows.updates.reboot_pending": ("srv01", "updates.reboot_pending", None, None),
    "windows.accounts.password_length": ("dc01", "accounts.policy.min_length", "windows.accounts.set_password_policy",
                                         {"min_length": 14, "history": 24, "max_age_days": 365, "min_age_days": 1}),
    "windows.accounts.password_history": ("srv01", "accounts.policy.history", "windows.accounts.set_password_policy",
                                          {"min_length": 14, "history": 24, "max_age_days": 365, "min_age_days": 1}),
    "windows.accounts.password_age": ("dc01", "accounts.policy.min_age_days", "windows.accounts.set_password_policy",
                                      {"min_length": 14, "history": 24, "max_age_days": 365, "min_age_days": 1}),
    "windows.accounts.password_complexity": ("dc01", "accounts.policy.complexity",
                                             "windows.accounts.set_password_policy",
                                             {"min_length": 12, "history": 12, "max_age_days": 365, "min_age_days": 1}),
    "windows.accounts.lockout": ("dc01", "accounts.policy.lockout_threshold", "windows.accounts.set_lockout_policy",
                                 {"threshold": 5, "duration_minutes": 15, "window_minutes": 15}),
    "windows.accounts.guest_disabled": ("ws01", "accounts.guest_enabled", "windows.accounts.disable_guest", NO_PARAMS),
    "windows.accounts.local_admins": ("dc01", "accounts.admins", "windows.accounts.remove_admin_members",
                                      {"members": [model.DOMAIN_SID + "-1180", model.APPLIANCE_SID]}),
    "windows.eventlog.security_log": ("srv01", "eventlog.security.mode", "windows.eventlog.configure",
                                      {"logs": ["Security"], "min_size_kb": 196608, "mode": "Circular"}),
    "windows.eventlog.system_logs": ("dc01", "eventlog.system.max_kb", "windows.eventlog.configure",
                                     {"logs": ["Application", "System"], "min_size_kb": 32768, "mode": "Circular"}),
    "windows.smb.server_signing": ("dc01", "smb.server.require_signing", "windows.smb.require_server_signing",
                                   NO_PARAMS),
    "windows.smb.client_signing": ("srv01", "smb.client.require_signing", "windows.smb.require_client_signing",
                                   NO_PARAMS),
    "windows.smb.v1_client_disabled": ("ws01", "smb.client.smb1_driver_start", "windows.smb.disable_v1_client",
                                       NO_PARAMS),
    "windows.network.netbios_disabled": ("srv01", "network.netbios_options", "windows.network.disable_netbios",
                                         NO_PARAMS),
    "windows.dns.servers_allowlist": ("srv01", "dns.servers", "windows.dns.set_servers", {"servers": ["10.20.0.10"]}),
    "windows.network.llmnr_disabled": ("srv01", "policy.llmnr.enable_multicast", "windows.network.disable_llmnr",
                                       NO_PARAMS),
    "windows.ntlm.lm_compatibility": ("srv01", "policy.lsa.lm_compatibility_level", "windows.ntlm.set_lm_compatibility",
                                      {"level": 5}),
    "windows.ntlm.no_lm_hash": ("ws01", "policy.lsa.no_lm_hash", "windows.ntlm.disable_lm_hash", NO_PARAMS),
    "windows.accounts.blank_password_console_only": ("ws01", "policy.lsa.limit_blank_password_use",
                                                     "windows.accounts.restrict_blank_passwords", NO_PARAMS),
    "windows.accounts.anonymous_restrictions": ("srv01", "policy.lsa.restrict_anonymous_sam",
                                                "windows.accounts.restrict_anonymous", NO_PARAMS),
    "windows.lsa.wdigest_disabled": ("ws01", "policy.wdigest.use_logon_credential", "windows.lsa.disable_wdigest",
                                     NO_PARAMS),
    "windows.uac.admin_approval": ("ws01", "policy.uac.enable_lua", "windows.uac.enable", {"admin_prompt": 2}),
    "windows.audit.subcategory_override": ("srv01", "policy.audit.sce_no_apply_legacy",
                                           "windows.audit.force_subcategory_override", NO_PARAMS),
    "windows.audit.powershell_script_blocks": ("srv01", "policy.powershell.script_block_logging",
                                               "windows.audit.enable_script_block_logging", NO_PARAMS),
    "windows.audit.process_command_line": ("dc01", "policy.audit.command_line", "windows.audit.enable_command_line",
                                           NO_PARAMS),
    "windows.rdp.nla_required": ("dc01", "rdp.listener.user_authentication", "windows.rdp.require_nla", NO_PARAMS),
    "windows.rdp.encryption": ("dc01", "rdp.policy.security_layer", "windows.rdp.require_tls_high", NO_PARAMS),
    "windows.session.rdp_idle_limit": ("dc01", "rdp.policy.max_idle_ms", "windows.session.set_rdp_idle_limit",
                                       {"minutes": 15}),
    "windows.session.cached_logons": ("srv01", "policy.winlogon.cached_logons_count",
                                      "windows.session.limit_cached_logons", {"count": 4}),
    "windows.media.autorun_disabled": ("srv01", "policy.autorun.no_autorun", "windows.media.disable_autorun",
                                       NO_PARAMS),
    "windows.media.removable_storage": ("ws01", "policy.storage.bitlocker_to_go_required",
                                        "windows.media.deny_removable_write", NO_PARAMS),
    "windows.updates.automatic": ("ws01", "policy.wu.no_auto_update", "windows.updates.enable_automatic",
                                  {"au_option": 4}),
    "windows.tls.legacy_protocols_disabled": ("dc01", "tls.tls_1_0.server.enabled",
                                              "windows.tls.disable_legacy_protocols", NO_PARAMS),
    "windows.time.synchronized": ("ws01", "time.source", "windows.time.configure_sync",
                                  {"ntp_servers": "time.windows.com,0x8"}),
    "windows.services.windows_update": ("dc01", "services.wuauserv.start", "windows.services.restore",
                                        {"service": "wuauserv"}),
    "windows.services.event_log": ("ws01", "services.EventLog.status", "windows.services.restore",
                                   {"service": "EventLog"}),
    "windows.services.defender": ("srv01", "services.WinDefend.start", "windows.services.restore",
                                  {"service": "WinDefend"}),
    "windows.services.firewall": ("srv01", "services.mpssvc.status", "windows.services.restore_firewall", NO_PARAMS),
    "windows.backup.recent": ("dc01", "backup.last_success_hours_ago", None, None),
    "windows.persistence.scheduled_tasks": ("ws01", "persistence.tasks", "windows.persistence.disable_task",
                                            {"path": "\\Updater"}),
    "windows.persistence.run_keys": ("dc01", "persistence.run", "windows.persistence.remove_run_value",
                                     {"key": "run", "name": "WindowsUpdater"}),
    "windows.winrm.service_encrypted": ("ws01", "winrm.service.allow_unencrypted", "windows.winrm.disallow_unencrypted",
                                        NO_PARAMS),
    "windows.winrm.client_hardened": ("dc01", "winrm.client.basic", "windows.winrm.harden_client", NO_PARAMS),
}
for _c in catalog.CHECKS:  # the audit pack's checks: one setting per subcategory
    if _c.params.get("probe", {}).get("guid"):
        _key = _c.id.removeprefix("windows.audit.")
        DRIFT[_c.id] = ("dc01" if _c.roles == {"dc"} or _key in ("process_creation", "removable_storage")
                        else "srv01", f"audit.{_key}", "windows.audit.enable_subcategory",
                        {"subcategory": _c.params["probe"]["guid"], "success": _c.params["success"],
                         "failure": _c.params["failure"]})
# The lab's WinRM listeners accept Basic (the executor's default for local
# accounts), so the model says Basic is on everywhere: nothing to break.
UNBREAKABLE = {"windows.winrm.service_no_basic"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(HOSTS, workdir=tmp_path_factory.mktemp("lab"))
    with lab.running(control=True):
        yield lab


@pytest.fixture(autouse=True)
def _restore(lab):
    yield
    lab.reset()


def config(lab, state, healing=None):
    return {"state_dir": str(state), "agent": {"check_self": False, "http": {"enabled": False}},
            "secrets": {"files": {lab.credential_name: str(lab.credential_file)}},
            "targets": lab.targets("https"), "healing": healing or {"mode": "off"},
            "plugins": {"windows": FAST}}


@pytest.fixture(scope="module")
def agent(lab, tmp_path_factory):
    loaded = load(config_data=config(lab, tmp_path_factory.mktemp("state")), environ={"OSIRIS_PLUGINS": PLUGINS})
    yield loaded
    loaded.ctx.close()


async def observe(agent, host, only=None):
    target = next(t for t in agent.targets if t.name == host)
    checks = [c for c in agent.registry.checks_for(target) if only is None or c.id in only]
    observations = await agent.registry.executor("windows").observe(target, checks, deadline=budget.after(300))
    return {o.check: o for o in observations}


def test_the_drift_table_covers_every_check():
    assert set(DRIFT) | UNBREAKABLE == MINE
    assert {rb for _h, _s, rb, _p in DRIFT.values() if rb} == {r.id for r in catalog.RUNBOOKS}


def test_osiris_check_reports_the_lab_practice(lab, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config(lab, tmp_path / "state")))
    result = CliRunner(env={"OSIRIS_PLUGINS": PLUGINS, "OSIRIS_CONFIG": None}).invoke(
        cli, ["-c", str(path), "check", "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 1, result.output  # some checks fail
    got = json.loads(result.output)
    assert {o["status"] for o in got} == {"pass", "fail"}  # nothing unreadable
    doc = (Path(__file__).resolve().parents[3] / "docs" / "windows-baseline.md").read_text()
    for host, _role in HOSTS:
        mine = {o["check"]: o for o in got if o["target"] == host and o["check"] in MINE}
        failing = {c for c, o in mine.items() if o["status"] == "fail"}
        assert failing == FAILING[host], host
        assert all(o["facts"] for o in mine.values())  # facts kept with every verdict
        # the documented mix (docs/windows-baseline.md, "The lab") is this one
        assert f"| {len(mine)} | {len(mine) - len(failing)} | {len(failing)} |" in doc, host
    applicable = {(o["target"], o["check"]) for o in got}
    assert ("dc01", "windows.audit.kerberos_authentication") in applicable
    assert ("ws01", "windows.backup.recent") not in applicable
    assert ("dc01", "windows.session.cached_logons") not in applicable
    assert lab.password not in result.output  # the WinRM secret never reaches facts or reasons
    by = {(o["target"], o["check"]): o for o in got}
    assert by[("srv01", "windows.accounts.local_admins")]["facts"]["method"] == "adsi"  # the orphaned-SID fallback
    assert "secedit" == by[("ws01", "windows.accounts.password_length")]["facts"]["source"]
    assert "ad" == by[("dc01", "windows.accounts.password_length")]["facts"]["source"]


async def test_site_parameters_override_the_defaults(lab, tmp_path):
    """checks.<id>.params in the config, merged over the check's own."""
    cfg = config(lab, tmp_path / "state")
    cfg["checks"] = {
        "windows.dns.servers_allowlist": {"params": {"allowed": ["10.20.0.10/32", "8.8.8.8/32", "fec0::/10"]}},
        "windows.accounts.local_admins": {"params": {"allowed": ["S-1-5-21-*-500"]}},
        "windows.accounts.password_length": {"params": {"min_length": 8}},
    }
    loaded = load(config_data=cfg, environ={"OSIRIS_PLUGINS": PLUGINS})
    try:
        ws = await observe(loaded, "ws01", set(cfg["checks"]))
        dc = await observe(loaded, "dc01", set(cfg["checks"]))
    finally:
        loaded.ctx.close()
    assert ws["windows.dns.servers_allowlist"].status is Status.PASS  # 8.8.8.8 allowed for this site
    assert ws["windows.accounts.password_length"].status is Status.PASS  # 8 characters suffice here
    assert dc["windows.accounts.local_admins"].status is Status.FAIL
    assert "LAB\\Domain Admins" in dc["windows.accounts.local_admins"].reason
    assert loaded.registry.checks["windows.dns.servers_allowlist"].spec.params == \
        {"allowed": ["10.20.0.10/32", "8.8.8.8/32", "fec0::/10"]}


def _break(lab, host, setting):
    """Through the chaos HTTP API, as a lab in another process is driven."""
    url = f"{lab.summary()['control']}/hosts/{host}/break"
    req = urllib.request.Request(url, data=json.dumps({"setting": setting}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert json.load(resp)["ok"] is True


def _no_change(output):
    for key in ("changed", "removed"):
        if key in output:
            value = output[key]
            return not value or (isinstance(value, dict) and not any(value.values()))
    return "removed_program" in output and output["removed_program"] is None


async def _drift_cases(lab, agent, host, cases, baseline):
    executor = agent.registry.executor("windows")
    target = next(t for t in agent.targets if t.name == host)
    runbooks = {r.id: r for r in catalog.RUNBOOKS}
    for check_id, (setting, runbook_id, params) in cases.items():
        lab.restore(host)
        await asyncio.to_thread(_break, lab, host, setting)
        after = await observe(agent, host)
        flipped = {c for c, o in after.items() if o.status != baseline[c].status}
        assert flipped == {check_id}, (host, setting, flipped)
        assert after[check_id].status is Status.FAIL
        if runbook_id is None:
            continue
        broken = lab.host(host).state.snapshot()
        first = await executor.run_runbook(target, runbooks[runbook_id], params, deadline=budget.after(300))
        assert first.ok, (check_id, first.detail)
        assert lab.host(host).state.snapshot() != broken, runbook_id
        healed = await observe(agent, host, {check_id})
        assert healed[check_id].status is Status.PASS, (check_id, healed[check_id].reason)
        state = lab.host(host).state.snapshot()
        second = await executor.run_runbook(target, runbooks[runbook_id], params, deadline=budget.after(300))
        assert second.ok and lab.host(host).state.snapshot() == state, runbook_id
        assert _no_change(second.output), (runbook_id, second.output)
    lab.restore(host)


async def test_chaos_flips_exactly_its_check_and_the_runbook_flips_it_back_once(lab, agent):
    baselines = dict(zip([h for h, _ in HOSTS], await asyncio.gather(*(observe(agent, h) for h, _ in HOSTS))))
    for host, checks in baselines.items():
        assert {c for c, o in checks.items() if o.status is Status.FAIL and c in MINE} == FAILING[host]
    by_host: dict[str, dict] = {}
    for check_id, (host, setting, runbook_id, params) in DRIFT.items():
        assert baselines[host][check_id].status is Status.PASS, (check_id, host)
        by_host.setdefault(host, {})[check_id] = (setting, runbook_id, params)
    await asyncio.gather(*(_drift_cases(lab, agent, h, cases, baselines[h]) for h, cases in by_host.items()))


async def test_runbooks_refuse_where_they_would_cut_the_appliance_off(lab, agent):
    executor = agent.registry.executor("windows")
    targets = {t.name: t for t in agent.targets}
    runbooks = {r.id: r for r in catalog.RUNBOOKS}
    lab.set_setting("dc01", "firewall.public.allow_local_rules", False)
    lab.set_setting("dc01", "firewall.public.default_inbound", "Allow")
    r = await executor.run_runbook(targets["dc01"], runbooks["windows.firewall.block_inbound_by_default"],
                                   {"profiles": ALL_PROFILES, "management_addresses": ["10.20.0.5"],
                                    "winrm_ports": [5986]}, deadline=budget.after(300))
    assert not r.ok and "a GPO makes Windows ignore local allow rules" in r.detail
    assert lab.host("dc01").state["firewall.public.default_inbound"] == "Allow"
    lab.set_setting("srv01", "firewall.winrm_rule_active", False)
    lab.break_setting("srv01", "services.mpssvc.status")
    r = await executor.run_runbook(targets["srv01"], runbooks["windows.services.restore_firewall"], {}, deadline=budget.after(300))
    assert not r.ok and "could cut the appliance off" in r.detail
    lab.set_setting("ws01", "tls.tls_1_2.server.enabled", 0)
    r = await executor.run_runbook(targets["ws01"], runbooks["windows.tls.disable_legacy_protocols"], {}, deadline=budget.after(300))
    assert not r.ok and "TLS 1.2 (server) is disabled" in r.detail
    before = lab.host("dc01").state.snapshot()
    r = await executor.run_runbook(targets["dc01"], runbooks["windows.accounts.remove_admin_members"],
                                   {"members": [model.APPLIANCE_SID, model.DOMAIN_ADMINS]}, deadline=budget.after(300))
    assert r.ok and r.output["removed"] == [] and len(r.output["kept"]) == 2
    assert lab.host("dc01").state.snapshot() == before


async def test_shipped_rules_heal_low_risk_drift_and_leave_the_rest_to_escalation(lab, tmp_path):
    loaded = load(config_data=config(lab, tmp_path / "state", {"mode": "standard"}),
                  environ={"OSIRIS_PLUGINS": PLUGINS})
    store = Store(loaded.ctx.state_dir)
    try:
        ladder = Ladder(loaded.ctx, loaded.pm, loaded.registry, store, loaded.config.healing, loaded.targets, [])
        engine = Engine(loaded.registry, store, loaded.targets, downstream=ladder)
        ladder.start()
        # Every shipped rule is in force, nothing else (no count to keep in step): the rule file's, and the
        # heal entries of the shipped check packs.
        assert not ladder.rule_errors
        assert {r.id for r in ladder.rules.rules} == {r.id for r in parse_file(baseline_plugin.RULES)} | {
            r.rule["id"] for p in catalog.shipped() for r in p.rules()}
        lab.break_setting("dc01", "policy.llmnr.enable_multicast")  # low risk: a shipped rule
        lab.break_setting("dc01", "policy.lsa.lm_compatibility_level")  # medium risk: no default rule
        checks = {"windows.network.llmnr_disabled", "windows.ntlm.lm_compatibility"}
        await engine.sweep(force=True, only_targets={"dc01"}, only_checks=checks)
        await ladder.drain()
        ended = {i.check_id: (i.outcome, i.tier, i.detail) for i in store.incidents(None)}
        assert ended["windows.network.llmnr_disabled"][:2] == ("healed", "L1")
        assert "rule baseline-llmnr" in ended["windows.network.llmnr_disabled"][2]
        assert ended["windows.ntlm.lm_compatibility"][:2] == ("failed", "L3")  # no channel configured here
        assert lab.host("dc01").state["policy.llmnr.enable_multicast"] == 0
        assert lab.host("dc01").state["policy.lsa.lm_compatibility_level"] == 1
    finally:
        store.close()
        loaded.ctx.close()


async def test_a_site_override_of_a_checks_parameter_is_what_the_shipped_rule_heals_to(lab, tmp_path):
    """The shipped firewall-logging rule takes min_size_kb from the check
    ({from_check: ...}), so a site that raises the check's threshold gets
    the raised value written at L1, and verification passes; a copied
    16384 would fail verification and escalate every episode."""
    cfg = config(lab, tmp_path / "state", {"mode": "standard"})
    cfg["checks"] = {"windows.firewall.logging": {"params": {"min_size_kb": 24576}}}
    loaded = load(config_data=cfg, environ={"OSIRIS_PLUGINS": PLUGINS})
    store = Store(loaded.ctx.state_dir)
    try:
        ladder = Ladder(loaded.ctx, loaded.pm, loaded.registry, store, loaded.config.healing, loaded.targets, [])
        engine = Engine(loaded.registry, store, loaded.targets, downstream=ladder)
        ladder.start()
        assert not ladder.rule_errors
        assert lab.host("srv01").state["firewall.domain.log_max_kb"] == 16384  # passes the default, not 24576
        await engine.sweep(force=True, only_targets={"srv01"}, only_checks={"windows.firewall.logging"})
        await ladder.drain()
        [inc] = store.incidents(None)
        assert (inc.check_id, inc.outcome, inc.tier) == ("windows.firewall.logging", "healed", "L1"), inc.detail
        assert {lab.host("srv01").state[f"firewall.{p}.log_max_kb"] for p in ("domain", "private", "public")} == {24576}
    finally:
        store.close()
        loaded.ctx.close()
