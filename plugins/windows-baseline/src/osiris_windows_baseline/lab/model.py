"""The host model the baseline's emulations read and change.

Every setting is declared once with its default per role and the value
chaos sets to break it (``osiris_lab.declare``). Defaults describe a small
practice an MSP has partly hardened: the domain controller mostly follows
the baseline (its GPOs), the file server carries the usual debts (a
Windows Update service someone disabled, old SMB, a stale backup), the
workstation is close to Windows' own defaults. The resulting mix of passes
and failures is documented in docs/windows-baseline.md and asserted by the
plugin's lab tests.

Settings the windows plugin's lab already declares (``firewall.<profile>.*``,
``defender.installed``) are read here, never redeclared.
"""

from __future__ import annotations

from typing import Any

from osiris_lab import declare

from .. import catalog, firewall, policies
from ..ps import RegValue

# -- identities -------------------------------------------------------------------------------------

DOMAIN = "LAB"
DOMAIN_FQDN = "lab.example"
DOMAIN_SID = "S-1-5-21-1004336348-1177238915-682003330"
MACHINE_SID = {"server": "S-1-5-21-3623811015-3361044348-30300820",
               "workstation": "S-1-5-21-2781561324-1398513337-1716712204"}
APPLIANCE_SID = DOMAIN_SID + "-1105"  # LAB\osiris, a member of Domain Admins
DOMAIN_ADMINS = DOMAIN_SID + "-512"
DOMAIN_ROLE = {"dc": 5, "server": 3, "workstation": 1}  # Win32_ComputerSystem.DomainRole


def _member(name: str, sid: str, cls: str = "User") -> dict[str, str]:
    return {"name": name, "sid": sid, "class": cls}


def _admins(role: str) -> list[dict[str, str]]:
    host = {"server": "SRV01", "workstation": "WS01"}.get(role)
    if role == "dc":
        return [_member(f"{DOMAIN}\\Administrator", DOMAIN_SID + "-500"),
                _member(f"{DOMAIN}\\Domain Admins", DOMAIN_ADMINS, "Group"),
                _member(f"{DOMAIN}\\Enterprise Admins", DOMAIN_SID + "-519", "Group")]
    members = [_member(f"{host}\\Administrator", MACHINE_SID[role] + "-500"),
               _member(f"{DOMAIN}\\Domain Admins", DOMAIN_ADMINS, "Group")]
    if role == "server":
        # a deleted domain account still in the group: Get-LocalGroupMember fails, ADSI lists its SID
        members.append(_member(DOMAIN_SID + "-1107", DOMAIN_SID + "-1107", ""))
    else:
        members.append(_member(f"{DOMAIN}\\frontdesk", DOMAIN_SID + "-1104"))
    return members


def _plus(item: Any, default: Any):
    """A broken value: the role default plus one rogue item."""
    def broken(role: str) -> list[Any]:
        base = default(role) if callable(default) else list(default.get(role, []) if isinstance(default, dict)
                                                             else default)
        return base + [item]
    return broken


def per_role(dc: Any, server: Any, workstation: Any) -> dict[str, Any]:
    return {"dc": dc, "server": server, "workstation": workstation}


# -- firewall -------------------------------------------------------------------------------------------

for _p in map(str.lower, firewall.PROFILES):
    declare(f"firewall.{_p}.log_blocked", per_role(True, True, False), False,
            f"Firewall {_p} profile: log dropped packets (LogBlocked)")
    declare(f"firewall.{_p}.log_max_kb", per_role(16384, 16384, 4096), 4096,
            f"Firewall {_p} profile: LogMaxSizeKilobytes")
    declare(f"firewall.{_p}.allow_local_rules", True, False,
            f"Firewall {_p} profile: AllowLocalFirewallRules (false: a GPO makes Windows ignore local rules)")
declare("firewall.winrm_rule_active", True, False,
        "A stored, active inbound allow rule for WinRM (TCP 5985/5986), e.g. from Enable-PSRemoting")
declare("firewall.osiris_rule", False, False, "The rule 'Osiris-Management-WinRM' exists (created by a runbook)")

# -- Defender -------------------------------------------------------------------------------------------

declare("defender.tamper_protected", per_role(False, False, True), False,
        "Defender tamper protection (IsTamperProtected)")
declare("defender.pua_protection", per_role(1, 0, 1), 0, "Get-MpPreference PUAProtection (0 off, 1 block, 2 audit)")
_EXCLUSIONS = per_role([], ["D:\\", "C:\\ProgramData\\EHR\\Data\\*"], [])
declare("defender.exclusions.paths", _EXCLUSIONS, _plus("C:\\Users\\Public\\Downloads", _EXCLUSIONS),
        "Defender ExclusionPath")
declare("defender.exclusions.extensions", [], [".ps1"], "Defender ExclusionExtension")
declare("defender.exclusions.processes", [], ["powershell.exe"], "Defender ExclusionProcess")

# -- BitLocker ------------------------------------------------------------------------------------------

_DATA_VOLUMES = per_role([], [{"MountPoint": "D:", "ProtectionStatus": "Off", "VolumeStatus": "FullyDecrypted",
                               "EncryptionPercentage": 0.0}], [])
declare("bitlocker.data_volumes", _DATA_VOLUMES,
        _plus({"MountPoint": "E:", "ProtectionStatus": "Off", "VolumeStatus": "FullyDecrypted",
               "EncryptionPercentage": 0.0}, _DATA_VOLUMES),
        "Fixed data volumes (Get-BitLockerVolume, VolumeType FixedData): mount point, protection, conversion")

# -- updates --------------------------------------------------------------------------------------------

declare("updates.last_install_days_ago", per_role(12, 62, 9), 90,
        "Days since the newest successful update installation (WU history / Get-HotFix)")
_PENDING = per_role([], [{"kb": "KB5040434", "title": "2024-07 Cumulative Update for Windows Server 2019",
                          "severity": "Critical", "age_days": 48}],
                    [{"kb": "KB5041585", "title": "2024-08 Cumulative Update for Windows 11 Version 23H2",
                      "severity": "Critical", "age_days": 3}])
declare("updates.pending", _PENDING,
        _plus({"kb": "KB5034441", "title": "Security Update for Windows", "severity": "Important", "age_days": 45},
              _PENDING),
        "Applicable, not installed updates: KB, title, MSRC severity, days since release")
declare("updates.reboot_pending", per_role(False, False, True), True,
        "Windows Update's RebootRequired key exists")
declare("host.uptime_days", per_role(21.0, 35.0, 2.0), 60.0, "Days since the last boot")

# -- accounts: password and lockout policy ----------------------------------------------------------------

_POLICY = {
    # key: (dc, server, workstation, broken, doc)
    "min_length": (14, 14, 8, 6, "Minimum password length"),
    "history": (24, 24, 24, 0, "Password history size"),
    "max_age_days": (365, 0, 90, 0, "Maximum password age in days (0: never expires)"),
    "min_age_days": (1, 1, 1, 0, "Minimum password age in days"),
    "complexity": (True, True, True, False, "Passwords must meet complexity requirements"),
    "reversible": (False, False, False, True, "Store passwords with reversible encryption"),
    "lockout_threshold": (5, 0, 10, 0, "Account lockout threshold (0: never)"),
    "lockout_duration_min": (15, 30, 10, 1, "Account lockout duration in minutes"),
    "lockout_window_min": (15, 30, 10, 1, "Reset lockout counter after, minutes"),
}
for _k, (_dc, _srv, _ws, _broken, _doc) in _POLICY.items():
    declare(f"accounts.policy.{_k}", per_role(_dc, _srv, _ws), _broken,
            _doc + " (the domain's on a DC, the local policy elsewhere)")
declare("accounts.guest_enabled", False, True, "The RID-501 account is enabled")
declare("accounts.admins", {r: _admins(r) for r in ("dc", "server", "workstation")},
        lambda role: _admins(role) + [_member(f"{DOMAIN}\\helpdesk-temp", DOMAIN_SID + "-1180")],
        "Members of BUILTIN\\Administrators: name, SID, class")

# -- audit policy -------------------------------------------------------------------------------------------

# Windows' own defaults (a workstation no audit GPO reached yet).
_WINDOWS_AUDIT = {
    "credential_validation": "No Auditing", "kerberos_authentication": "Success", "logon": "Success and Failure",
    "logoff": "Success", "account_lockout": "Success", "special_logon": "Success",
    "user_account_management": "Success", "security_group_management": "Success",
    "directory_service_changes": "No Auditing", "audit_policy_change": "Success", "removable_storage": "No Auditing",
    "process_creation": "No Auditing", "sensitive_privilege_use": "No Auditing",
    "security_system_extension": "No Auditing",
}
_WORDS = {(True, True): "Success and Failure", (True, False): "Success", (False, True): "Failure",
          (False, False): "No Auditing"}
# Subcategory GUID (lower case) -> the setting that holds it; the shipped
# audit pack's subcategories have one each (named by check id), any other
# (a site pack's) lives in audit.other.
AUDIT_SETTINGS: dict[str, str] = {}
AUDIT_NAMES: dict[str, str] = {}  # what auditpol prints in an English Windows
for _p in catalog.shipped():
    for _e in _p.entries:
        _c = _e.check
        if _c.probe.type != "audit_subcategory" or not _c.id.startswith("windows.audit."):
            continue
        _key = _c.id.removeprefix("windows.audit.")
        _want = _WORDS[(bool(_c.params["success"]), bool(_c.params["failure"]))]
        _srv = "No Auditing" if _key in ("process_creation", "removable_storage") else _want
        declare(f"audit.{_key}", per_role(_want, _srv, _WINDOWS_AUDIT[_key]), "No Auditing",
                f"Audit policy subcategory {_c.probe.name} {_c.probe.guid}: No Auditing, Success, Failure, "
                "Success and Failure", roles=_c.roles)
        AUDIT_SETTINGS[_c.probe.guid.lower()] = f"audit.{_key}"
        AUDIT_NAMES[_c.probe.guid.lower()] = _c.probe.name
# ({} alone would read as a per-role table: an empty one per role instead)
declare("audit.other", per_role({}, {}, {}), {}, "Other audit subcategories by GUID (lower case) -> setting; absent: No Auditing")

# -- event logs -------------------------------------------------------------------------------------------

declare("eventlog.security.max_kb", per_role(4194240, 196608, 20480), 20480, "Security log MaximumSizeInBytes / 1024")
declare("eventlog.security.mode", "Circular", "Retain", "Security log LogMode")
declare("eventlog.application.max_kb", per_role(32768, 32768, 20480), 1024, "Application log maximum size, KB")
declare("eventlog.system.max_kb", per_role(32768, 32768, 20480), 1024, "System log maximum size, KB")
declare("eventlog.application.mode", "Circular", "Retain", "Application log LogMode")
declare("eventlog.system.mode", "Circular", "Retain", "System log LogMode")

# -- SMB, NetBIOS, DNS ----------------------------------------------------------------------------------------

declare("smb.server.require_signing", per_role(True, False, False), False,
        "Get-SmbServerConfiguration RequireSecuritySignature")
declare("smb.client.require_signing", per_role(True, True, False), False,
        "Get-SmbClientConfiguration RequireSecuritySignature")
declare("smb.client.smb1_driver_start", per_role(None, 2, None), 2,
        "mrxsmb10 Start (None: driver not installed; 4: disabled)")
declare("network.netbios_options", per_role(0, 2, 0), 1,
        "TcpipNetbiosOptions of the host's adapter (0: DHCP default, on; 2: disabled)")
declare("dns.servers", per_role(["127.0.0.1", "10.20.0.11"], ["10.20.0.10"], ["10.20.0.10", "8.8.8.8"]),
        ["10.20.0.10", "203.0.113.53"], "IPv4 DNS servers of the host's adapter")

# -- time ------------------------------------------------------------------------------------------------------

declare("time.service_running", True, False, "The W32Time service is running")
declare("time.source", per_role("time.windows.com,0x8", "Local CMOS Clock", f"DC01.{DOMAIN_FQDN}"), "Local CMOS Clock",
        "w32tm Source")
declare("time.offset_seconds", per_role(0.0004, 0.0, -0.0021), 7.5, "w32tm Phase Offset in seconds")
declare("time.since_sync_seconds", per_role(512.0, 1209600.0, 1024.0), 259200.0,
        "w32tm 'Time since Last Good Sync Time' in seconds")
declare("time.type", per_role("NTP", "NT5DS", "NT5DS"), "NoSync", "W32Time Parameters Type")
declare("time.ntp_server", per_role("time.windows.com,0x8", "", ""), "", "W32Time Parameters NtpServer")

# -- services --------------------------------------------------------------------------------------------------

declare("services.other", per_role({}, {}, {}), {}, "Other services by name (lower case) -> {'start': ..., 'status': ...}; "
                                  "absent: not installed")

_SERVICES = {
    "wuauserv": (per_role("Manual", "Disabled", "Manual"), per_role("Stopped", "Stopped", "Running")),
    "EventLog": ("Automatic", "Running"),
    "WinDefend": ("Automatic", "Running"),
    "mpssvc": ("Automatic", "Running"),
}
for _n, (_start, _status) in _SERVICES.items():
    declare(f"services.{_n}.start", _start, "Disabled", f"{_n} StartType")
    declare(f"services.{_n}.status", _status, "Stopped", f"{_n} Status")

# -- backup (servers) ----------------------------------------------------------------------------------------------

_SERVERS = ("dc", "server")
declare("backup.installed", True, False, "Windows Server Backup (Get-WBSummary) present", roles=_SERVERS)
declare("backup.policy", True, False, "A scheduled backup policy exists (Get-WBPolicy)", roles=_SERVERS)
declare("backup.last_success_hours_ago", {"dc": 10.0, "server": 130.0}, 200.0,
        "Hours since the last successful backup (None: never)", roles=_SERVERS)
declare("backup.last_result_hr", {"dc": 0, "server": -2147024784}, -2147024784,
        "HRESULT of the last attempt (0x80070070: disk full)", roles=_SERVERS)
declare("backup.versions", {"dc": 14, "server": 3}, 0, "Backup versions kept", roles=_SERVERS)

# -- persistence --------------------------------------------------------------------------------------------------


def _task(path: str, execute: str, run_as: str = "SYSTEM", state: str = "Ready", args: str | None = "abc") -> dict:
    return {"path": path, "state": state, "author": "", "run_as": run_as,
            "actions": [{"execute": execute, "arguments_sha256": None if args is None else "9f86d081884c7d65"}]}


_TASKS = per_role(
    [],
    [_task("\\EHR Nightly Export", "C:\\Program Files\\EHR\\export.exe", "LAB\\svc-ehr")],
    [_task("\\MicrosoftEdgeUpdateTaskMachineCore{3B6C6A4C-0F7E-4B8B-9E64-6A3F1A1B2C3D}",
           "C:\\Program Files (x86)\\Microsoft\\EdgeUpdate\\MicrosoftEdgeUpdate.exe"),
     _task("\\OneDrive Reporting Task-S-1-5-21-2781561324-1398513337-1716712204-1001",
           "%localappdata%\\Microsoft\\OneDrive\\OneDriveStandaloneUpdater.exe", "WS01\\clinic")],
)
declare("persistence.tasks", _TASKS,
        _plus(_task("\\Updater", "C:\\Users\\Public\\svchost.exe", "SYSTEM"), _TASKS),
        "Scheduled tasks outside \\Microsoft\\: path, state, run_as, actions")


def _run(key: str, name: str, program: str) -> dict:
    return {"key": key, "name": name, "program": program, "command_sha256": "2c26b46b68ffc68f"}


_RUN = per_role([_run("run", "SecurityHealth", "%windir%\\system32\\SecurityHealthSystray.exe")],
                [_run("run", "SecurityHealth", "%windir%\\system32\\SecurityHealthSystray.exe"),
                 _run("run", "VMware User Process", "C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe")],
                [_run("run", "SecurityHealth", "%windir%\\system32\\SecurityHealthSystray.exe")])
declare("persistence.run", _RUN, _plus(_run("run", "WindowsUpdater", "C:\\Users\\Public\\updater.exe"), _RUN),
        "Machine-wide Run/RunOnce entries: key, name, program, digest")

# -- WinRM -----------------------------------------------------------------------------------------------------------

declare("winrm.service.allow_unencrypted", False, True, "WSMan Service AllowUnencrypted")
# The lab's HTTPS listeners accept Basic (the executor's default for local accounts), so the model says so.
declare("winrm.service.basic", True, True, "WSMan Service Auth Basic")
declare("winrm.client.allow_unencrypted", False, True, "WSMan Client AllowUnencrypted")
declare("winrm.client.basic", per_role(False, True, True), True, "WSMan Client Auth Basic (Windows' default: true)")

# -- registry values (policies and security options) -------------------------------------------------------------------
#
# ref -> (setting path, default per role or one value, broken). None: the
# value (or its key) is absent, which each check reads as Windows' default.

_NONE = None
REGISTRY: dict[str, tuple[str, Any, Any]] = {
    policies.LLMNR.ref: ("policy.llmnr.enable_multicast", per_role(0, 0, _NONE), 1),
    policies.LM_COMPAT.ref: ("policy.lsa.lm_compatibility_level", per_role(5, 5, _NONE), 1),
    policies.NO_LM_HASH.ref: ("policy.lsa.no_lm_hash", _NONE, 0),
    policies.BLANK.ref: ("policy.lsa.limit_blank_password_use", _NONE, 0),
    policies.ANON_SAM.ref: ("policy.lsa.restrict_anonymous_sam", _NONE, 0),
    policies.ANON.ref: ("policy.lsa.restrict_anonymous", per_role(1, 1, 0), 0),
    policies.EVERYONE_ANON.ref: ("policy.lsa.everyone_includes_anonymous", _NONE, 1),
    policies.WDIGEST.ref: ("policy.wdigest.use_logon_credential", _NONE, 1),
    policies.ENABLE_LUA.ref: ("policy.uac.enable_lua", 1, 0),
    policies.ADMIN_PROMPT.ref: ("policy.uac.consent_prompt_admin", per_role(2, _NONE, _NONE), 0),
    policies.SCENO.ref: ("policy.audit.sce_no_apply_legacy", per_role(1, 1, _NONE), 0),
    policies.SCRIPT_BLOCK.ref: ("policy.powershell.script_block_logging", per_role(1, 1, _NONE), 0),
    policies.CMDLINE.ref: ("policy.audit.command_line", per_role(1, _NONE, _NONE), 0),
    policies.DENY_TS.ref: ("rdp.deny_connections", per_role(0, 0, 1), 0),
    policies.DENY_TS_POLICY.ref: ("rdp.policy.deny_connections", _NONE, 0),
    policies.NLA.ref: ("rdp.listener.user_authentication", per_role(1, 0, 1), 0),
    policies.NLA_POLICY.ref: ("rdp.policy.user_authentication", _NONE, 0),
    policies.LAYER.ref: ("rdp.listener.security_layer", 2, 0),
    policies.LAYER_POLICY.ref: ("rdp.policy.security_layer", per_role(2, _NONE, _NONE), 0),
    policies.LEVEL.ref: ("rdp.listener.min_encryption_level", 2, 1),
    policies.LEVEL_POLICY.ref: ("rdp.policy.min_encryption_level", per_role(3, _NONE, _NONE), 1),
    policies.IDLE_POLICY.ref: ("rdp.policy.max_idle_ms", per_role(900000, _NONE, _NONE), 0),
    policies.CACHED.ref: ("policy.winlogon.cached_logons_count", per_role(_NONE, "2", _NONE), "25"),
    policies.NO_DRIVE_AUTORUN.ref: ("policy.autorun.no_drive_type_autorun", per_role(255, 255, _NONE), 145),
    policies.NO_AUTORUN.ref: ("policy.autorun.no_autorun", per_role(1, 1, _NONE), 0),
    policies.NO_AUTOPLAY_NONVOLUME.ref: ("policy.autorun.no_autoplay_nonvolume", per_role(1, 1, _NONE), 0),
    policies.DENY_ALL.ref: ("policy.storage.deny_all", _NONE, 0),
    policies.DENY_WRITE.ref: ("policy.storage.removable_deny_write", per_role(_NONE, 1, _NONE), 0),
    policies.RDV_DENY.ref: ("policy.storage.bitlocker_to_go_required", per_role(_NONE, _NONE, 1), 0),
    policies.NO_AUTO_UPDATE.ref: ("policy.wu.no_auto_update", _NONE, 1),
    policies.AU_OPTIONS.ref: ("policy.wu.au_options", per_role(3, 3, 4), 2),
    policies.TLS12_SERVER.ref: ("tls.tls_1_2.server.enabled", _NONE, 0),
}
for _v in policies.SCHANNEL_VALUES:
    _proto, _side = _v.key.rsplit("\\", 2)[-2:]
    _slug = _proto.lower().replace(" ", "_").replace(".", "_")
    _name = "enabled" if _v.name == "Enabled" else "disabled_by_default"
    # hardened by the MSP on the DC and the workstation image; the old file server still speaks TLS 1.0
    _hard = 0 if _v.name == "Enabled" else 1
    REGISTRY[_v.ref] = (f"tls.{_slug}.{_side.lower()}.{_name}", per_role(_hard, _NONE, _hard),
                        1 if _v.name == "Enabled" else 0)

for _ref, (_path, _default, _broken) in REGISTRY.items():
    declare(_path, _default, _broken, f"registry {_ref.replace('HKLM:', 'HKLM')}")
declare("registry.other", per_role({}, {}, {}), {}, "Other registry values by '<HKLM:\\key>\\<name>' (lower case) -> value; "
                                  "absent: not set")


def registry_path(value: RegValue | str) -> str:
    ref = value if isinstance(value, str) else value.ref
    return REGISTRY[ref][0]


def registry_setting(ref: str) -> str | None:
    """The setting holding a registry value (names compare as Windows
    compares them: case-insensitively), or None for registry.other."""
    if ref in REGISTRY:
        return REGISTRY[ref][0]
    low = ref.lower()
    return next((path for r, (path, _d, _b) in REGISTRY.items() if r.lower() == low), None)
