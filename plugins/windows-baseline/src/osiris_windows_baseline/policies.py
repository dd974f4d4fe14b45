"""Checks of settings that live in the registry (security options and
administrative-template policies), with the runbooks that set them.

Checks of one value against a condition (LLMNR, NTLM, LSA, UAC, audit
options, cached logons) are the check pack ``packs/policies.yaml`` (probe
type ``registry_value``). Here remain the checks whose logic needs code:
Remote Desktop's effective values (the policy's, else the listener's, and
only while RDP is on), bit masks, any-of choices, lists of protocols; every
runbook of these settings; and the generic ``windows.registry.set_value``
that a pack's heal entry may name.

Each check's fragment reads its values with ``RegistryKey.GetValue`` (an
absent key or value reads as ``None``) and reports them under ``values``,
keyed ``<provider path>\\<name>``. The evaluator applies Windows' own
default where a value is absent (e.g. ``NoLMHash`` absent means 1 since
Windows Vista), so "not configured" is judged by what the OS then does.

Registry values set by a Group Policy Object are re-applied at the next
policy refresh: a runbook's local change to a GPO-managed value does not
stick, the check fails again, and the flap guard escalates. The fix then
belongs in the GPO, which the escalation says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from osiris import Risk, RunbookSpec, Severity, Verdict

from .common import DAY, MEMBERS, check, failed, passed, runbook, schema, verdict
from .facts import FactError, as_int
from .ps import RegValue, RegWrite, dword, dword_param, lit, read_registry, runbook_header, write_registry

LSA = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Lsa"
POL_SYSTEM = "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System"
TS = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server"
RDP_TCP = TS + "\\WinStations\\RDP-Tcp"
TS_POLICY = "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows NT\\Terminal Services"
SCHANNEL = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL\\Protocols"
LEGACY_PROTOCOLS = ("SSL 2.0", "SSL 3.0", "TLS 1.0", "TLS 1.1")
REMOVABLE_DISKS = "{53f5630d-b6bf-11d0-94f2-00a0c91efb8b}"

# Every registry value a check of this module reads, by check id.
READS: dict[str, tuple[RegValue, ...]] = {}
# Every registry value a runbook of this module writes, by runbook id.
WRITES: dict[str, tuple[RegWrite, ...]] = {}


def _values(facts: Mapping[str, Any]) -> Mapping[str, Any]:
    values = facts.get("values")
    if not isinstance(values, Mapping):
        raise FactError("facts lack 'values' (registry values by path)")
    return values


def _get(facts: Mapping[str, Any], rv: RegValue, default: int | None = None) -> int | None:
    return as_int(_values(facts).get(rv.ref), default)


def _reg_check(id: str, values: tuple[RegValue, ...], **kw: Any):
    READS[id] = values
    version = kw.pop("version", 1)
    return check(id, script=read_registry(id, values, version, kw.pop("doc", "")),
                 reads="registry: " + "; ".join(v.ref.replace("HKLM:\\", "HKLM\\") for v in values), **kw)


def _reg_runbook(id: str, writes: tuple[RegWrite, ...], *, guard: str = "", after: str = "", **kw: Any):
    WRITES[id] = writes
    return runbook(id, script=write_registry(id, writes, kw.pop("version", 1), guard=guard, after=after), **kw)


# -- LLMNR -------------------------------------------------------------------------------------

LLMNR = RegValue("HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows NT\\DNSClient", "EnableMulticast")


# -- NTLM / LM -------------------------------------------------------------------------------

LM_COMPAT = RegValue(LSA, "LmCompatibilityLevel")
NO_LM_HASH = RegValue(LSA, "NoLMHash")
# -- accounts: blank passwords, anonymous enumeration ----------------------------------------------

BLANK = RegValue(LSA, "LimitBlankPasswordUse")
ANON_SAM = RegValue(LSA, "RestrictAnonymousSAM")
ANON = RegValue(LSA, "RestrictAnonymous")
EVERYONE_ANON = RegValue(LSA, "EveryoneIncludesAnonymous")


# -- credentials in memory (WDigest) -------------------------------------------------------------

WDIGEST = RegValue("HKLM:\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\WDigest", "UseLogonCredential")


# -- UAC ----------------------------------------------------------------------------------------

ENABLE_LUA = RegValue(POL_SYSTEM, "EnableLUA")
ADMIN_PROMPT = RegValue(POL_SYSTEM, "ConsentPromptBehaviorAdmin")
TOKEN_FILTER = RegValue(POL_SYSTEM, "LocalAccountTokenFilterPolicy")


# -- audit-related policies ------------------------------------------------------------------------

SCENO = RegValue(LSA, "SCENoApplyLegacyAuditPolicy")
SCRIPT_BLOCK = RegValue("HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\PowerShell\\ScriptBlockLogging",
                        "EnableScriptBlockLogging")
CMDLINE = RegValue(POL_SYSTEM + "\\Audit", "ProcessCreationIncludeCmdLine_Enabled")


# -- Remote Desktop ----------------------------------------------------------------------------------

DENY_TS = RegValue(TS, "fDenyTSConnections")
DENY_TS_POLICY = RegValue(TS_POLICY, "fDenyTSConnections")
NLA = RegValue(RDP_TCP, "UserAuthentication")
NLA_POLICY = RegValue(TS_POLICY, "UserAuthentication")
LAYER = RegValue(RDP_TCP, "SecurityLayer")
LAYER_POLICY = RegValue(TS_POLICY, "SecurityLayer")
LEVEL = RegValue(RDP_TCP, "MinEncryptionLevel")
LEVEL_POLICY = RegValue(TS_POLICY, "MinEncryptionLevel")
IDLE_POLICY = RegValue(TS_POLICY, "MaxIdleTime")


def _effective(facts: Mapping[str, Any], policy: RegValue, local: RegValue, default: int | None) -> int | None:
    p = _get(facts, policy)
    return p if p is not None else _get(facts, local, default)


def rdp_enabled(facts: Mapping[str, Any]) -> bool:
    return _effective(facts, DENY_TS_POLICY, DENY_TS, 1) == 0


def evaluate_nla(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    if not rdp_enabled(facts):
        return passed("Remote Desktop is disabled")
    if _effective(facts, NLA_POLICY, NLA, 1) == 1:
        return passed("Remote Desktop requires Network Level Authentication")
    return failed("Remote Desktop accepts connections without Network Level Authentication")


_LAYERS = {0: "RDP", 1: "Negotiate", 2: "TLS"}
_LEVELS = {1: "Low", 2: "Client Compatible", 3: "High", 4: "FIPS"}


def evaluate_rdp_encryption(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    if not rdp_enabled(facts):
        return passed("Remote Desktop is disabled")
    layer = _effective(facts, LAYER_POLICY, LAYER, 2)
    level = _effective(facts, LEVEL_POLICY, LEVEL, 2)
    problems = []
    if layer != 2:
        problems.append(f"security layer {_LAYERS.get(layer, layer)} (TLS required)")
    if (level or 0) < 3:
        problems.append(f"encryption level {_LEVELS.get(level, level)} (High required)")
    return verdict(problems, "Remote Desktop uses TLS with High encryption", "Remote Desktop: ")


def evaluate_rdp_idle(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    if not rdp_enabled(facts):
        return passed("Remote Desktop is disabled")
    ms = _get(facts, IDLE_POLICY)
    limit = int(params["max_idle_minutes"])
    if not ms:
        return failed("idle Remote Desktop sessions are never limited")
    if ms > limit * 60000:
        return failed(f"idle Remote Desktop sessions end after {ms // 60000} min (limit {limit} min)")
    return passed(f"idle Remote Desktop sessions end after {ms // 60000} min")


# -- cached logons ------------------------------------------------------------------------------------

CACHED = RegValue("HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon", "CachedLogonsCount")


# -- AutoRun / AutoPlay, removable storage ------------------------------------------------------------------

EXPLORER_POLICY = "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\Explorer"
NO_DRIVE_AUTORUN = RegValue(EXPLORER_POLICY, "NoDriveTypeAutoRun")
NO_AUTORUN = RegValue(EXPLORER_POLICY, "NoAutorun")
NO_AUTOPLAY_NONVOLUME = RegValue("HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\Explorer", "NoAutoplayfornonVolume")


def evaluate_autorun(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    problems = []
    drives = _get(facts, NO_DRIVE_AUTORUN)
    if drives is None or (drives & 0xFF) != 0xFF:
        problems.append("AutoPlay is not turned off for all drives (NoDriveTypeAutoRun != 255)")
    if _get(facts, NO_AUTORUN) != 1:
        problems.append("AutoRun commands are executed (NoAutorun != 1)")
    if _get(facts, NO_AUTOPLAY_NONVOLUME) != 1:
        problems.append("AutoPlay is allowed for non-volume devices (MTP phones, cameras)")
    return verdict(problems, "AutoRun and AutoPlay are off for every drive and device")


RSD = "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\RemovableStorageDevices"
DENY_ALL = RegValue(RSD, "Deny_All")
DENY_WRITE = RegValue(RSD + "\\" + REMOVABLE_DISKS, "Deny_Write")
RDV_DENY = RegValue("HKLM:\\SYSTEM\\CurrentControlSet\\Policies\\Microsoft\\FVE", "RDVDenyWriteAccess")


def evaluate_removable(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    accept = set(params["accept"])
    found = {
        "deny_all": _get(facts, DENY_ALL) == 1,
        "deny_write": _get(facts, DENY_WRITE) == 1,
        "bitlocker_required": _get(facts, RDV_DENY) == 1,
    }
    words = {"deny_all": "all removable storage is denied", "deny_write": "writing to removable disks is denied",
             "bitlocker_required": "writing requires BitLocker To Go encryption"}
    ok = [words[k] for k, v in found.items() if v and k in accept]
    if ok:
        return passed("; ".join(ok))
    return failed("ePHI can be copied to unencrypted removable disks (no Deny_All, Deny_Write or "
                  "RDVDenyWriteAccess policy)")


# -- automatic updates ----------------------------------------------------------------------------------------

AU = "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU"
NO_AUTO_UPDATE = RegValue(AU, "NoAutoUpdate")
AU_OPTIONS = RegValue(AU, "AUOptions")
_AU = {2: "notify before download", 3: "download, notify to install", 4: "download and install on a schedule",
       5: "local administrator chooses", 7: "download, notify to install, notify to restart"}


def evaluate_automatic_updates(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    if _get(facts, NO_AUTO_UPDATE) == 1:
        return failed("automatic updates are disabled by policy (NoAutoUpdate = 1)")
    opt = _get(facts, AU_OPTIONS)
    if opt is None:
        return passed("automatic updates are on (not restricted by policy)")
    allowed = [int(x) for x in params["allowed_options"]]
    if opt not in allowed:
        return failed(f"automatic updates only {_AU.get(opt, f'option {opt}')} (AUOptions = {opt}; "
                      f"allowed {', '.join(map(str, allowed))})")
    return passed(f"automatic updates: {_AU.get(opt, opt)}")


# -- SCHANNEL legacy protocols ------------------------------------------------------------------------------------


def _schannel(protocol: str, side: str, name: str) -> RegValue:
    return RegValue(f"{SCHANNEL}\\{protocol}\\{side}", name)


SCHANNEL_VALUES = tuple(_schannel(p, s, n) for p in LEGACY_PROTOCOLS for s in ("Server", "Client")
                        for n in ("Enabled", "DisabledByDefault"))
TLS12_SERVER = _schannel("TLS 1.2", "Server", "Enabled")


def evaluate_tls(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    default_off = set(params["os_default_disabled"])
    problems = []
    for protocol in params["protocols"]:
        for side in params["sides"]:
            enabled = _get(facts, _schannel(protocol, side, "Enabled"))
            if enabled == 0:
                continue
            if enabled is None and protocol in default_off:
                continue
            why = "not configured, the OS default enables it" if enabled is None else f"Enabled = {enabled}"
            problems.append(f"{protocol} {side.lower()} ({why})")
    return verdict(problems, f"{', '.join(params['protocols'])} are disabled in SCHANNEL",
                   "legacy protocols enabled: ")


# -- the checks and runbooks ------------------------------------------------------------------------------------

_RDP_STATE = (DENY_TS, DENY_TS_POLICY)

CHECKS = [
    _reg_check(
        "windows.rdp.nla_required", (*_RDP_STATE, NLA_POLICY, NLA),
        title="Remote Desktop requires Network Level Authentication",
        hipaa=("164.312(d)", "164.312(e)(1)"), cis="18.10.57.3.9.4", severity=Severity.HIGH,
        evaluate=evaluate_nla,
        description="Effective value: the Terminal Services policy when set, else the RDP-Tcp listener's own.",
    ),
    _reg_check(
        "windows.rdp.encryption", (*_RDP_STATE, LAYER_POLICY, LAYER, LEVEL_POLICY, LEVEL),
        title="Remote Desktop uses TLS with High encryption",
        hipaa=("164.312(e)(2)(ii)", "164.312(e)(1)"), cis="18.10.57.3.9.3, 18.10.57.3.9.5",
        severity=Severity.MEDIUM, evaluate=evaluate_rdp_encryption,
    ),
    _reg_check(
        "windows.session.rdp_idle_limit", (*_RDP_STATE, IDLE_POLICY),
        title="Idle Remote Desktop sessions are ended",
        hipaa=("164.312(a)(2)(iii)",), cis="18.10.57.3.10.1", severity=Severity.MEDIUM,
        evaluate=evaluate_rdp_idle, params={"max_idle_minutes": 15},
    ),
    _reg_check(
        "windows.media.autorun_disabled", (NO_DRIVE_AUTORUN, NO_AUTORUN, NO_AUTOPLAY_NONVOLUME),
        title="AutoRun and AutoPlay are turned off",
        hipaa=("164.308(a)(5)(ii)(B)", "164.310(d)(1)"), cis="18.10.8.1, 18.10.8.2, 18.10.8.3",
        severity=Severity.MEDIUM, evaluate=evaluate_autorun,
    ),
    _reg_check(
        "windows.media.removable_storage", (DENY_ALL, DENY_WRITE, RDV_DENY),
        title="ePHI cannot be written to unencrypted removable storage",
        hipaa=("164.310(d)(1)", "164.312(a)(2)(iv)"), cis="18.10.9.3", roles=MEMBERS,
        severity=Severity.HIGH, evaluate=evaluate_removable,
        params={"accept": ["deny_all", "deny_write", "bitlocker_required"]},
        description="Passes when removable storage is denied, read-only, or writable only once BitLocker To Go "
                    "encrypts it.",
    ),
    _reg_check(
        "windows.updates.automatic", (NO_AUTO_UPDATE, AU_OPTIONS),
        title="Automatic updates are enabled",
        hipaa=("164.308(a)(5)(ii)(B)", "164.308(a)(1)(ii)(B)"), cis="18.10.93.2.1", severity=Severity.HIGH,
        evaluate=evaluate_automatic_updates, params={"allowed_options": [3, 4, 7]},
    ),
    _reg_check(
        "windows.tls.legacy_protocols_disabled", SCHANNEL_VALUES,
        title="SSL 2.0/3.0 and TLS 1.0/1.1 are disabled in SCHANNEL",
        hipaa=("164.312(e)(2)(ii)", "164.312(e)(1)"), severity=Severity.HIGH, interval=DAY,
        evaluate=evaluate_tls,
        params={"protocols": list(LEGACY_PROTOCOLS), "sides": ["Server", "Client"],
                "os_default_disabled": ["SSL 2.0"]},
        description="A protocol counts as disabled when its Enabled value is 0, or when it is not configured "
                    "and Windows disables it by default (SSL 2.0).",
    ),
]


def _lsa_dword(name: str, value: int) -> RegWrite:
    return dword(LSA, name, value)


# Refuse when the change could cut off an appliance that logs on with a local
# (non-domain) administrator account other than the built-in one: with UAC
# on, such a network logon gets a filtered token (UAC remote restrictions)
# and WinRM refuses it, unless LocalAccountTokenFilterPolicy is 1.
_UAC_GUARD = """\
$me = [Security.Principal.WindowsIdentity]::GetCurrent()
$local = $me.Name.Split('\\')[0] -eq $env:COMPUTERNAME
$builtin = $me.User.Value -like 'S-1-5-21-*-500'
$filter = (Get-Item -LiteralPath """ + lit(TOKEN_FILTER.key) + """).GetValue(""" + lit(TOKEN_FILTER.name) + """, 0)
if ($local -and -not $builtin -and [int]$filter -ne 1) {
    throw ('refused: the appliance logs on as the local account ' + $me.Name + '; with UAC on, its remote logons ' +
           'would get a filtered token and WinRM would refuse it after the next restart. Use a domain account ' +
           'or the built-in Administrator for the appliance first.')
}
"""

# Refuse when TLS 1.2 itself is disabled: turning the older protocols off
# would then leave the WinRM HTTPS listener with no protocol at all.
_TLS_GUARD = """\
$t12 = Get-Item -LiteralPath """ + lit(TLS12_SERVER.key) + """ -ErrorAction SilentlyContinue
if ($null -ne $t12 -and $t12.GetValue('Enabled', $null) -eq 0) {
    throw 'refused: TLS 1.2 (server) is disabled on this host; disabling TLS 1.0/1.1 as well would leave the WinRM HTTPS listener without a protocol'
}
"""

_TLS_WRITES = tuple(w for p in LEGACY_PROTOCOLS for s in ("Server", "Client")
                    for w in (dword(f"{SCHANNEL}\\{p}\\{s}", "Enabled", 0),
                              dword(f"{SCHANNEL}\\{p}\\{s}", "DisabledByDefault", 1)))

RUNBOOKS = [
    _reg_runbook(
        "windows.network.disable_llmnr", (dword(LLMNR.key, LLMNR.name, 0),),
        title="Turn off LLMNR by policy", fixes=("windows.network.llmnr_disabled",), risk=Risk.LOW, timeout=30,
        description="Sets EnableMulticast = 0 (the 'Turn off multicast name resolution' policy). DNS is not "
                    "affected; names resolve through the domain's DNS servers.",
    ),
    _reg_runbook(
        "windows.ntlm.set_lm_compatibility",
        (dword_param(LM_COMPAT.key, LM_COMPAT.name, "[int]$P.level", lambda p: int(p["level"])),),
        title="Set the LAN Manager authentication level", fixes=("windows.ntlm.lm_compatibility",),
        risk=Risk.MEDIUM, timeout=30,
        params_schema=schema({"level": {"type": "integer", "enum": [3, 4, 5]}}, ("level",)),
        description="Sets LmCompatibilityLevel (5: NTLMv2 only, refuse LM and NTLM). Medium risk: old scanners, "
                    "copiers and NAS devices that only speak NTLMv1 stop authenticating.",
        management="the appliance authenticates with NTLMv2 (pyspnego), Kerberos or TLS client credentials, "
                   "never NTLMv1, so level 5 leaves its WinRM logons working.",
    ),
    _reg_runbook(
        "windows.ntlm.disable_lm_hash", (_lsa_dword("NoLMHash", 1),),
        title="Stop storing LAN Manager hashes", fixes=("windows.ntlm.no_lm_hash",), risk=Risk.LOW, timeout=30,
        description="Sets NoLMHash = 1; existing LM hashes disappear as passwords change.",
    ),
    _reg_runbook(
        "windows.accounts.restrict_blank_passwords", (_lsa_dword("LimitBlankPasswordUse", 1),),
        title="Limit blank-password accounts to console logon",
        fixes=("windows.accounts.blank_password_console_only",), risk=Risk.LOW, timeout=30,
        description="Sets LimitBlankPasswordUse = 1 (Windows' default).",
    ),
    _reg_runbook(
        "windows.accounts.restrict_anonymous",
        (_lsa_dword("RestrictAnonymousSAM", 1), _lsa_dword("RestrictAnonymous", 1),
         _lsa_dword("EveryoneIncludesAnonymous", 0)),
        title="Refuse anonymous enumeration of accounts and shares",
        fixes=("windows.accounts.anonymous_restrictions",), risk=Risk.LOW, timeout=30,
        description="Sets RestrictAnonymousSAM = 1, RestrictAnonymous = 1, EveryoneIncludesAnonymous = 0. "
                    "Authenticated sessions (the appliance's included) are unaffected.",
    ),
    _reg_runbook(
        "windows.lsa.disable_wdigest", (dword(WDIGEST.key, WDIGEST.name, 0),),
        title="Stop WDigest keeping clear-text passwords", fixes=("windows.lsa.wdigest_disabled",), risk=Risk.LOW,
        timeout=30, description="Sets UseLogonCredential = 0; passwords already in memory go at the next logon.",
    ),
    _reg_runbook(
        "windows.uac.enable",
        (dword(ENABLE_LUA.key, ENABLE_LUA.name, 1),
         dword_param(ADMIN_PROMPT.key, ADMIN_PROMPT.name, "[int]$P.admin_prompt", lambda p: int(p["admin_prompt"]))),
        guard=_UAC_GUARD,
        title="Turn User Account Control on", fixes=("windows.uac.admin_approval",), risk=Risk.MEDIUM, timeout=30,
        params_schema=schema({"admin_prompt": {"type": "integer", "enum": [1, 2, 5]}}, ("admin_prompt",)),
        description="Sets EnableLUA = 1 (effective after the next restart) and ConsentPromptBehaviorAdmin. Medium "
                    "risk: old software that writes to protected locations breaks under UAC.",
        management="with UAC on, remote logons of local accounts other than the built-in Administrator get a "
                   "filtered token and WinRM refuses them; the runbook refuses to run when the appliance's own "
                   "account is such a local account and LocalAccountTokenFilterPolicy is not 1. Domain accounts "
                   "in Administrators keep their full token over WinRM.",
    ),
    _reg_runbook(
        "windows.audit.force_subcategory_override", (_lsa_dword("SCENoApplyLegacyAuditPolicy", 1),),
        title="Make audit subcategory settings override categories",
        fixes=("windows.audit.subcategory_override",), risk=Risk.LOW, timeout=30,
        description="Sets SCENoApplyLegacyAuditPolicy = 1.",
    ),
    _reg_runbook(
        "windows.audit.enable_script_block_logging", (dword(SCRIPT_BLOCK.key, SCRIPT_BLOCK.name, 1),),
        title="Turn on PowerShell script block logging", fixes=("windows.audit.powershell_script_blocks",),
        risk=Risk.LOW, timeout=30,
        description="Sets EnableScriptBlockLogging = 1. The appliance's own scripts are then logged too; they "
                    "carry no secrets (parameters are data, credentials never reach the host's scripts).",
    ),
    _reg_runbook(
        "windows.audit.enable_command_line", (dword(CMDLINE.key, CMDLINE.name, 1),),
        title="Include command lines in process creation events", fixes=("windows.audit.process_command_line",),
        risk=Risk.LOW, timeout=30, description="Sets ProcessCreationIncludeCmdLine_Enabled = 1.",
    ),
    _reg_runbook(
        "windows.rdp.require_nla", (dword(NLA_POLICY.key, NLA_POLICY.name, 1),),
        title="Require Network Level Authentication for Remote Desktop", fixes=("windows.rdp.nla_required",),
        risk=Risk.LOW, timeout=30,
        description="Sets the Terminal Services policy UserAuthentication = 1; sessions already open stay open, "
                    "new connections must authenticate first (every supported RDP client can).",
        management="the appliance uses WinRM, not Remote Desktop.",
    ),
    _reg_runbook(
        "windows.rdp.require_tls_high",
        (dword(LAYER_POLICY.key, LAYER_POLICY.name, 2), dword(LEVEL_POLICY.key, LEVEL_POLICY.name, 3)),
        title="Require TLS and High encryption for Remote Desktop", fixes=("windows.rdp.encryption",),
        risk=Risk.LOW, timeout=30,
        description="Sets the Terminal Services policies SecurityLayer = 2 (TLS) and MinEncryptionLevel = 3 "
                    "(High) for new connections.",
        management="the appliance uses WinRM, not Remote Desktop.",
    ),
    _reg_runbook(
        "windows.session.set_rdp_idle_limit",
        (dword_param(IDLE_POLICY.key, IDLE_POLICY.name, "[int]$P.minutes * 60000", lambda p: int(p["minutes"]) * 60000),),
        title="End idle Remote Desktop sessions", fixes=("windows.session.rdp_idle_limit",), risk=Risk.LOW,
        timeout=30, params_schema=schema({"minutes": {"type": "integer", "minimum": 1, "maximum": 60}}, ("minutes",)),
        description="Sets the Terminal Services policy MaxIdleTime; applies to sessions that go idle from now on.",
        management="WinRM shells are not Remote Desktop sessions; their own idle timeout is WinRM's.",
    ),
    _reg_runbook(
        "windows.session.limit_cached_logons",
        (RegWrite(CACHED.key, CACHED.name, "String", "[string][int]$P.count", lambda p: str(int(p["count"]))),),
        title="Limit cached domain logons", fixes=("windows.session.cached_logons",), risk=Risk.LOW, timeout=30,
        params_schema=schema({"count": {"type": "integer", "minimum": 0, "maximum": 10}}, ("count",)),
        description="Sets CachedLogonsCount (REG_SZ, as Windows keeps it). Laptops off the network can still "
                    "log on with the last users' cached credentials, up to that number.",
    ),
    _reg_runbook(
        "windows.media.disable_autorun",
        (dword(NO_DRIVE_AUTORUN.key, NO_DRIVE_AUTORUN.name, 255), dword(NO_AUTORUN.key, NO_AUTORUN.name, 1),
         dword(NO_AUTOPLAY_NONVOLUME.key, NO_AUTOPLAY_NONVOLUME.name, 1)),
        title="Turn off AutoRun and AutoPlay", fixes=("windows.media.autorun_disabled",), risk=Risk.LOW, timeout=30,
        description="Sets NoDriveTypeAutoRun = 255, NoAutorun = 1 and NoAutoplayfornonVolume = 1.",
    ),
    _reg_runbook(
        "windows.media.deny_removable_write", (dword(DENY_WRITE.key, DENY_WRITE.name, 1),),
        title="Deny writing to removable disks", fixes=("windows.media.removable_storage",), risk=Risk.MEDIUM,
        timeout=30,
        description="Sets the Removable Disks: Deny write access policy (Deny_Write = 1). Medium risk: staff "
                    "who copy to USB sticks are stopped; reading still works.",
    ),
    _reg_runbook(
        "windows.updates.enable_automatic",
        (dword(NO_AUTO_UPDATE.key, NO_AUTO_UPDATE.name, 0),
         dword_param(AU_OPTIONS.key, AU_OPTIONS.name, "[int]$P.au_option", lambda p: int(p["au_option"]))),
        title="Enable automatic updates", fixes=("windows.updates.automatic",), risk=Risk.LOW, timeout=30,
        params_schema=schema({"au_option": {"type": "integer", "enum": [3, 4, 7]}}, ("au_option",)),
        description="Sets NoAutoUpdate = 0 and AUOptions (4: install on a schedule, for workstations; 3 or 7: "
                    "download and notify, for servers whose restarts are planned).",
    ),
    _reg_runbook(
        "windows.tls.disable_legacy_protocols", _TLS_WRITES, guard=_TLS_GUARD,
        title="Disable SSL 2.0/3.0 and TLS 1.0/1.1 in SCHANNEL", fixes=("windows.tls.legacy_protocols_disabled",),
        risk=Risk.MEDIUM, timeout=30,
        description="Sets Enabled = 0 and DisabledByDefault = 1 for the server and client side of each legacy "
                    "protocol; effective after the next restart. Medium risk: old clients, printers and "
                    "applications pinned to TLS 1.0 stop connecting.",
        management="the appliance's WinRM HTTPS connections negotiate TLS 1.2 or 1.3 (and NTLM transport does "
                   "not use SCHANNEL TLS); TLS 1.2 and 1.3 are never touched, and the runbook refuses to run when "
                   "TLS 1.2 is itself disabled, which would leave the listener with no protocol.",
    ),
]


# -- the generic runbook check packs may name -----------------------------------------------------------------

SET_VALUE_ID = "windows.registry.set_value"
SET_VALUE = runbook_header(SET_VALUE_ID, 1, """\
Sets one registry value under HKLM to the data a check pack's heal entry
gives, where it differs (data and kind); running it again changes nothing.
Every input is data: the path, name, kind and value arrive in $P.""") + """\
$path = [string]$P.path
$name = [string]$P.name
$kind = [string]$P.kind
if (-not $path.StartsWith('HKLM:\\', [StringComparison]::OrdinalIgnoreCase)) { throw ('refused: not a key under HKLM: ' + $path) }
if ($kind -ne 'DWord' -and $kind -ne 'String') { throw ('refused: not a value kind this runbook writes: ' + $kind) }
if ($kind -eq 'DWord') { $value = [int]$P.value } else { $value = [string]$P.value }
if (-not (Test-Path -LiteralPath $path)) { [void](New-Item -Path $path -Force) }
$key = Get-Item -LiteralPath $path
$old = $key.GetValue($name, $null)
$oldKind = $null
if ($null -ne $old) { $oldKind = [string]$key.GetValueKind($name) }
$changed = $false
if ($null -eq $old -or [string]$old -ne [string]$value -or $oldKind -ne $kind) {
    [void](New-ItemProperty -LiteralPath $path -Name $name -PropertyType $kind -Value $value -Force)
    $changed = $true
}
@{ path = $path; name = $name; changed = $changed }
"""


def set_value_runbook(values: Mapping[str, list[tuple[str, str]]]) -> RunbookSpec:
    """The generic runbook for the pack checks whose heal entry names it
    (check id -> the (key, name) pairs its probe reads): it may write those
    values and no others."""
    pairs = sorted({pair for refs in values.values() for pair in refs})
    return runbook(
        SET_VALUE_ID, "Set a registry value a check pack declares", fixes=tuple(values), risk=Risk.MEDIUM,
        script=SET_VALUE, timeout=30,
        params_schema={**schema({
            "path": {"type": "string", "enum": sorted({p for p, _n in pairs})},
            "name": {"type": "string", "enum": sorted({n for _p, n in pairs})},
            "kind": {"enum": ["DWord", "String"]},
            "value": {"type": ["integer", "string"]},
        }, ("path", "name", "kind", "value")),
            "anyOf": [{"properties": {"path": {"const": p}, "name": {"const": n}}} for p, n in pairs]},
        description="New-ItemProperty of one value under HKLM, for check packs: only a value that a loaded "
                    "pack check reads and names this runbook for, set to the data its heal entry gives. Medium "
                    "risk: which setting a site pack hardens is the pack author's choice, so it runs in "
                    "healing mode full only. A GPO-set value returns at the next policy refresh.",
    )
