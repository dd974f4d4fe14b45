"""The typed probes a check pack may use: one reviewed PowerShell script per
type (``probes/<type>.ps1``), its inputs as data, and how its output reads.

A probe type declares, as a pydantic model, what a pack entry says about
it (a registry value's key and name, a subcategory's GUID...); that becomes
the check's ``params.probe``, which the type's script reads from ``$P`` at
run time. The script text is the same for every check of the type: only
the check's marker line (its validated id) precedes it, and nothing from a
pack is spliced into PowerShell source.

On the way back, the type turns the script's output (the facts, in the
shape a real host prints) into named facts (``fact -> (present, value)``)
that a pack's ``expect`` conditions test, checks that the output is about
what the pack declared (a site cannot point a check elsewhere through its
parameters), and words the reason.

Adding a type means: a model here, a script beside this module, and one
emulation in :mod:`osiris_windows_baseline.lab.emulations` (the lab then
runs every pack entry of that type with no further code).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from osiris.conditions import FactCondition

from .facts import FactError, as_bool, as_int, enum_name, require
from .parsers import parse_auditpol_csv
from .services import START, STATUS

HERE = Path(__file__).with_name("probes")
VERSION = 1  # of every probe script below; the lab's emulations are keyed by it

FactName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
# HKLM only: per-user hives are not loaded in the appliance's WinRM session (no profile).
RegistryKey = Annotated[str, StringConstraints(pattern=r"^HKLM:\\[A-Za-z0-9 _.(){}\-\\]*[A-Za-z0-9 _.(){}\-]$")]
RegistryName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 _.\-]+$")]
Guid = Annotated[str, StringConstraints(
    pattern=r"^\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}$")]
ServiceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]+$")]
WsmanPath = Annotated[str, StringConstraints(pattern=r"^(Service|Client)(\\[A-Za-z0-9_]+)+$")]
Missing = (False, None)


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def explain(cond: Mapping[str, Any]) -> str:
    """What a condition (with parameters filled in) asks for, in words."""
    words = {"eq": "{}", "ne": "not {}", "gt": "more than {}", "ge": "at least {}", "lt": "less than {}",
             "le": "at most {}", "contains": "to contain {}"}
    out = []
    for key, value in cond.items():
        if key in ("in", "not_in"):
            out.append(("one of " if key == "in" else "none of ") + ", ".join(_shown(v) for v in value))
        elif key == "exists":
            out.append("set" if value else "not set")
        else:
            out.append(words[key].format(_shown(value)))
    return " and ".join(out)


# -- registry_value ----------------------------------------------------------------------------------


class RegistryValue(_M):
    path: RegistryKey = Field(description="The key, as a provider path: HKLM:\\SOFTWARE\\...")
    name: RegistryName
    type: Literal["int", "string"] = Field("int", description="How the value is read: int (REG_DWORD, or a "
                                                              "number kept as REG_SZ) or string")
    absent: int | str | None = Field(None, description="What Windows does when the value (or its key) is "
                                                       "absent, i.e. its default; none: absent fails the check")

    @property
    def ref(self) -> str:
        return f"{self.path}\\{self.name}"


class RegistryProbe(_M):
    type: Literal["registry_value"]
    values: dict[FactName, RegistryValue] = Field(min_length=1, description="fact name -> the value")

    def inputs(self) -> dict[str, Any]:
        return {"values": [{"k": v.path, "n": v.name} for v in self.values.values()]}

    def fact_names(self) -> list[str]:
        return list(self.values)

    def reads(self) -> str:
        return "registry: " + "; ".join(v.ref.replace("HKLM:\\", "HKLM\\") for v in self.values.values())

    def facts(self, raw: Mapping[str, Any]) -> dict[str, tuple[bool, Any]]:
        values = raw.get("values")
        if not isinstance(values, Mapping):
            raise FactError("facts lack 'values' (registry values by path)")
        out = {}
        for fact, v in self.values.items():
            if v.ref not in values:
                raise FactError(f"facts lack values[{v.ref!r}]: the output is not about the value the pack declares")
            value = values[v.ref]
            if value is None:
                out[fact] = Missing if v.absent is None else (True, v.absent)
            else:
                out[fact] = (True, as_int(value) if v.type == "int" else str(value))
        return out

    def detail(self, raw: Mapping[str, Any], fact: str, _named: Mapping[str, tuple[bool, Any]]) -> str:
        v = self.values[fact]
        value = raw["values"][v.ref]
        if value is None:
            return f"{v.name} not set" + ("" if v.absent is None else f" (Windows default {_shown(v.absent)})")
        return f"{v.name} = {_shown(value)}"


# -- audit_subcategory -------------------------------------------------------------------------------


def _words(success: bool, failure: bool) -> str:
    return {(True, True): "Success and Failure", (True, False): "Success", (False, True): "Failure",
            (False, False): "No Auditing"}[(success, failure)]


class AuditProbe(_M):
    type: Literal["audit_subcategory"]
    guid: Guid
    name: str = Field("", max_length=100, description="The subcategory's English name, for reasons (auditpol "
                                                      "prints a localised one)")

    def inputs(self) -> dict[str, Any]:
        return {"guid": self.guid}

    def fact_names(self) -> list[str]:
        return ["success", "failure"]

    def reads(self) -> str:
        return f"auditpol /get /subcategory:{self.guid} /r"

    def _row(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        require(raw, "guid", "csv")
        code = as_int(raw.get("exit_code"), 0)
        if code != 0:
            first = str(raw["csv"]).strip().splitlines()[:1]
            raise FactError(f"auditpol exited with {code}: {first[0] if first else 'no output'}")
        if str(raw["guid"]).lower() != self.guid.lower():
            raise FactError(f"the output is about subcategory {raw['guid']}, the pack declares {self.guid}")
        row = parse_auditpol_csv(str(raw["csv"])).get(self.guid.lower())
        if row is None:
            raise FactError(f"auditpol did not report subcategory {raw['guid']}")
        return row

    def facts(self, raw: Mapping[str, Any]) -> dict[str, tuple[bool, Any]]:
        row = self._row(raw)
        return {"success": (True, row["success"]), "failure": (True, row["failure"])}

    def reason(self, raw: Mapping[str, Any], named: Mapping[str, tuple[bool, Any]],
               conds: Mapping[str, Mapping[str, Any]], failing: list[str]) -> str:
        row = self._row(raw)
        name = self.name or row["name"]
        have = _words(row["success"], row["failure"])
        if not failing:
            return f"{name}: {have} audited"
        # what the conditions require: a flag that may not be off
        required = {f: f in conds and not FactCondition.model_validate(conds[f]).holds(True, False)
                    for f in ("success", "failure")}
        missing = [f for f in failing if not named[f][1]]
        extra = [f for f in failing if named[f][1]]
        words = []
        if missing:
            words.append(f"{' and '.join(missing)} not audited")
        if extra:
            words.append(f"{' and '.join(extra)} audited")
        return (f"{name}: {'; '.join(words)} (audits: {have}; "
                f"required: {_words(required['success'], required['failure'])})")


# -- service -------------------------------------------------------------------------------------------


class ServiceAbsent(_M):
    status: Literal["Stopped", "Running"] = "Stopped"
    start_type: Literal["Automatic", "Manual", "Disabled"] = "Disabled"


class ServiceProbe(_M):
    type: Literal["service"]
    name: ServiceName
    absent: ServiceAbsent | None = Field(None, description="What a service that is not installed counts as; "
                                                           "none: not installed fails the check")

    def inputs(self) -> dict[str, Any]:
        return {"name": self.name}

    def fact_names(self) -> list[str]:
        return ["present", "status", "start_type", "running"]

    def reads(self) -> str:
        return f"Get-Service -Name {self.name}: Status, StartType"

    def facts(self, raw: Mapping[str, Any]) -> dict[str, tuple[bool, Any]]:
        require(raw, "Name", "present")
        if str(raw["Name"]).lower() != self.name.lower():
            raise FactError(f"the output is about service {raw['Name']}, the pack declares {self.name}")
        if not as_bool(raw["present"]):
            if self.absent is None:
                return {"present": (True, False)}
            status, start = self.absent.status, self.absent.start_type
        else:
            status, start = enum_name(raw.get("Status"), STATUS), enum_name(raw.get("StartType"), START)
        return {"present": (True, bool(as_bool(raw["present"]))), "status": (True, status),
                "start_type": (True, start), "running": (True, status == "Running")}

    def reason(self, raw: Mapping[str, Any], named: Mapping[str, tuple[bool, Any]],
               conds: Mapping[str, Mapping[str, Any]], failing: list[str]) -> str:
        name = str(raw["Name"])
        if "status" not in named:
            return f"the {name} service is not installed"
        status, start = named["status"][1], named["start_type"][1]
        if not named["present"][1]:  # the pack says what a missing service counts as
            absent = f"the {name} service is not installed, counted as {status.lower()} ({start})"
            return absent + "".join(f"; {f} expected {explain(conds[f])}" for f in failing)
        if not failing:
            return f"the {name} service is {status.lower()} ({start})"
        problems = []
        for fact in failing:
            word = f"start type {start}" if fact == "start_type" else ("not installed" if fact == "present"
                                                                      else status.lower())
            if word not in problems:
                problems.append(word)
        return f"the {name} service is {' and '.join(problems)}"


# -- wsman_setting -------------------------------------------------------------------------------------


class WsmanProbe(_M):
    type: Literal["wsman_setting"]
    settings: dict[FactName, WsmanPath] = Field(min_length=1, description="fact name -> path under "
                                                                          "WSMan:\\localhost")

    def inputs(self) -> dict[str, Any]:
        return {"paths": list(self.settings.values())}

    def fact_names(self) -> list[str]:
        return list(self.settings)

    def reads(self) -> str:
        return " and ".join(f"WSMan:\\localhost\\{p}" for p in self.settings.values())

    def _item(self, raw: Mapping[str, Any], path: str) -> Mapping[str, Any]:
        wsman = raw.get("wsman")
        if not isinstance(wsman, Mapping) or path not in wsman:
            raise FactError(f"facts lack wsman.{path}")
        item = wsman[path]
        return item if isinstance(item, Mapping) else {"Value": item, "Source": ""}

    def facts(self, raw: Mapping[str, Any]) -> dict[str, tuple[bool, Any]]:
        out = {}
        for fact, path in self.settings.items():
            value = as_bool(self._item(raw, path).get("Value"))
            if value is None:
                raise FactError(f"wsman.{path}: expected true or false")
            out[fact] = (True, value)
        return out

    def detail(self, raw: Mapping[str, Any], fact: str, named: Mapping[str, tuple[bool, Any]]) -> str:
        path = self.settings[fact]
        gpo = " (set by GPO)" if self._item(raw, path).get("Source") == "GPO" else ""
        return f"{path} is {_shown(named[fact][1])}{gpo}"


Probe = Annotated[Union[RegistryProbe, AuditProbe, ServiceProbe, WsmanProbe], Field(discriminator="type")]
TYPES = ("registry_value", "audit_subcategory", "service", "wsman_setting")


@cache
def script(probe_type: str) -> str:
    """The reviewed script of a probe type (its first line is its marker)."""
    text = (HERE / f"{probe_type}.ps1").read_text(encoding="utf-8")
    marker = f"# osiris-probe: {probe_type}/v{VERSION}"
    if text.splitlines()[0] != marker:
        raise ValueError(f"probes/{probe_type}.ps1 must start with {marker!r}")
    return text


def reason(probe: Any, raw: Mapping[str, Any], named: Mapping[str, tuple[bool, Any]],
           conds: Mapping[str, Mapping[str, Any]], failing: list[str], *, title: str, passed: str,
           failed: str) -> str:
    """The verdict's reason: the type's own wording where it has one and the
    pack gives no text, else the pack's pass or fail text (the title by
    default) with each fact, and for a failing one what was expected."""
    text = failed if failing else passed
    own = getattr(probe, "reason", None)
    if own is not None and not text:
        return own(raw, named, conds, failing)

    def shown(fact: str) -> str:
        if hasattr(probe, "detail"):
            return probe.detail(raw, fact, named)
        present, value = named.get(fact, Missing)
        return f"{fact} = {_shown(value)}" if present else f"{fact} not reported"

    if not failing:
        return f"{passed or title} ({', '.join(shown(f) for f in conds)})" if conds else (passed or title)
    parts = [f"{shown(f)}, expected {explain(conds[f])}" for f in failing]
    return f"{failed or 'not as required: ' + title}: {'; '.join(parts)}"
