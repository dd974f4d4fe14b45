"""Emulations of every windows-baseline fragment, for osiris-lab.

Each check emulation returns what its PowerShell fragment prints on a real
host, in the same shape (the same keys and types; tool output as the tool
writes it: auditpol CSV, the secedit INF section, w32tm text), from the
host's state in :mod:`.model`. Each runbook emulation changes that state as
the real fragment changes Windows, refuses where the real one refuses, and
changes nothing when run a second time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatchcase
from typing import Any

from osiris_lab import HostView, PSError, command_not_found
from osiris_lab.emulation import check, probe, runbook
from osiris_lab.state import settings as declared

from .. import firewall, persistence, policies, services
from ..facts import glob_any
from ..updates import CRITICAL_UPDATES, SECURITY_UPDATES
from . import model

PROFILES = firewall.PROFILES


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _register(kind: str, unit_id: str, fn, name: str, cost_ms: float) -> None:
    """Register an emulation built by a factory (named for error messages and
    so a second import finds the same definition)."""
    fn.__qualname__ = f"{name}[{unit_id}]"
    (check if kind == "check" else runbook)(unit_id, 1, cost_ms=cost_ms)(fn)


# -- registry-backed checks and runbooks -----------------------------------------------------------


def _registry_check(check_id: str):
    values = policies.READS[check_id]

    def emulate(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
        return {"values": {v.ref: host[model.registry_path(v)] for v in values}}

    _register("check", check_id, emulate, "registry_check", 2)


def _registry_runbook(runbook_id: str, guard=None):
    writes = policies.WRITES[runbook_id]

    def emulate(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
        if guard is not None:
            guard(host)
        changed = []
        for w in writes:
            path, value = model.registry_path(w.ref), w.py(params)
            if host[path] != value:
                host.state.set(path, value)
                changed.append(w.ref)
        return {"changed": changed}

    _register("runbook", runbook_id, emulate, "registry_runbook", 1)


def _tls_guard(host: HostView) -> None:
    if host[model.registry_path(policies.TLS12_SERVER)] == 0:
        raise PSError("refused: TLS 1.2 (server) is disabled on this host; disabling TLS 1.0/1.1 as well would "
                      "leave the WinRM HTTPS listener without a protocol")


# The lab's appliance account is a domain account (LAB\osiris): the UAC guard passes.
_GUARDS = {"windows.tls.disable_legacy_protocols": _tls_guard}

for _cid in policies.READS:
    _registry_check(_cid)
for _rid in policies.WRITES:
    _registry_runbook(_rid, _GUARDS.get(_rid))

# -- check pack probes: one emulation per probe TYPE, for every pack check of the type ----------------


def registry_value(host: HostView, ref: str) -> Any:
    path = model.registry_setting(ref)
    return host[path] if path is not None else host["registry.other"].get(ref.lower())


def set_registry_value(host: HostView, ref: str, value: Any) -> None:
    path = model.registry_setting(ref)
    if path is not None:
        host.state.set(path, value)
    else:
        other = host["registry.other"]
        other[ref.lower()] = value
        host.state.set("registry.other", other)


@probe("registry_value", 1)
def registry_probe(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    values = {}
    for r in params["probe"]["values"]:
        if not str(r["k"]).lower().startswith("hklm:\\"):
            raise PSError(f"not a key under HKLM: {r['k']}")
        values[f"{r['k']}\\{r['n']}"] = registry_value(host, f"{r['k']}\\{r['n']}")
    return {"values": values}


@runbook(policies.SET_VALUE_ID, 1, cost_ms=1)
def set_value(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    if not str(params["path"]).lower().startswith("hklm:\\"):
        raise PSError(f"refused: not a key under HKLM: {params['path']}")
    value = int(params["value"]) if params["kind"] == "DWord" else str(params["value"])
    ref = f"{params['path']}\\{params['name']}"
    changed = registry_value(host, ref) != value
    if changed:
        set_registry_value(host, ref, value)
    return {"path": params["path"], "name": params["name"], "changed": changed}


_SETTING_VALUE = {"No Auditing": 0, "Success": 1, "Failure": 2, "Success and Failure": 3}
_FLAGS = {v: (bool(n & 1), bool(n & 2)) for v, n in _SETTING_VALUE.items()}
_WORDS = {flags: words for words, flags in _FLAGS.items()}


def _audit_setting(host: HostView, guid: str) -> str | None:
    """The setting holding a subcategory on this host (None: not on this role)."""
    path = model.AUDIT_SETTINGS.get(guid.lower())
    if path is None:
        return None
    return path if host.role in declared()[path].roles else ""


def audit_value(host: HostView, guid: str) -> str:
    path = _audit_setting(host, guid)
    if not path:
        return host["audit.other"].get(guid.lower(), "No Auditing")
    return host[path]


def auditpol_csv(host: HostView, guid: str, name: str) -> str:
    """`auditpol /get /subcategory:{GUID} /r`: an empty line, the header,
    one row; servers' auditpol also prints the Setting Value column."""
    setting = audit_value(host, guid)
    seven = host.role != "workstation"
    header = "Machine Name,Policy Target,Subcategory,Subcategory GUID,Inclusion Setting,Exclusion Setting"
    row = f"{host.name.upper()},System,{name},{guid},{setting},"
    if seven:
        header += ",Setting Value"
        row += f",{_SETTING_VALUE[setting]}"
    return "\n".join(["", header, row])


@probe("audit_subcategory", 1)
def audit_probe(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    guid = str(params["probe"]["guid"])
    name = model.AUDIT_NAMES.get(guid.lower(), "Other Subcategory")
    return {"guid": guid, "exit_code": 0, "csv": auditpol_csv(host, guid, name)}


def _service(host: HostView, name: str) -> tuple[str, str] | None:
    """(start type, status) of a service, or None when not installed."""
    if name.lower() == "windefend" and not host["defender.installed"]:
        return None
    declared_name = next((n for n in _SERVICES if n.lower() == name.lower()), None)
    if declared_name is not None:
        return host[f"services.{declared_name}.start"], host[f"services.{declared_name}.status"]
    other = host["services.other"].get(name.lower())
    return None if other is None else (other["start"], other["status"])


_SERVICES = ("wuauserv", "EventLog", "WinDefend", "mpssvc")


@probe("service", 1, cost_ms=1)
def service_probe(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    name = str(params["probe"]["name"])
    state = _service(host, name)
    if state is None:
        return {"Name": name, "present": False, "Status": None, "StartType": None}
    declared_name = next((n for n in _SERVICES if n.lower() == name.lower()), name)
    return {"Name": declared_name, "present": True, "Status": state[1], "StartType": state[0]}


_WSMAN = {"Service\\AllowUnencrypted": "winrm.service.allow_unencrypted", "Service\\Auth\\Basic": "winrm.service.basic",
          "Client\\AllowUnencrypted": "winrm.client.allow_unencrypted", "Client\\Auth\\Basic": "winrm.client.basic"}


@probe("wsman_setting", 1, cost_ms=3)
def wsman_probe(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for path in params["probe"]["paths"]:
        if path not in _WSMAN:
            raise PSError(f"Cannot find path 'WSMan:\\localhost\\{path}' because it does not exist.",
                          "System.Management.Automation.ItemNotFoundException")
        out[path] = {"Value": "true" if host[_WSMAN[path]] else "false", "Source": ""}
    return {"wsman": out}


# -- firewall -----------------------------------------------------------------------------------------


def _flag(value: bool) -> str:
    return "True" if value else "False"


@check("windows.firewall.default_inbound_block", 1, cost_ms=2)
def firewall_default_inbound(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    return {"profiles": [{"Name": p, "Enabled": _flag(host[f"firewall.{p.lower()}.enabled"]),
                          "DefaultInboundAction": host[f"firewall.{p.lower()}.default_inbound"],
                          "AllowLocalFirewallRules": _flag(host[f"firewall.{p.lower()}.allow_local_rules"])}
                         for p in PROFILES]}


@check("windows.firewall.logging", 1, cost_ms=2)
def firewall_logging(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    return {"profiles": [{"Name": p, "LogBlocked": _flag(host[f"firewall.{p.lower()}.log_blocked"]),
                          "LogAllowed": "False", "LogMaxSizeKilobytes": host[f"firewall.{p.lower()}.log_max_kb"],
                          "LogFileName": "%systemroot%\\system32\\LogFiles\\Firewall\\pfirewall.log"}
                         for p in PROFILES]}


@runbook("windows.firewall.block_inbound_by_default", 1, cost_ms=5)
def block_inbound(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    names = list(params["profiles"])
    ignored = [n for n in names if not host[f"firewall.{n.lower()}.allow_local_rules"]]
    if ignored:
        raise PSError(f"refused: on profile(s) {', '.join(ignored)} a GPO makes Windows ignore local allow rules, "
                      "so blocking inbound traffic here could cut off WinRM; set the default inbound action in "
                      "that GPO instead")
    created = not host["firewall.osiris_rule"]
    host.state.set("firewall.osiris_rule", True)
    changed = [n for n in names if host[f"firewall.{n.lower()}.default_inbound"] != "Block"]
    for n in changed:
        host.state.set(f"firewall.{n.lower()}.default_inbound", "Block")
    return {"profiles": names, "changed": changed, "management_rule_created": created}


@runbook("windows.firewall.enable_logging", 1, cost_ms=5)
def enable_logging(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    changed = []
    for n in params["profiles"]:
        p = n.lower()
        size = host[f"firewall.{p}.log_max_kb"]
        if not host[f"firewall.{p}.log_blocked"] or size < int(params["min_size_kb"]):
            host.state.set(f"firewall.{p}.log_blocked", True)
            host.state.set(f"firewall.{p}.log_max_kb", max(size, int(params["min_size_kb"])))
            changed.append(n)
    return {"profiles": list(params["profiles"]), "changed": changed}


# -- Defender ---------------------------------------------------------------------------------------


def _defender(host: HostView, cmdlet: str) -> None:
    if not host["defender.installed"]:
        raise command_not_found(cmdlet)


@check("windows.defender.tamper_protection", 1, cost_ms=2)
def tamper(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    _defender(host, "Get-MpComputerStatus")
    on = host["defender.tamper_protected"]
    return {"IsTamperProtected": on, "TamperProtectionSource": "Intune" if on else "",
            "AMRunningMode": "Normal"}


@check("windows.defender.pua_protection", 1, cost_ms=2)
def pua(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    _defender(host, "Get-MpPreference")
    return {"PUAProtection": host["defender.pua_protection"]}


_EXCLUSION_STATE = (("ExclusionPath", "paths", "allowed_paths"),
                    ("ExclusionExtension", "extensions", "allowed_extensions"),
                    ("ExclusionProcess", "processes", "allowed_processes"))


@check("windows.defender.exclusions", 1, cost_ms=2)
def exclusions(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    _defender(host, "Get-MpPreference")
    return {prop: host[f"defender.exclusions.{key}"] for prop, key, _a in _EXCLUSION_STATE}


@runbook("windows.defender.enable_pua_protection", 1, cost_ms=5)
def enable_pua(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    _defender(host, "Get-MpPreference")
    was = host["defender.pua_protection"]
    host.state.set("defender.pua_protection", 1)
    return {"changed": was != 1, "previous": was}


@runbook("windows.defender.remove_exclusions", 1, cost_ms=5)
def remove_exclusions(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    _defender(host, "Get-MpPreference")
    removed = {}
    for prop, key, allowed in _EXCLUSION_STATE:
        current = host[f"defender.exclusions.{key}"]
        drop = [x for x in current if not glob_any(x, params[allowed])]
        host.state.set(f"defender.exclusions.{key}", [x for x in current if x not in drop])
        removed[prop] = drop
    return {"removed": removed}


# -- BitLocker --------------------------------------------------------------------------------------


@check("windows.bitlocker.data_volumes_encrypted", 1, cost_ms=3)
def data_volumes(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    return {"source": "module", "volumes": host["bitlocker.data_volumes"]}


# -- updates ----------------------------------------------------------------------------------------


@check("windows.updates.recent_install", 1, cost_ms=6)
def recent_install(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    now = _now()
    last = now - timedelta(days=host["updates.last_install_days_ago"])
    return {"wu_last_success_utc": _iso(last), "wu_history_count": 212, "wu_error": None,
            "hotfix_id": "KB5039212", "hotfix_installed_on": (last - timedelta(days=1)).strftime("%Y-%m-%d"),
            "now_utc": _iso(now)}


@check("windows.updates.pending_security", 1, cost_ms=12)
def pending(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    now = _now()
    updates = [{"title": f"{u['title']} ({u['kb']})", "kb": [u["kb"]], "msrc_severity": u["severity"],
                "categories": [SECURITY_UPDATES if u["severity"] else CRITICAL_UPDATES],
                "released_utc": _iso(now - timedelta(days=u["age_days"]))} for u in host["updates.pending"]]
    return {"result_code": 2, "updates": updates, "now_utc": _iso(now)}


@check("windows.updates.reboot_pending", 1, cost_ms=1)
def reboot(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    now = _now()
    return {"wu_reboot_required": host["updates.reboot_pending"], "cbs_reboot_pending": False,
            "pending_file_renames": 0, "last_boot_utc": _iso(now - timedelta(days=host["host.uptime_days"])),
            "now_utc": _iso(now)}


# -- accounts -----------------------------------------------------------------------------------------

_INF_KEYS = (("MinimumPasswordAge", "min_age_days"), ("MaximumPasswordAge", "max_age_days"),
             ("MinimumPasswordLength", "min_length"), ("PasswordComplexity", "complexity"),
             ("PasswordHistorySize", "history"), ("LockoutBadCount", "lockout_threshold"),
             ("ResetLockoutCount", "lockout_window_min"), ("LockoutDuration", "lockout_duration_min"),
             ("ClearTextPassword", "reversible"))


def _policy(host: HostView) -> dict[str, Any]:
    return {k: host[f"accounts.policy.{k}"] for _i, k in _INF_KEYS}


def secedit_section(host: HostView) -> str:
    """[System Access] as secedit writes it: MaximumPasswordAge -1 when
    passwords never expire; no lockout duration or window while the
    threshold is 0."""
    p = _policy(host)
    lines = ["[System Access]"]
    for inf, key in _INF_KEYS:
        value = p[key]
        if key in ("lockout_window_min", "lockout_duration_min") and not p["lockout_threshold"]:
            continue
        if key == "max_age_days" and value == 0:
            value = -1
        lines.append(f"{inf} = {int(value)}")
    lines += ["RequireLogonToChangePassword = 0", "ForceLogoffWhenHourExpire = 0",
              'NewAdministratorName = "Administrator"', 'NewGuestName = "Guest"', "LSAAnonymousNameLookup = 0",
              "EnableAdminAccount = 1", f"EnableGuestAccount = {int(host['accounts.guest_enabled'])}"]
    return "\n".join(lines)


def _policy_facts(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    role = model.DOMAIN_ROLE[host.role]
    if host.role == "dc":
        p = _policy(host)
        return {"domain_role": role, "source": "ad",
                "policy": {**{k: int(v) for k, v in p.items() if k not in ("complexity", "reversible")},
                           "complexity": bool(p["complexity"]), "reversible": bool(p["reversible"])},
                "fine_grained": []}
    return {"domain_role": role, "source": "secedit", "text": secedit_section(host)}


for _cid in ("windows.accounts.password_length", "windows.accounts.password_history", "windows.accounts.password_age",
             "windows.accounts.password_complexity", "windows.accounts.lockout"):
    check(_cid, 1, cost_ms=12)(_policy_facts)


def _tighten(host: HostView, want: dict[str, Any]) -> dict[str, Any]:
    changed = [k for k, v in want.items() if host[f"accounts.policy.{k}"] != v]
    for k in changed:
        host.state.set(f"accounts.policy.{k}", want[k])
    names = dict((k, inf) for inf, k in _INF_KEYS)
    return {"changed": [names[k] for k in changed], "domain": host.role == "dc"}


@runbook("windows.accounts.set_password_policy", 1, cost_ms=20)
def set_password_policy(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    p = _policy(host)
    want: dict[str, Any] = {}
    if p["min_length"] < params["min_length"]:
        want["min_length"] = params["min_length"]
    if p["history"] < params["history"]:
        want["history"] = params["history"]
    if p["max_age_days"] <= 0 or p["max_age_days"] > params["max_age_days"]:
        want["max_age_days"] = params["max_age_days"]
    if p["min_age_days"] < params["min_age_days"]:
        want["min_age_days"] = params["min_age_days"]
    if not p["complexity"]:
        want["complexity"] = True
    if p["reversible"]:
        want["reversible"] = False
    return _tighten(host, want)


@runbook("windows.accounts.set_lockout_policy", 1, cost_ms=20)
def set_lockout_policy(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    if params["window_minutes"] > params["duration_minutes"]:
        raise PSError("refused: the reset window cannot be longer than the lockout duration (Windows rejects it)")
    p = _policy(host)
    want: dict[str, Any] = {}
    if p["lockout_threshold"] == 0 or p["lockout_threshold"] > params["threshold"]:
        want["lockout_threshold"] = params["threshold"]
    if 0 <= p["lockout_duration_min"] < params["duration_minutes"]:
        want["lockout_duration_min"] = params["duration_minutes"]
    if p["lockout_window_min"] < params["window_minutes"]:
        want["lockout_window_min"] = params["window_minutes"]
    return _tighten(host, want)


def _guest_sid(host: HostView) -> str:
    return (model.DOMAIN_SID if host.role == "dc" else model.MACHINE_SID[host.role]) + "-501"


@check("windows.accounts.guest_disabled", 1, cost_ms=3)
def guest(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    return {"source": "ad" if host.role == "dc" else "local", "domain_role": model.DOMAIN_ROLE[host.role],
            "name": "Guest", "sid": _guest_sid(host), "enabled": host["accounts.guest_enabled"]}


def _set_flag(host: HostView, path: str, value: bool = True) -> dict[str, Any]:
    """Set a boolean setting; the output says whether it changed."""
    was = host[path]
    host.state.set(path, value)
    return {"changed": was != value}


runbook("windows.accounts.disable_guest", 1, cost_ms=5)(
    lambda host, _p: _set_flag(host, "accounts.guest_enabled", False))


@check("windows.accounts.local_admins", 1, cost_ms=4)
def admins(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    members = host["accounts.admins"]
    orphaned = any(m["name"] == m["sid"] for m in members)
    if host.role == "dc":
        method, reason = "ad", None
    elif orphaned:
        method, reason = "adsi", "Failed to compare two elements in the array."
    else:
        method, reason = "localaccounts", None
    return {"domain_role": model.DOMAIN_ROLE[host.role], "method": method, "fallback_reason": reason,
            "members": members}


@runbook("windows.accounts.remove_admin_members", 1, cost_ms=5)
def remove_admins(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    mine = {model.APPLIANCE_SID, model.DOMAIN_ADMINS, model.DOMAIN_SID + "-513", "S-1-5-32-544", "S-1-5-11"}
    members = host["accounts.admins"]
    removed, kept = [], []
    for sid in params["members"]:
        if sid in mine:
            kept.append(f"{sid}: the appliance account or one of its groups")
        elif fnmatchcase(sid, "S-1-5-21-*-500") or fnmatchcase(sid, "S-1-5-21-*-512"):
            kept.append(f"{sid}: built-in")
        elif any(m["sid"] == sid for m in members):
            members = [m for m in members if m["sid"] != sid]
            removed.append(sid)
    host.state.set("accounts.admins", members)
    return {"removed": removed, "kept": kept}


# -- audit policy -------------------------------------------------------------------------------------


@runbook("windows.audit.enable_subcategory", 1, cost_ms=3)
def enable_subcategory(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    guid = str(params["subcategory"])
    if not params["success"] and not params["failure"]:
        raise PSError("nothing to enable: success and failure are both false")
    path = _audit_setting(host, guid)
    if path == "":  # a subcategory this role's Windows does not have
        raise PSError("auditpol /set failed (87): Error 0x00000057 occurred: The parameter is incorrect.")
    success, failure = _FLAGS[audit_value(host, guid)]
    flags = ((["/success:enable"] if params["success"] and not success else [])
             + (["/failure:enable"] if params["failure"] and not failure else []))
    words = _WORDS[(success or bool(params["success"]), failure or bool(params["failure"]))]
    if path:
        host.state.set(path, words)
    else:
        other = host["audit.other"]
        other[guid.lower()] = words
        host.state.set("audit.other", other)
    return {"subcategory": guid, "changed": flags}


# -- event logs -----------------------------------------------------------------------------------------


def _logs(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    names = list(params["logs"])
    unknown = [n for n in names if n not in ("Security", "Application", "System")]
    if unknown:
        raise PSError(f"There is not an event log on the localhost computer that matches \"{unknown[0]}\".")
    return {"logs": [{"LogName": n, "MaximumSizeInBytes": host[f"eventlog.{n.lower()}.max_kb"] * 1024,
                      "LogMode": host[f"eventlog.{n.lower()}.mode"], "IsEnabled": True} for n in names]}


check("windows.eventlog.security_log", 1, cost_ms=1)(_logs)
check("windows.eventlog.system_logs", 1, cost_ms=1)(_logs)


@runbook("windows.eventlog.configure", 1, cost_ms=5)
def configure_logs(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    kb = -(-int(params["min_size_kb"]) // 64) * 64
    changed = []
    for name in params["logs"]:
        size, mode = f"eventlog.{name.lower()}.max_kb", f"eventlog.{name.lower()}.mode"
        dirty = False
        if host[size] < kb:
            host.state.set(size, kb)
            dirty = True
        if host[mode] != params["mode"]:
            host.state.set(mode, params["mode"])
            dirty = True
        if dirty:
            changed.append(name)
    return {"changed": changed}


# -- SMB, NetBIOS, DNS ------------------------------------------------------------------------------------


@check("windows.smb.server_signing", 1, cost_ms=2)
def server_signing(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    required = host["smb.server.require_signing"]
    return {"RequireSecuritySignature": required, "EnableSecuritySignature": required, "EncryptData": False,
            "RejectUnencryptedAccess": True}


@check("windows.smb.client_signing", 1, cost_ms=2)
def client_signing(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    return {"RequireSecuritySignature": host["smb.client.require_signing"], "EnableSecuritySignature": True}


runbook("windows.smb.require_server_signing", 1, cost_ms=5)(
    lambda host, _p: _set_flag(host, "smb.server.require_signing"))
runbook("windows.smb.require_client_signing", 1, cost_ms=5)(
    lambda host, _p: _set_flag(host, "smb.client.require_signing"))


@check("windows.smb.v1_client_disabled", 1, cost_ms=40)
def smb1_client(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    start = host["smb.client.smb1_driver_start"]
    return {"driver_present": start is not None, "driver_start": start,
            "feature_state": "Disabled" if start is None else "Enabled", "feature_error": None}


@runbook("windows.smb.disable_v1_client", 1, cost_ms=5)
def disable_smb1_client(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    start = host["smb.client.smb1_driver_start"]
    if start is None or start == 4:
        return {"changed": []}
    host.state.set("smb.client.smb1_driver_start", 4)
    return {"changed": ["mrxsmb10 Start", "LanmanWorkstation DependOnService"]}


_ADAPTER = {"Description": "Intel(R) Ethernet Connection (7) I219-LM",
            "SettingID": "{6F0C3A2E-5B1D-4E8A-9C44-0D2B7E1A9F31}"}


@check("windows.network.netbios_disabled", 1, cost_ms=2)
def netbios(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    return {"adapters": [{**_ADAPTER, "TcpipNetbiosOptions": host["network.netbios_options"]}]}


@runbook("windows.network.disable_netbios", 1, cost_ms=5)
def disable_netbios(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    if host["network.netbios_options"] == 2:
        return {"changed": []}
    host.state.set("network.netbios_options", 2)
    return {"changed": [_ADAPTER["Description"]]}


@check("windows.dns.servers_allowlist", 1, cost_ms=2)
def dns(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    return {"interfaces": [{"InterfaceAlias": "Ethernet", "InterfaceIndex": 12, "AddressFamily": 2,
                            "ServerAddresses": host["dns.servers"]},
                           {"InterfaceAlias": "Ethernet", "InterfaceIndex": 12, "AddressFamily": 23,
                            "ServerAddresses": ["fec0:0:0:ffff::1%1", "fec0:0:0:ffff::2%1"]}]}


@runbook("windows.dns.set_servers", 1, cost_ms=5)
def set_dns(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    want = list(params["servers"])
    changed = [] if host["dns.servers"] == want else ["Ethernet"]
    host.state.set("dns.servers", want)
    return {"changed": changed, "servers": want}


# -- time ----------------------------------------------------------------------------------------------


def w32tm_status(host: HostView) -> str:
    source = host["time.source"]
    local = source in ("Local CMOS Clock", "Free-running System Clock")
    lines = [
        "Leap Indicator: 3(not synchronized)" if local else "Leap Indicator: 0(no warning)",
        "Stratum: 1 (primary reference - syncd by radio clock)" if local
        else "Stratum: 3 (secondary reference - syncd by (S)NTP)",
        "Precision: -23 (119.209ns per tick)",
        "Root Delay: 0.0000000s" if local else "Root Delay: 0.0312500s",
        "Root Dispersion: 10.0000000s" if local else "Root Dispersion: 0.0523170s",
        "ReferenceId: 0x4C4F434C (source name:  \"LOCL\")" if local
        else "ReferenceId: 0x0A14000A (source IP:  10.20.0.10)",
        "Last Successful Sync Time: unspecified" if local else "Last Successful Sync Time: 8/20/2024 9:14:02 AM",
        f"Source: {source}",
        "Poll Interval: 10 (1024s)",
        "",
        f"Phase Offset: {host['time.offset_seconds']:.7f}s",
        "ClockRate: 0.0156250s",
        "State Machine: 2 (Sync)",
        "Time Source Flags: 0 (None)",
        "Server Role: 0 (None)",
        "Last Sync Error: 0 (The command completed successfully.)",
        f"Time since Last Good Sync Time: {host['time.since_sync_seconds']:.7f}s",
    ]
    return "\n".join(lines)


@check("windows.time.synchronized", 1, cost_ms=4)
def time_status(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    running = host["time.service_running"]
    facts = {"domain_role": model.DOMAIN_ROLE[host.role], "type": host["time.type"],
             "ntp_server": host["time.ntp_server"],
             "service_status": "Running" if running else "Stopped", "service_start": "Automatic"}
    if not running:
        return {**facts, "exit_code": -2147023834,
                "status": "The following error occurred: The service has not been started. (0x80070426)"}
    return {**facts, "exit_code": 0, "status": w32tm_status(host)}


@runbook("windows.time.configure_sync", 1, cost_ms=10)
def configure_time(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    pdc = host.role == "dc"  # the lab's DC is the PDC emulator (DomainRole 5)
    want = {"time.type": "NTP", "time.ntp_server": params["ntp_servers"]} if pdc else {"time.type": "NT5DS"}
    changed = [k.split(".")[1] for k, v in want.items() if host[k] != v]
    for k, v in want.items():
        host.state.set(k, v)
    if not host["time.service_running"]:
        host.state.set("time.service_running", True)
        changed.append("started")
    # /resync: the source is the configured one, the clock is corrected
    host.state.set("time.source", params["ntp_servers"].split()[0] if pdc else f"DC01.{model.DOMAIN_FQDN}")
    host.state.set("time.offset_seconds", 0.0003)
    host.state.set("time.since_sync_seconds", 2.0)
    return {"changed": changed, "type": want["time.type"]}


# -- services ---------------------------------------------------------------------------------------------


@runbook("windows.services.restore", 1, cost_ms=10)
def restore_service(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    name = str(params["service"])
    if name not in services.RESTORED:
        raise PSError(f"refused: not a service this runbook restores: {name}")
    want, must_run = services.RESTORED[name]
    if name == "WinDefend" and not host["defender.installed"]:
        raise PSError(f"Cannot find any service with service name '{name}'.")
    start, status = f"services.{name}.start", f"services.{name}.status"
    changed = []
    if host[start] == "Disabled" or (must_run and host[start] != want):
        host.state.set(start, want)
        changed.append("StartType")
    if must_run and host[status] != "Running":
        host.state.set(status, "Running")
        changed.append("started")
    return {"service": name, "changed": changed}


@runbook("windows.services.restore_firewall", 1, cost_ms=10)
def restore_firewall(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    rules = int(host["firewall.winrm_rule_active"]) + int(host["firewall.osiris_rule"])
    if not rules:
        raise PSError("refused: no active inbound allow rule for WinRM (TCP 5985/5986) is stored; starting the "
                      "firewall could cut the appliance off")
    changed = []
    if host["services.mpssvc.start"] != "Automatic":
        host.state.set("services.mpssvc.start", "Automatic")
        changed.append("StartType")
    if host["services.mpssvc.status"] != "Running":
        host.state.set("services.mpssvc.status", "Running")
        changed.append("started")
    return {"service": "mpssvc", "changed": changed, "winrm_rules": rules}


# -- backup ------------------------------------------------------------------------------------------------


@check("windows.backup.recent", 1, cost_ms=30)
def backup(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    now = _now()
    if not host["backup.installed"]:
        return {"installed": False, "now_utc": _iso(now)}
    hours = host["backup.last_success_hours_ago"]
    ok = None if hours is None else now - timedelta(hours=hours)
    hr = host["backup.last_result_hr"]
    last = now - timedelta(hours=2) if hr else ok
    return {"installed": True, "policy_configured": host["backup.policy"],
            "LastSuccessfulBackupTime": None if ok is None else _iso(ok),
            "LastBackupTime": None if last is None else _iso(last),
            "LastBackupResultHR": hr, "NumberOfVersions": host["backup.versions"], "now_utc": _iso(now)}


# -- persistence -------------------------------------------------------------------------------------------

check("windows.persistence.scheduled_tasks", 1, cost_ms=15)(lambda host, _p: {"tasks": host["persistence.tasks"]})
check("windows.persistence.run_keys", 1, cost_ms=1)(lambda host, _p: {"entries": host["persistence.run"]})


@runbook("windows.persistence.disable_task", 1, cost_ms=5)
def disable_task(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    full = str(params["path"])
    if fnmatchcase(full.lower(), "\\microsoft\\*"):
        raise PSError("refused: tasks under \\Microsoft\\ belong to Windows")
    tasks = host["persistence.tasks"]
    found, changed = False, False
    for t in tasks:
        if t["path"].lower() == full.lower():
            found = True
            if t["state"] != "Disabled":
                t["state"], changed = "Disabled", True
    host.state.set("persistence.tasks", tasks)
    return {"path": full, "found": found, "changed": changed}


@runbook("windows.persistence.remove_run_value", 1, cost_ms=5)
def remove_run(host: HostView, params: Mapping[str, Any]) -> dict[str, Any]:
    if params["key"] not in persistence.RUN_KEYS:
        raise PSError(f"unknown key {params['key']}")
    entries = host["persistence.run"]
    hit = [e for e in entries if e["key"] == params["key"] and e["name"] == params["name"]]
    host.state.set("persistence.run", [e for e in entries if e not in hit])
    removed = hit[0]["program"] if hit else None
    return {"key": params["key"], "name": params["name"], "removed_program": removed, "changed": bool(hit)}


# -- WinRM ---------------------------------------------------------------------------------------------------

runbook("windows.winrm.disallow_unencrypted", 1, cost_ms=5)(
    lambda host, _p: _set_flag(host, "winrm.service.allow_unencrypted", False))


@runbook("windows.winrm.harden_client", 1, cost_ms=5)
def harden_client(host: HostView, _params: Mapping[str, Any]) -> dict[str, Any]:
    changed = [p for p in ("Client\\AllowUnencrypted", "Client\\Auth\\Basic") if host[_WSMAN[p]]]
    for p in changed:
        host.state.set(_WSMAN[p], False)
    return {"changed": changed}
