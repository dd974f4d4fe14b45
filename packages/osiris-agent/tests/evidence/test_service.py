"""The service the agent runs: concurrent records share commits, sweeps
become scrubbed bundles with their policy, failures reach the caller."""

import asyncio
from types import SimpleNamespace

import pytest

from osiris.flow import Batch, Recorded
from osiris.config import SiteSettings
from osiris.evidence.errors import EvidenceError
from osiris.evidence.service import EvidenceService
from osiris.evidence.settings import EvidenceSettings
from osiris.evidence.verify import verify_log
from osiris.records import CheckSpec, Observation, Status, Target, Verdict

from .test_outbox import Sink


def open_service(tmp_path, **settings):
    ctx = SimpleNamespace(state_dir=tmp_path, site=SiteSettings(id="clinic", name="Clinic", appliance="box"),
                          agent_version="0.1.0", registry=None)
    return EvidenceService.open(ctx, EvidenceSettings(**settings), plugins={"windows": "0.1.0"})


async def test_concurrent_records_are_group_committed(tmp_path):
    svc = open_service(tmp_path)
    refs = await asyncio.gather(*(svc.record("healing", {"attempt": i}) for i in range(300)))
    assert sorted(r.index for r in refs) == list(range(300))
    assert svc.appended == 300 and svc.batches < 100  # many bundles per commit
    await svc.close()
    from osiris.evidence.log import EvidenceLog

    log = EvidenceLog(tmp_path / "evidence" / "log.sqlite3", create=False)
    report = verify_log(log)
    assert report.ok and report.entries == 300 and report.checkpoints == 1  # close() checkpoints


def check(cid="windows.firewall.profiles_enabled"):
    return CheckSpec(id=cid, title="Firewall on", target_kind="windows", hipaa=("164.312(c)(1)",),
                     evaluate=lambda f, p: Verdict(Status.PASS, "ok"), script="x", params={"profiles": 3})


async def test_a_sweep_becomes_one_scrubbed_bundle_with_its_policy(tmp_path):
    svc = open_service(tmp_path)
    target = Target("dc01", "windows", "dc", "10.0.0.5")
    obs = [Observation("dc01", check().id, Status.FAIL, "share \\\\dc01\\scans has scan_123-45-6789.pdf",
                       {"files": ["Patient: Maria Garcia.docx"], "owner": "jane@example.com", "build": "19045.4291"})]
    await svc.accept(Batch("sweep", target, (check(),), tuple(Recorded(o, None, False) for o in obs)))
    e = svc.log.entry(0)
    import json
    st = json.loads(e.body)
    assert st["kind"] == "sweep" and st["host"] == "dc01" and st["site"] == {"id": "clinic", "name": "Clinic"}
    assert st["agent"]["plugins"] == {"windows": "0.1.0"} and st["appliance"] == "box"
    o = st["payload"]["observations"][0]
    assert o["reason"] == "share \\\\dc01\\scans has scan_[REDACTED:SSN].pdf"
    assert o["facts"] == {"files": ["Patient: [REDACTED:NAME].docx"], "owner": "[REDACTED:EMAIL]", "build": "19045.4291"}
    assert st["scrubbed"] == {"email": 1, "name": 1, "ssn": 1}
    assert st["policy"]["checks"][check().id]["hipaa"] == ["164.312(c)(1)"]
    assert st["policy"]["checks"][check().id]["params"] == {"profiles": 3}
    assert st["payload"]["target"]["address"] == "10.0.0.5"
    for phi in (b"123-45-6789", b"Maria", b"jane@"):
        assert phi not in e.body
    await svc.close()


async def test_a_failed_append_reaches_the_callers_and_the_writer_recovers(tmp_path, monkeypatch):
    svc = open_service(tmp_path)
    real = svc.log.append

    def broken(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(svc.log, "append", broken)
    with pytest.raises(EvidenceError, match="No space left"):
        await svc.record("update", {"slot": "b"})
    assert "No space left" in svc.last_error
    monkeypatch.setattr(svc.log, "append", real)
    ref = await svc.record("update", {"slot": "b"})
    assert ref.index == 0
    await svc.close()
    with pytest.raises(EvidenceError, match="closed"):
        await svc.record("update", {})


async def test_scheduled_checkpoints_and_delivery_while_running(tmp_path):
    svc = open_service(tmp_path, checkpoint_interval=0.05)
    sink = Sink()
    await svc.start([sink])
    await svc.record("approval", {"rule": "firewall-on", "by": "owner"})

    def delivered():
        # The sink has an item before the outbox moves its cursor (in the
        # evidence thread), so wait for the cursors, not only the sink.
        return (any(i.startswith("checkpoint-") for i in sink.order) and len(sink.order) >= 2
                and svc.status()["sinks"] == {"central": {"bundle": 0, "checkpoint": 0}})

    deadline = asyncio.get_running_loop().time() + 60  # only stops a hang
    while not delivered() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert sink.order[0] == svc.log.entry(0).bundle_id
    assert any(i.startswith("checkpoint-") for i in sink.order)
    assert svc.status()["sinks"] == {"central": {"bundle": 0, "checkpoint": 0}}
    await svc.close()


def test_bundle_ids_are_time_ordered_uuid7():
    import time
    import uuid

    from osiris.evidence.bundle import new_bundle_id

    first = [new_bundle_id() for _ in range(50)]
    time.sleep(0.002)
    later = new_bundle_id()
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in first)
    assert len(set(first)) == 50 and max(first) < later
    ms = uuid.UUID(later).int >> 80
    assert abs(ms - time.time() * 1000) < 5000
