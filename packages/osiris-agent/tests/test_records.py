import pytest

from osiris.records import CheckSpec, RunbookSpec, Status, Target, Verdict


def _ok(facts, params):
    return Verdict(Status.PASS, "ok")


def test_check_spec_requires_paragraph_level_hipaa_citation():
    CheckSpec(id="x.y", title="t", target_kind="local", evaluate=_ok, hipaa=("164.312(a)(2)(iii)",), probe=dict)
    with pytest.raises(ValueError, match="164.312"):
        CheckSpec(id="x.y", title="t", target_kind="local", evaluate=_ok, hipaa=("HIPAA 312",), probe=dict)
    # A section without a paragraph is not "to the paragraph".
    with pytest.raises(ValueError, match=r"HIPAA citation '164\.312': expected"):
        CheckSpec(id="x.y", title="t", target_kind="local", evaluate=_ok, hipaa=("164.312(b)", "164.312"),
                  probe=dict)
    with pytest.raises(ValueError, match="at least one HIPAA"):
        CheckSpec(id="x.y", title="t", target_kind="local", evaluate=_ok, hipaa=(), probe=dict)


def test_check_spec_rejects_unstable_ids_and_missing_code():
    with pytest.raises(ValueError, match="dotted lower-case"):
        CheckSpec(id="Firewall", title="t", target_kind="local", evaluate=_ok, hipaa=("164.312(b)",), probe=dict)
    with pytest.raises(ValueError, match="script or a probe"):
        CheckSpec(id="a.b", title="t", target_kind="local", evaluate=_ok, hipaa=("164.312(b)",))


def test_roles_select_targets():
    spec = CheckSpec(id="a.b", title="t", target_kind="windows", evaluate=_ok, hipaa=("164.312(b)",),
                     script="x", roles={"dc"})
    assert spec.applies_to(Target("dc1", "windows", "dc"))
    assert not spec.applies_to(Target("ws1", "windows", "workstation"))
    assert not spec.applies_to(Target("dc2", "local", "dc"))


def test_runbook_must_name_what_it_fixes():
    with pytest.raises(ValueError, match="fixes"):
        RunbookSpec(id="a.fix", title="t", target_kind="local", fixes=(), risk="low", action=dict)
    rb = RunbookSpec(id="a.fix", title="t", target_kind="local", fixes=("a.b",), risk="medium", action=dict)
    assert rb.risk.value == "medium"
