"""Evaluators and parsers on output in the shapes Windows prints
(tests/samples, documented in tests/samples/README.md), not the lab's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osiris import Status
from osiris_windows_baseline import accounts, audit, catalog, backup, defender, eventlog, firewall, network, services, timesync
from osiris_windows_baseline.facts import FactError, as_bool, as_datetime, enum_name, ip_allowed
from osiris_windows_baseline.parsers import (parse_auditpol_csv, parse_inf_section, parse_w32tm_status,
                                             policy_from_net_accounts, policy_from_secedit, w32tm_seconds)

SAMPLES = Path(__file__).with_name("samples")


def text(name: str) -> str:
    raw = (SAMPLES / name).read_bytes()
    return raw.decode("utf-16") if raw[:2] == b"\xff\xfe" else raw.decode("utf-8")


def sample(name: str):
    return json.loads(text(name))


def spec(module, check_id):
    """The check, from its area's code or the pack the area's checks moved to."""
    return next(c for c in catalog.area_checks(module) if c.id == check_id)


def judge(module, check_id, facts, **params):
    s = spec(module, check_id)
    return s.evaluate(facts, {**s.params, **params})


# -- secedit, net accounts ---------------------------------------------------------------------------


def test_secedit_export_of_a_standalone_windows_11():
    policy = policy_from_secedit(text("secedit_win11_standalone.inf"))
    assert policy == {"min_length": 0, "history": 0, "max_age_days": 42, "min_age_days": 0, "complexity": False,
                      "reversible": False, "lockout_threshold": 10, "lockout_duration_min": 10,
                      "lockout_window_min": 10, "guest_enabled": False}
    # [Registry Values] lines ("key=4,1") and other sections are not read as [System Access].
    assert "MACHINE\\System\\CurrentControlSet\\Control\\Lsa\\LimitBlankPasswordUse" not in parse_inf_section(
        text("secedit_win11_standalone.inf"))


def test_secedit_section_as_the_fragment_sends_it_fails_length_and_lockout():
    whole = text("secedit_win11_standalone.inf")
    # the fragment sends "[System Access]" and that section's lines only
    lines = whole.split("[System Access]")[1].split("[Event Audit]")[0].strip().splitlines()
    facts = {"domain_role": 0, "source": "secedit", "text": "[System Access]\n" + "\n".join(lines)}
    length = judge(accounts, "windows.accounts.password_length", facts)
    assert length.status is Status.FAIL and "minimum password length is 0 (at least 14)" in length.reason
    lockout = judge(accounts, "windows.accounts.lockout", facts)
    assert lockout.status is Status.FAIL and "lockout after 10 bad passwords (at most 5)" in lockout.reason
    assert judge(accounts, "windows.accounts.lockout", facts, max_threshold=10, min_duration_minutes=10,
                 min_window_minutes=10).status is Status.PASS
    complexity = judge(accounts, "windows.accounts.password_complexity", facts)
    assert complexity.status is Status.FAIL and complexity.reason == "local policy: complexity requirements are off"


def test_secedit_member_server_never_expires_and_never_locks_out():
    facts = {"source": "secedit", "text": text("secedit_member_server.inf")}
    age = judge(accounts, "windows.accounts.password_age", facts)
    assert age.status is Status.FAIL and "passwords never expire" in age.reason
    lockout = judge(accounts, "windows.accounts.lockout", facts)
    assert lockout.reason == "local policy: accounts are never locked out"
    assert "reversible encryption" in judge(accounts, "windows.accounts.password_complexity", facts).reason
    assert judge(accounts, "windows.accounts.password_length", facts).status is Status.PASS
    assert judge(accounts, "windows.accounts.password_history", facts).status is Status.PASS


def test_net_accounts_fallback():
    policy = policy_from_net_accounts(text("net_accounts.txt"))
    assert policy["history"] == 0  # "None"
    assert (policy["max_age_days"], policy["lockout_threshold"], policy["lockout_window_min"]) == (42, 10, 10)
    assert policy["complexity"] is None
    facts = {"source": "net_accounts", "text": text("net_accounts.txt")}
    assert judge(accounts, "windows.accounts.password_history", facts).reason == \
        "local policy (net accounts): 0 previous passwords remembered (at least 24)"
    # net accounts does not show complexity: an error, not a guess
    with pytest.raises(FactError, match="not reported"):
        judge(accounts, "windows.accounts.password_complexity", facts)
    with pytest.raises(FactError, match="English output"):
        policy_from_net_accounts("Die minimale Kennwortlänge: 0\n")


def test_domain_policy_from_active_directory_and_fine_grained_policies():
    facts = {"domain_role": 5, "source": "ad",
             "policy": {"min_length": 14, "history": 24, "max_age_days": 0, "min_age_days": 1, "complexity": True,
                        "reversible": False, "lockout_threshold": 5, "lockout_duration_min": -1.5372e13,
                        "lockout_window_min": 30},
             "fine_grained": [{"name": "Service accounts", "precedence": 10, "min_length": 8, "lockout_threshold": 0}]}
    length = judge(accounts, "windows.accounts.password_length", facts)
    assert length.status is Status.FAIL
    assert length.reason == ("domain policy (+1 fine-grained policy): fine-grained policies allow shorter passwords: "
                             "Service accounts (8)")
    # a lockout "until an administrator unlocks" (AD's minimum TimeSpan) is long enough
    assert judge(accounts, "windows.accounts.lockout", facts).status is Status.PASS
    assert "never expire" in judge(accounts, "windows.accounts.password_age", facts).reason


# -- auditpol -------------------------------------------------------------------------------------


def test_auditpol_six_columns_reads_the_english_inclusion_setting():
    rows = parse_auditpol_csv(text("auditpol_logon_6col.csv"))
    assert rows == {"{0cce9215-69ae-11d9-bed3-505054503030}": {
        "name": "Logon", "inclusion": "Success and Failure", "success": True, "failure": True}}
    facts = {"guid": "{0CCE9215-69AE-11D9-BED3-505054503030}", "exit_code": 0, "csv": text("auditpol_logon_6col.csv")}
    v = judge(audit, "windows.audit.logon", facts)
    assert (v.status, v.reason) == (Status.PASS, "Logon: Success and Failure audited")


def test_auditpol_setting_value_column_and_localised_output():
    facts = {"guid": "{0CCE923F-69AE-11D9-BED3-505054503030}", "exit_code": 0,
             "csv": text("auditpol_credval_7col.csv")}
    v = judge(audit, "windows.audit.credential_validation", facts)
    assert v.status is Status.FAIL
    assert v.reason == ("Credential Validation: failure not audited (audits: Success; required: Success and Failure)")
    localised = {"guid": "{0CCE9217-69AE-11D9-BED3-505054503030}", "exit_code": 0,
                 "csv": text("auditpol_lockout_7col_localised.csv")}
    assert judge(audit, "windows.audit.account_lockout", localised).status is Status.PASS  # "Fehler",,2
    # localised text and no Setting Value column: refuse to guess
    six = text("auditpol_lockout_7col_localised.csv").replace(",Einstellungswert", "").replace(",,2", ",")
    with pytest.raises(FactError, match="cannot read the setting 'Fehler'"):
        judge(audit, "windows.audit.account_lockout", {**localised, "csv": six})


def test_auditpol_failure_and_missing_subcategory_are_errors():
    with pytest.raises(FactError, match="auditpol exited with 5"):
        judge(audit, "windows.audit.logon", {"guid": "{0CCE9215-69AE-11D9-BED3-505054503030}", "exit_code": 5,
                                             "csv": "Error 0x00000005 occurred:\nAccess is denied."})
    with pytest.raises(FactError, match="did not report subcategory"):
        judge(audit, "windows.audit.logoff", {"guid": "{0CCE9216-69AE-11D9-BED3-505054503030}", "exit_code": 0,
                                              "csv": text("auditpol_logon_6col.csv")})


def test_every_audit_guid_is_distinct_and_well_formed():
    guids = [c.params["probe"]["guid"] for c in catalog.area_checks(audit)]
    assert guids
    assert len(set(guids)) == len(guids)
    assert all(len(g) == 38 and g.startswith("{0CCE92") and g.endswith("-69AE-11D9-BED3-505054503030}") for g in guids)


# -- w32tm --------------------------------------------------------------------------------------------


def test_w32tm_domain_member_is_synchronised():
    st = parse_w32tm_status(text("w32tm_domain_member.txt"))
    assert st["Source"] == "DC01.lab.example"
    assert w32tm_seconds(st["Phase Offset"]) == pytest.approx(0.0004212)
    facts = {"exit_code": 0, "status": text("w32tm_domain_member.txt")}
    v = judge(timesync, "windows.time.synchronized", facts)
    assert (v.status, v.reason) == (Status.PASS, "synchronised from DC01.lab.example, offset +0.0004 s")
    pinned = judge(timesync, "windows.time.synchronized", facts, allowed_sources=["PDC*"])
    assert pinned.status is Status.FAIL and "not an allowed one" in pinned.reason


def test_w32tm_local_cmos_clock_and_stopped_service_fail():
    v = judge(timesync, "windows.time.synchronized", {"exit_code": 0, "status": text("w32tm_local_cmos.txt")})
    assert v.status is Status.FAIL
    assert "no time source: Local CMOS Clock" in v.reason and "leap indicator 3" in v.reason
    assert "last good sync 336.0 h ago" in v.reason
    stopped = judge(timesync, "windows.time.synchronized",
                    {"exit_code": -2147023834, "status": text("w32tm_service_stopped.txt"),
                     "service_status": "Stopped"})
    assert stopped.status is Status.FAIL and "The service has not been started. (0x80070426)" in stopped.reason


# -- cmdlet objects through ConvertTo-Json -----------------------------------------------------------------


def test_firewall_profiles_with_numeric_enums():
    facts = {"profiles": sample("netfirewallprofile_activestore.json")}
    v = judge(firewall, "windows.firewall.default_inbound_block", facts)
    # Domain 4 (Block), Private 0 (NotConfigured: Windows' default, block), Public 2 (Allow)
    assert (v.status, v.reason) == (Status.FAIL, "firewall Public: inbound connections are allowed by default")
    logging = judge(firewall, "windows.firewall.logging", facts)
    assert logging.status is Status.FAIL
    assert logging.reason.startswith("firewall Private: dropped packets not logged, log limited to 4096 KB")
    assert "Domain" not in logging.reason
    assert judge(firewall, "windows.firewall.logging", facts, profiles=["Domain"]).status is Status.PASS


def test_enum_and_bool_shapes():
    assert enum_name(4, firewall.ACTIONS) == enum_name("Block", firewall.ACTIONS) == "Block"
    assert as_bool(1) is True and as_bool("False") is False and as_bool(2, not_configured=None) is None
    with pytest.raises(FactError):
        enum_name(3, firewall.ACTIONS)
    assert as_datetime("/Date(1724140800000)/").isoformat() == "2024-08-20T08:00:00+00:00"
    assert as_datetime("2024-08-20T08:00:00Z") == as_datetime("/Date(1724140800000)/")


def test_defender_tamper_protection_from_get_mpcomputerstatus():
    assert judge(defender, "windows.defender.tamper_protection", sample("mpcomputerstatus.json")).status is Status.PASS
    v = judge(defender, "windows.defender.tamper_protection", sample("mpcomputerstatus_server_no_tamper.json"))
    assert v.status is Status.FAIL and "tamper protection is off" in v.reason


def test_defender_preferences_pua_and_exclusions():
    prefs = sample("mppreference.json")
    pua = judge(defender, "windows.defender.pua_protection", prefs)
    assert (pua.status, pua.reason) == (Status.FAIL, "potentially unwanted applications are not blocked "
                                                     "(PUAProtection: audit only)")
    ex = judge(defender, "windows.defender.exclusions", prefs)
    assert ex.status is Status.FAIL
    assert ex.reason == ("Defender skips exclusions not in the allowlist: path C:\\ProgramData\\EHR\\Data, D:\\; "
                         "process C:\\Program Files\\EHR\\ehrsvc.exe")
    allowed = judge(defender, "windows.defender.exclusions", prefs, allowed_paths=["C:\\ProgramData\\EHR\\*", "D:\\"],
                    allowed_processes=["*\\ehrsvc.exe"])
    assert allowed.status is Status.PASS
    hidden = judge(defender, "windows.defender.exclusions", sample("mppreference_hidden.json"))
    assert hidden.status is Status.ERROR and "HideExclusionsFromLocalAdmins" in hidden.reason


def test_event_logs_from_get_winevent_listlog():
    logs = {"logs": sample("winevent_listlog.json")}
    sec = judge(eventlog, "windows.eventlog.security_log", logs)
    assert sec.status is Status.FAIL  # 192 MB, but LogMode 2 (Retain): logging stops when full
    assert sec.reason == ("event log Security: stops logging when full (Retain; allowed Circular, AutoBackup)")
    assert judge(eventlog, "windows.eventlog.security_log", logs,
                 allowed_modes=["Circular", "AutoBackup", "Retain"]).status is Status.PASS
    other = judge(eventlog, "windows.eventlog.system_logs", logs)
    assert other.reason == "event log Application: 20480 KB (at least 32768 KB); System: 20480 KB (at least 32768 KB)"


def test_smb_server_configuration():
    v = judge(network, "windows.smb.server_signing", sample("smbserverconfiguration.json"))
    assert v.status is Status.FAIL and "does not require signing" in v.reason
    enc = {**sample("smbserverconfiguration.json"), "EncryptData": True}
    assert judge(network, "windows.smb.server_signing", enc).status is Status.PASS


def test_dns_servers_from_get_dnsclientserveraddress():
    facts = {"interfaces": sample("dnsclientserveraddress.json")}
    v = judge(network, "windows.dns.servers_allowlist", facts)
    # IPv6 site-local defaults (with scope ids) are private; 8.8.8.8 is not
    assert (v.status, v.reason) == (Status.FAIL, "DNS servers outside the allowlist: 8.8.8.8 on Ethernet")
    pinned = judge(network, "windows.dns.servers_allowlist", facts, allowed=["10.20.0.10/32"])
    assert "fec0:0:0:ffff::1%1 on Ethernet" in pinned.reason and "10.20.0.10 on" not in pinned.reason
    assert ip_allowed("fe80::1%12", ["fe80::/10"]) and not ip_allowed("not-an-ip", ["0.0.0.0/0"])


def test_service_from_get_service_with_numeric_enums():
    facts = {**sample("service_wuauserv_disabled.json"), "present": True}
    v = judge(services, "windows.services.windows_update", facts)
    assert (v.status, v.reason) == (Status.FAIL, "the wuauserv service is start type Disabled")
    running = {"Name": "EventLog", "present": True, "Status": 4, "StartType": 2}
    assert judge(services, "windows.services.event_log", running).reason == \
        "the EventLog service is running (Automatic)"
    stopped = judge(services, "windows.services.event_log", {**running, "Status": 1})
    assert stopped.reason == "the EventLog service is stopped"


def test_windows_server_backup_summary():
    facts = {**sample("wbsummary.json"), "installed": True, "policy_configured": True,
             "now_utc": "2024-08-20T12:00:00Z"}
    v = judge(backup, "windows.backup.recent", facts)
    assert (v.status, v.reason) == (Status.PASS, "last successful backup 2024-08-20 01:00 UTC, 14 versions kept")
    late = judge(backup, "windows.backup.recent", {**facts, "now_utc": "2024-08-22T12:00:00Z"})
    assert late.status is Status.FAIL and "last successful backup 59 h ago" in late.reason
    failed = judge(backup, "windows.backup.recent", {**facts, "LastBackupResultHR": -2147024784})
    assert "the last attempt failed (0x80070070)" in failed.reason
    assert judge(backup, "windows.backup.recent", {"installed": False, "now_utc": "2024-08-20T12:00:00Z"}).reason == \
        "Windows Server Backup is not installed: no backup of this server is visible"


def test_bitlocker_data_volumes_from_the_wmi_provider():
    from osiris_windows_baseline import bitlocker
    rows = [v for v in sample("win32_encryptablevolume.json") if v["VolumeType"] == 1]  # what the fragment keeps
    facts = {"source": "wmi", "volumes": [{"MountPoint": v["DriveLetter"], "ProtectionStatus": v["ProtectionStatus"],
                                           "ConversionStatus": v["ConversionStatus"]} for v in rows]}
    v = judge(bitlocker, "windows.bitlocker.data_volumes_encrypted", facts)
    assert (v.status, v.reason) == (Status.FAIL, "unencrypted fixed data volumes: D: (protection Off, FullyDecrypted)")
    on = {"source": "module", "volumes": [{"MountPoint": "D:", "ProtectionStatus": "On",
                                           "VolumeStatus": "FullyEncrypted", "EncryptionPercentage": 100.0}]}
    assert judge(bitlocker, "windows.bitlocker.data_volumes_encrypted", on).reason == \
        "fixed data volumes encrypted: D:"
    assert judge(bitlocker, "windows.bitlocker.data_volumes_encrypted", {"source": "none", "volumes": []}).status \
        is Status.PASS
