"""L1 healing rules: YAML files that map drift to an installed runbook.

```yaml
rules:
  - id: firewall-profiles
    match:
      check: windows.firewall.profiles_enabled
      roles: [dc, server]          # optional; empty = every role
      facts:                       # optional conditions on the failing facts
        domain_enabled: {eq: false}
    action:
      runbook: windows.firewall.enable_profiles
      params:
        profiles: {from_check: profiles}   # the check's effective parameter
    mode: full                     # optional cap on the site's healing mode
    priority: 100                  # lower runs first
```

A parameter written ``{from_check: NAME}`` is the failing check's
effective parameter ``NAME``: the check's default, or the site's override
in ``checks.<id>.params``. Rules that heal to what the check expects say so
this way rather than copying the value, so a site that raises a check's
threshold gets the raised value healed at L1 (a copied value would heal to
the old threshold, fail verification and escalate every time).

Sources, later overriding earlier by rule id: files (and rules given as
data, :class:`~osiris.records.RuleSpec`, e.g. a check pack's heal entries,
named by the file and line they were written at) shipped by plugins
(``osiris_rules``), then ``<state_dir>/rules/*.yaml`` (site and promoted
rules), then ``healing.rules_dirs``. A rule set is all or nothing: a file
that does not parse, or a rule naming a runbook no installed plugin
provides, is reported with file and line and the previous good set stays in
force. Line numbers come from PyYAML's node marks, which is why the files
are composed into nodes before being turned into data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..conditions import FactCondition  # the predicates of match.facts (also used by plugins' check data)
from ..config import HEALING_MODES, HealingMode
from ..records import RuleSpec

log = logging.getLogger(__name__)


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_M):
    check: str
    roles: list[str] = Field(default_factory=list)
    facts: dict[str, FactCondition] = Field(default_factory=dict)


FROM_CHECK = "from_check"


def check_param_ref(value: Any) -> str | None:
    """The check parameter a rule parameter refers to (``{from_check: NAME}``), if any."""
    if isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(FROM_CHECK), str):
        return value[FROM_CHECK]
    return None


class Action(_M):
    runbook: str
    params: dict[str, Any] = Field(default_factory=dict)

    def params_for(self, check_params: Mapping[str, Any]) -> dict[str, Any]:
        """The runbook's parameters with every ``{from_check: NAME}`` replaced
        by the check's effective parameter (validated at load: NAME exists)."""
        out = {}
        for key, value in self.params.items():
            ref = check_param_ref(value)
            out[key] = check_params[ref] if ref is not None else value
        return out


class RuleModel(_M):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    match: Match
    action: Action
    mode: HealingMode | None = None
    priority: int = 100
    promoted_from: int | None = Field(default=None, description="Candidate id, for promoted rules")


class RuleFile(_M):
    rules: list[RuleModel] = Field(default_factory=list)


@dataclass(frozen=True)
class Rule:
    model: RuleModel
    file: str
    line: int

    @property
    def id(self) -> str:
        return self.model.id

    def matches(self, check_id: str, role: str, facts: Mapping[str, Any]) -> bool:
        m = self.model.match
        if m.check != check_id or (m.roles and role not in m.roles):
            return False
        for path, cond in m.facts.items():
            present, value = _lookup(facts, path)
            if not cond.holds(present, value):
                return False
        return True


def _lookup(facts: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    cur: Any = facts
    for part in path.split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        else:
            return False, None
    return True, cur


class RuleError(Exception):
    def __init__(self, messages: Sequence[str]):
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))


def _line_of(node: yaml.Node, loc: Sequence[Any]) -> int:
    """The line of the YAML node at ``loc`` (as deep as the path exists)."""
    cur = node
    for part in loc:
        if isinstance(cur, yaml.MappingNode):
            nxt = next((v for k, v in cur.value if k.value == part), None)
        elif isinstance(cur, yaml.SequenceNode) and isinstance(part, int) and part < len(cur.value):
            nxt = cur.value[part]
        else:
            nxt = None
        if nxt is None:
            break
        cur = nxt
    return cur.start_mark.line + 1


def parse_file(path: Path) -> list[Rule]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError([f"{name}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise RuleError([f"{name}: not UTF-8 text (byte {exc.start}): expected a YAML rule file"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise RuleError([f"{name}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]) from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise RuleError([f"{name}:1: expected a mapping with a 'rules' list"])
    try:
        parsed = RuleFile.model_validate(data)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            loc = [p if not isinstance(p, str) or p != "in_" else "in" for p in err["loc"]]
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            msgs.append(f"{name}:{_line_of(node, loc)}: {'.'.join(map(str, loc))}: {what}")
        raise RuleError(msgs) from None
    rules_node = next((v for k, v in node.value if k.value == "rules"), None)
    return [
        Rule(r, name, rules_node.value[i].start_mark.line + 1 if rules_node is not None else 1)
        for i, r in enumerate(parsed.rules)
    ]


def parse_spec(spec: RuleSpec) -> list[Rule]:
    """A rule a plugin gives as data; errors name where it was written."""
    try:
        model = RuleModel.model_validate(dict(spec.rule))
    except ValidationError as exc:
        raise RuleError([
            f"{spec.file}:{spec.line}: {'.'.join(str(p) if p != 'in_' else 'in' for p in err['loc'])}: "
            f"{'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}"
            for err in exc.errors()
        ]) from None
    return [Rule(model, spec.file, spec.line)]


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)

    def match(self, check_id: str, role: str, facts: Mapping[str, Any]) -> Rule | None:
        for rule in self.rules:
            if rule.matches(check_id, role, facts):
                return rule
        return None


def rule_files(shipped: Iterable[Path | RuleSpec], dirs: Iterable[Path]) -> list[Path | RuleSpec]:
    out: list[Path | RuleSpec] = [p if isinstance(p, RuleSpec) else Path(p) for p in shipped]
    for d in dirs:
        d = Path(d)
        if d.is_dir():
            out.extend(sorted([*d.glob("*.yaml"), *d.glob("*.yml")]))
    return out


def load_rules(files: Sequence[Path | RuleSpec], runbooks: Mapping[str, Any], checks: Mapping[str, Any]) -> RuleSet:
    """Parse and check every file; raise RuleError listing every problem."""
    errors: list[str] = []
    merged: dict[str, Rule] = {}
    for path in files:
        try:
            rules = parse_spec(path) if isinstance(path, RuleSpec) else parse_file(path)
        except RuleError as exc:
            errors.extend(exc.messages)
            continue
        for rule in rules:
            errors.extend(_check(rule, runbooks, checks))
            merged[rule.id] = rule  # later sources override earlier ones by id
    if errors:
        raise RuleError(errors)
    ordered = sorted(merged.values(), key=lambda r: (r.model.priority, r.file, r.line))
    return RuleSet(ordered)


def _check(rule: Rule, runbooks: Mapping[str, Any], checks: Mapping[str, Any]) -> list[str]:
    where = f"{rule.file}:{rule.line}: rule {rule.id!r}"
    m, a = rule.model.match, rule.model.action
    errors = []
    if m.check not in checks:
        errors.append(f"{where}: match.check {m.check!r} is not an installed check")
    rb = runbooks.get(a.runbook)
    if rb is None:
        errors.append(f"{where}: action.runbook {a.runbook!r} is not provided by any installed plugin")
        return errors
    spec = getattr(rb, "spec", rb)
    if m.check not in spec.fixes:
        errors.append(f"{where}: runbook {a.runbook!r} does not fix {m.check!r} (it fixes {', '.join(spec.fixes)})")
    check = checks.get(m.check)
    check_params = getattr(getattr(check, "spec", check), "params", None) or {}
    bad_refs = [
        f"{where}: action.params.{key}: {{from_check: {ref}}} names no parameter of check {m.check!r} "
        f"(it has {', '.join(sorted(check_params)) or 'none'})"
        for key, value in a.params.items()
        if (ref := check_param_ref(value)) is not None and ref not in check_params
    ]
    if bad_refs or check is None:
        return errors + bad_refs
    # Validated as the ladder will send them: with the check's effective
    # parameters (site overrides applied) in place of the references.
    schema_errors = validate_params(spec.params_schema, a.params_for(check_params))
    errors.extend(f"{where}: action.params: {e}" for e in schema_errors)
    return errors


def validate_params(schema: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """Check runbook parameters against the runbook's JSON Schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(params)'}: {e.message}"
        for e in sorted(validator.iter_errors(dict(params)), key=lambda e: list(e.absolute_path))
    ]


def effective_mode(site_mode: str, rule_mode: str | None) -> str:
    """The stricter of the site's mode and the rule's own cap."""
    if rule_mode is None:
        return site_mode
    return HEALING_MODES[min(HEALING_MODES.index(site_mode), HEALING_MODES.index(rule_mode))]


def allows(mode: str, risk: str) -> bool:
    """Whether a runbook of ``risk`` may run (or be dry-run) in ``mode``."""
    if mode == "off":
        return False
    if mode == "standard":
        return risk == "low"
    return True  # dry-run records whatever full would do; full runs anything


def dump_rule(rule: Mapping[str, Any], header: str) -> str:
    body = yaml.safe_dump({"rules": [dict(rule)]}, sort_keys=False)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body
