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


def test_update_records_serialise_and_validate():
    from datetime import datetime, timezone

    from osiris.records import BootEntry, Slot, UpdateProgress, UpdateStatus

    started = datetime(2026, 12, 5, 3, 0, tzinfo=timezone.utc)
    running = UpdateProgress("writing", "1.2.0", bytes_done=250, bytes_total=1000, rate=50.0, started=started)
    assert running.eta() == 15.0
    assert UpdateProgress("downloading", bytes_done=5).eta() is None  # total not known yet
    status = UpdateStatus(
        "ab", configured=True, booted_version="1.1.0",
        slots=[Slot("A", "1.1.0", booted=True), Slot("B", None)],
        entries=[BootEntry("1.1.0", "blessed", booted=True), BootEntry("1.2.0", "trial", tries_left=3, tries_done=0)],
        running=running,
    )
    out = status.to_json()
    assert out["slots"][1] == {"name": "B", "version": None, "booted": False, "device": ""}
    assert out["entries"][1]["state"] == "trial" and out["entries"][1]["tries_left"] == 3
    assert out["running"]["started"] == "2026-12-05T03:00:00+00:00" and out["running"]["eta"] == 15.0
    with pytest.raises(ValueError, match="state 'good'"):
        BootEntry("1.0", "good")


def test_an_update_backend_needs_status_check_and_apply():
    from osiris.records import UpdateBackend

    class StatusOnly:  # API 2.1's backend
        name = "old"

        async def status(self):
            return {}

    class Full(StatusOnly):
        async def check(self): ...

        async def apply(self, *, reboot, progress=None): ...

    assert not isinstance(StatusOnly(), UpdateBackend)
    assert isinstance(Full(), UpdateBackend)
