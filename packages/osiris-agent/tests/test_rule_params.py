"""L1 rule parameters that refer to the failing check's effective
parameters (``{from_check: NAME}``): resolved against the check as the site
configured it, and checked at load with file and line."""

from types import SimpleNamespace

import pytest

from osiris.healing.rules import RuleError, load_rules

RUNBOOK = SimpleNamespace(spec=SimpleNamespace(
    fixes=("t.size",),
    params_schema={"type": "object", "properties": {"kb": {"type": "integer", "maximum": 32767},
                                                     "force": {"type": "boolean"}},
                   "required": ["kb"], "additionalProperties": False}))
RULE = """\
rules:
  - id: grow
    match: {{check: t.size}}
    action:
      runbook: t.grow
      params: {params}
"""


def load(tmp_path, params, check_params):
    f = tmp_path / "site.yaml"
    f.write_text(RULE.format(params=params))
    checks = {"t.size": SimpleNamespace(spec=SimpleNamespace(params=check_params))}
    return load_rules([f], {"t.grow": RUNBOOK}, checks), str(f)


def test_a_reference_takes_the_checks_effective_value(tmp_path):
    rules, _ = load(tmp_path, "{kb: {from_check: min_kb}, force: true}", {"min_kb": 24576})
    [rule] = rules.rules
    assert rule.model.action.params_for({"min_kb": 24576}) == {"kb": 24576, "force": True}
    # the value comes from the check handed in at heal time, not from the file
    assert rule.model.action.params_for({"min_kb": 8192})["kb"] == 8192


def test_a_reference_to_no_parameter_of_the_check_names_file_line_and_the_known_ones(tmp_path):
    with pytest.raises(RuleError) as err:
        load(tmp_path, "{kb: {from_check: min_size}}", {"min_kb": 4096})
    [msg] = err.value.messages
    assert msg.startswith(f"{tmp_path / 'site.yaml'}:2: rule 'grow': action.params.kb: {{from_check: min_size}}")
    assert "(it has min_kb)" in msg


def test_the_runbook_schema_is_checked_against_the_effective_value(tmp_path):
    """A site override the runbook cannot heal to is caught when rules load,
    not at the first heal."""
    with pytest.raises(RuleError) as err:
        load(tmp_path, "{kb: {from_check: min_kb}}", {"min_kb": 65536})
    assert "action.params: kb: 65536 is greater than the maximum of 32767" in err.value.messages[0]
