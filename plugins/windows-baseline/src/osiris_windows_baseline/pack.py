"""Check packs: table-shaped checks declared in YAML (docs/check-packs.md).

```yaml
description: LSA hardening for this site
checks:
  - id: windows.lsa.wdigest_disabled
    title: WDigest does not keep clear-text passwords in memory
    hipaa: ["164.312(d)", "164.308(a)(5)(ii)(D)"]
    cis: "18.4.8"
    severity: high               # low | medium | high | critical
    interval: 4h                 # seconds, or 30m / 4h / 1d
    probe:                       # a typed probe (probes.py): registry_value, audit_subcategory, service, wsman_setting
      type: registry_value
      values:
        use_logon_credential:
          path: 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\WDigest'
          name: UseLogonCredential
          absent: 0              # what Windows does when the value is absent
    expect:                      # fact -> condition (the L1 rules' fact predicates)
      use_logon_credential: {ne: 1}
    heal:                        # optional: an L1 rule for this check
      runbook: windows.lsa.disable_wdigest
```

A pack is parsed from YAML nodes so that every error names the file and
line; its entries are validated by pydantic models that refuse unknown
keys. A condition may take a check parameter (``params``, overridable per
site like any check's) as its operand: ``{ge: {param: min_level}}``.

Each entry becomes a :class:`~osiris.CheckSpec` whose script is its probe
type's reviewed script, whose ``params`` carry the probe's inputs as data
(``params.probe``), whose ``source`` names the pack file, line and digest;
its ``heal`` entry becomes an L1 rule (:class:`~osiris.RuleSpec`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from osiris import CheckSource, CheckSpec, RuleSpec, Severity, Status, Verdict
from osiris.config import HealingMode
from osiris.conditions import FactCondition

from . import probes
from .common import ALL, HOUR, KIND
from .facts import FactError

CHECK_VERSION = 1  # the version in each pack check's marker line; the probe script carries its own
PARAM_REF = "param"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": HOUR, "d": 24 * HOUR}


class PackError(Exception):
    """A pack that cannot be used; every message names the file and line."""

    def __init__(self, messages: Sequence[str]):
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if not m:
            raise ValueError("expected seconds, or a duration such as 30m, 4h, 1d")
        return float(m.group(1)) * _UNITS[m.group(2)]
    return value


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


CheckId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$")]
RuleId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
ParamName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
Role = Literal["dc", "server", "workstation"]
Text = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^|\n\r\t]*$")]
# 45 CFR 164.302-164.318, to the paragraph: 164.312(a)(2)(iv), not 164.312.
Citation = Annotated[str, StringConstraints(pattern=r"^164\.3(0[2-9]|1[0-8])(\([a-zA-Z0-9]+\))+$")]


class Heal(_M):
    """The L1 rule for a pack check: which runbook, with which parameters."""

    id: RuleId | None = Field(None, description="The rule's id (default: the check's id); site rules "
                                                "override a rule with the same id")
    runbook: str
    params: dict[str, Any] = Field(default_factory=dict)
    roles: list[Role] = Field(default_factory=list, description="Only on these roles (default: every role)")
    mode: HealingMode | None = None
    priority: int = 100
    description: Text = ""


class PackCheck(_M):
    id: CheckId
    title: Text = Field(min_length=1)
    hipaa: list[Citation] = Field(min_length=1, description="45 CFR 164.3xx citations to the paragraph")
    cis: Text | None = None
    roles: list[Role] = Field(default_factory=lambda: sorted(ALL), min_length=1)
    severity: Severity = Severity.MEDIUM
    interval: Annotated[float, BeforeValidator(_seconds), Field(ge=60, le=7 * 86400)] = 4 * HOUR
    timeout: Annotated[float, BeforeValidator(_seconds), Field(ge=5, le=300)] = 30.0
    description: str = Field("", max_length=2000)
    params: dict[ParamName, Any] = Field(default_factory=dict)
    probe: probes.Probe
    expect: dict[probes.FactName, dict[str, Any]] = Field(min_length=1)
    pass_: Text = Field("", alias="pass", description="The reason's words when the check passes")
    fail_: Text = Field("", alias="fail", description="The reason's words when it fails")
    heal: Heal | None = None


class PackFile(_M):
    description: str = ""
    checks: list[dict[str, Any]] = Field(min_length=1, description="Each validated as a PackCheck, so that "
                                                                   "every entry's errors are reported at once")


# -- conditions with parameters ----------------------------------------------------------------------


def _is_ref(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {PARAM_REF}


def _refs(cond: Mapping[str, Any]) -> list[Any]:
    out = []
    for value in cond.values():
        for v in value if isinstance(value, list) else [value]:
            if _is_ref(v):
                out.append(v[PARAM_REF])
    return out


def resolve(cond: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The condition with each ``{param: NAME}`` replaced by that parameter."""
    def one(v: Any) -> Any:
        if _is_ref(v):
            try:
                return params[v[PARAM_REF]]
            except KeyError:
                raise FactError(f"the check has no parameter {v[PARAM_REF]!r}") from None
        return v

    return {k: [one(x) for x in v] if isinstance(v, list) else one(v) for k, v in cond.items()}


@lru_cache(maxsize=4096)
def _condition(key: str) -> FactCondition:
    return FactCondition.model_validate(json.loads(key))


def condition(cond: Mapping[str, Any]) -> FactCondition:
    return _condition(json.dumps(cond, sort_keys=True))


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def evaluate(check: PackCheck, facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    """A pack check's evaluator: a pure function of the facts and params."""
    if _canon(params.get("probe")) != _canon(check.probe.inputs()):
        raise FactError("params.probe is not the probe the pack declares: a check's probe is not a site "
                        "parameter (declare another check in a site pack)")
    named = check.probe.facts(facts)
    conds = {fact: resolve(c, params) for fact, c in check.expect.items()}
    failing = [f for f, c in conds.items() if not condition(c).holds(*named.get(f, probes.Missing))]
    text = probes.reason(check.probe, facts, named, conds, failing, title=check.title, passed=check.pass_,
                         failed=check.fail_)
    return Verdict(Status.FAIL if failing else Status.PASS, text)


# -- parsing -----------------------------------------------------------------------------------------------


def _walk(node: yaml.Node, loc: Sequence[Any]) -> tuple[yaml.Node, list[str]]:
    """The deepest node on ``loc`` and the path shown for it. Parts that
    are not in the YAML (a union's tag, a missing key) are skipped."""
    cur, shown = node, []
    for part in loc:
        nxt = None
        if isinstance(cur, yaml.MappingNode):
            nxt = next((v for k, v in cur.value if k.value == part), None)
            tag = next((v.value for k, v in cur.value if k.value == "type"), None)
            if nxt is None and part == tag:
                continue  # the discriminated union's tag
        elif isinstance(cur, yaml.SequenceNode) and isinstance(part, int) and part < len(cur.value):
            nxt = cur.value[part]
        shown.append(str(part))
        if nxt is None:
            continue
        cur = nxt
    return cur, shown


def _dup_keys(node: yaml.Node, name: str, out: list[str]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            if k.value in seen:
                out.append(f"{name}:{k.start_mark.line + 1}: key {k.value!r} given twice (first on line "
                           f"{seen[k.value]})")
            seen[k.value] = k.start_mark.line + 1
            _dup_keys(v, name, out)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            _dup_keys(v, name, out)


MAX_DEPTH = 32  # a pack is a table; its deepest value is a few levels down


def _shape(text: str, name: str) -> None:
    """Refuse, from the parser's events and before anything is built, what
    a table never needs: aliases (no alias bombs) and deep nesting."""
    depth = 0
    for e in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(e, yaml.AliasEvent):
            raise PackError([f"{name}:{e.start_mark.line + 1}: YAML aliases (*{e.anchor}) are not allowed in a "
                             "check pack: write each value out"])
        if isinstance(e, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise PackError([f"{name}:{e.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels: "
                                 "not a check pack"])
        elif isinstance(e, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


@dataclass(frozen=True)
class Entry:
    check: PackCheck
    line: int  # of the entry
    heal_line: int  # of its heal entry (the entry's line when it has none)


@dataclass(frozen=True)
class Pack:
    file: str  # as named in errors, `osiris checks` and evidence
    sha256: str  # of the bytes parsed
    description: str
    entries: tuple[Entry, ...]

    def checks(self) -> list[CheckSpec]:
        return [spec(self, e) for e in self.entries]

    def rules(self) -> list[RuleSpec]:
        return [rule(self, e) for e in self.entries if e.check.heal is not None]


def parse(data: bytes, name: str) -> Pack:
    """A pack from its bytes; raises PackError with every problem found."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackError([f"{name}: not UTF-8 text (byte {exc.start}): expected a YAML check pack"]) from None
    try:
        _shape(text, name)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise PackError([f"{name}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]) from None
    if not isinstance(raw, dict) or node is None:
        raise PackError([f"{name}:1: expected a check pack: a mapping with a 'checks' list"])
    errors: list[str] = []
    _dup_keys(node, name, errors)
    if errors:
        raise PackError(errors)

    def at(loc: Sequence[Any], message: str) -> str:
        where, shown = _walk(node, loc)
        return f"{name}:{where.start_mark.line + 1}: {'.'.join(shown)}: {message}"

    def invalid(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
        words = {"extra_forbidden": "unknown key",
                 "union_tag_not_found": f"needs a 'type', one of: {', '.join(probes.TYPES)}"}
        return [at((*prefix, *e["loc"]), words.get(e["type"], e["msg"])) for e in exc.errors()]

    try:
        pack = PackFile.model_validate(raw)
    except ValidationError as exc:
        raise PackError(invalid(exc)) from None
    seen: dict[str, int] = {}
    entries = []
    for i, item in enumerate(pack.checks):
        try:
            check = PackCheck.model_validate(item)
        except ValidationError as exc:
            errors.extend(invalid(exc, ("checks", i)))
            continue
        entry_node, _ = _walk(node, ("checks", i))
        line = entry_node.start_mark.line + 1
        if check.id in seen:
            errors.append(at(("checks", i, "id"), f"check {check.id!r} is declared twice in this pack "
                                                  f"(first on line {seen[check.id]})"))
        seen[check.id] = line
        errors.extend(at(("checks", i, *loc), msg) for loc, msg in _semantics(check))
        heal_key = next((k for k, _v in entry_node.value if k.value == "heal"), None)
        entries.append(Entry(check, line, heal_key.start_mark.line + 1 if heal_key is not None else line))
    if errors:
        raise PackError(errors)
    out = Pack(name, hashlib.sha256(data).hexdigest(), pack.description, tuple(entries))
    for e in out.entries:  # what CheckSpec itself refuses (citations to the paragraph...)
        try:
            spec(out, e)
        except ValueError as exc:
            errors.append(f"{name}:{e.line}: {exc}")
    if errors:
        raise PackError(errors)
    return out


def _semantics(check: PackCheck) -> list[tuple[tuple[Any, ...], str]]:
    """What the models cannot say alone: facts the probe has, parameters
    the conditions name, conditions valid with the default parameters."""
    out: list[tuple[tuple[Any, ...], str]] = []
    if "probe" in check.params:
        out.append((("params", "probe"), "'probe' is reserved: the probe's inputs travel as params.probe"))
    facts = check.probe.fact_names()
    for fact, cond in check.expect.items():
        loc = ("expect", fact)
        if fact not in facts:
            out.append((loc, f"not a fact of probe {check.probe.type} (its facts: {', '.join(facts)})"))
            continue
        missing = [r for r in _refs(cond) if r not in check.params]
        if missing:
            out.append((loc, f"names parameter(s) {', '.join(map(repr, missing))} that the check's params "
                             f"lack (params: {', '.join(check.params) or 'none'})"))
            continue
        try:
            condition(resolve(cond, check.params))
        except ValidationError as exc:
            for e in exc.errors():
                what = "unknown condition (expected eq, ne, in, not_in, contains, gt, ge, lt, le, exists)" \
                    if e["type"] == "extra_forbidden" else e["msg"]
                out.append(((*loc, *[p for p in e["loc"] if p != "in_"]), what))
    return out


# -- what an entry becomes ------------------------------------------------------------------------------------


def script(check_id: str, probe_type: str) -> str:
    """The check's fragment: its marker line (a validated id), then the
    probe type's reviewed script, the same text for every check of the type."""
    return f"# osiris-check: {check_id}/v{CHECK_VERSION}\n" + probes.script(probe_type)


def spec(pack: Pack, entry: Entry) -> CheckSpec:
    c = entry.check
    return CheckSpec(
        id=c.id, title=c.title, target_kind=KIND, evaluate=partial(evaluate, c), hipaa=tuple(c.hipaa),
        roles=frozenset(c.roles), severity=c.severity, interval=c.interval, cis=c.cis, description=c.description,
        script=script(c.id, c.probe.type), params={**c.params, "probe": c.probe.inputs()}, timeout=c.timeout,
        source=CheckSource(pack.file, entry.line, pack.sha256),
    )


def rule(pack: Pack, entry: Entry) -> RuleSpec:
    c, heal = entry.check, entry.check.heal
    assert heal is not None
    data: dict[str, Any] = {"id": heal.id or c.id, "match": {"check": c.id},
                            "action": {"runbook": heal.runbook, "params": dict(heal.params)},
                            "priority": heal.priority}
    if heal.roles:
        data["match"]["roles"] = list(heal.roles)
    if heal.mode is not None:
        data["mode"] = heal.mode
    if heal.description:
        data["description"] = heal.description
    return RuleSpec(data, pack.file, entry.heal_line)
