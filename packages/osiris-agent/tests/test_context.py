"""What ``ctx`` hands plugins agrees with what the agent really uses."""

from osiris.app import load
from osiris.evidence.service import EvidenceService
from osiris.records import Target
from osiris.store import Store


async def test_ctx_paths_are_the_files_the_agent_opens(tmp_path):
    moved = tmp_path / "data" / "evidence"
    loaded = load(config_data={"state_dir": str(tmp_path / "state"), "evidence": {"directory": str(moved)}},
                  environ={"OSIRIS_PLUGINS": "none"})
    paths = loaded.ctx.paths
    assert paths.evidence_dir == moved and paths.state_dir == loaded.ctx.state_dir
    # Opened the way runtime.Agent opens them.
    store = Store(loaded.ctx.state_dir)
    evidence = EvidenceService.open(loaded.ctx, loaded.config.evidence)
    try:
        assert store.path == paths.state_db and paths.state_db.is_file()
        assert evidence.log.path == paths.evidence_log and paths.evidence_log.is_file()
        assert not (paths.state_dir / "evidence").exists()
        pinned = sorted(p.read_bytes() for p in paths.key_dir.iterdir() if p.suffix == ".pub")
        assert pinned == [evidence.verify_key.pem()]
    finally:
        await evidence.close()
        store.close()
        loaded.ctx.close()


def test_ctx_targets_and_concurrency_come_from_the_config(tmp_path):
    loaded = load(config_data={
        "state_dir": str(tmp_path),
        "agent": {"workers": 3, "max_concurrent_targets": 7},
        "targets": [{"name": "ws2", "kind": "local", "role": "workstation", "options": {"port": 1}},
                    {"name": "dc1", "kind": "local", "role": "dc", "credential": "admin"}],
    }, environ={"OSIRIS_PLUGINS": "none"})
    ctx = loaded.ctx
    # Config order (errors say targets[i]); the appliance's own target is not among them.
    assert ctx.targets == (Target("ws2", "local", "workstation", "", None, {"port": 1}),
                           Target("dc1", "local", "dc", "", "admin", {}))
    assert [t.name for t in loaded.targets] == ["appliance", "ws2", "dc1"]
    assert (ctx.workers, ctx.max_concurrent_targets) == (3, 7)
    assert ctx.pool._max_workers == 3
    ctx.close()
