"""The UpdateBackend (plugin.py) on the test disk: status read from the
disk and the runner's status.json, check and apply through the runner,
inline (a child process) and through the request file that
osiris-update.path hands to osiris-update.service (here: the runner run
by the test when the file appears, as the path unit would)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from osiris.records import UpdateBackend, UpdateError
from osiris_update_ab.plugin import AbBackend
from osiris_update_ab.settings import Settings, load

pytestmark = pytest.mark.slow


def backend(app, **kw) -> AbBackend:
    return AbBackend(load(app.settings), poll=0.05, **kw)


async def test_an_unconfigured_backend_says_what_is_missing(tmp_path):
    b = AbBackend(Settings(state_dir=tmp_path / "st", booted_version="1", disk=tmp_path / "none.img"))
    assert isinstance(b, UpdateBackend)
    st = await b.status()
    assert not st.configured and "repository, trusted_root, hardware not set" in st.detail
    with pytest.raises(UpdateError, match="updates are not configured"):
        await b.apply(reboot=False)


async def test_status_check_and_apply_on_the_test_disk(appliance):
    app = appliance
    app.publish("2")
    b = backend(app)
    st = await b.status()
    assert st.configured and st.booted_version == "1"
    assert [(s.version, s.booted) for s in st.slots] == [("1", True), (None, False)]
    assert [(e.version, e.state, e.booted) for e in st.entries] == [("1", "blessed", True)]
    chk = await b.check()
    assert (chk.current, chk.available) == ("1", "2")
    seen = []
    res = await b.apply(reboot=False, progress=seen.append)
    assert res.installed == "2" and "osiris_2+3.efi" in res.detail
    assert seen and seen[-1].phase == "installed" and seen[-1].bytes_done == app.releases["2"].image.size
    st = await b.status()
    assert [(s.version, s.booted) for s in st.slots] == [("1", True), ("2", False)]
    assert [(e.version, e.state, e.tries_left) for e in st.entries] == [("1", "blessed", None), ("2", "trial", 3)]
    assert st.available == "2" and st.last_check is not None and st.running is None


async def test_a_refusal_reaches_the_caller_as_a_refused_update_error(appliance):
    app = appliance
    app.publish("2", hardware="other-model")
    with pytest.raises(UpdateError, match="another hardware model") as err:
        await backend(app).apply(reboot=False)
    assert err.value.refused
    st = await backend(app).status()
    assert "last run refused" in st.detail


async def test_the_systemd_runner_is_asked_through_the_request_file(appliance):
    app = appliance
    app.publish("2")
    settings = json.loads(app.settings.read_text())
    settings["plugins"]["update-ab"]["runner"] = "systemd"
    app.settings.write_text(json.dumps(settings))
    b = backend(app)
    (app.state / "request").mkdir(parents=True)  # systemd-tmpfiles makes it (modules/osiris-update.nix)

    async def path_unit():
        """What osiris-update.path does: start the service when request.json appears."""
        while not (app.state / "request" / "request.json").exists():
            await asyncio.sleep(0.05)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "osiris_update_ab.runner", "--settings",
                                                    str(app.settings), "request")
        return await proc.wait()

    unit = asyncio.ensure_future(path_unit())
    res = await asyncio.wait_for(b.apply(reboot=False), timeout=600)
    assert await unit == 0
    assert res.installed == "2" and not (app.state / "request" / "request.json").exists()
    assert app.slots()[1].partition.label == "osiris_2"


async def test_the_agent_follows_the_journal_into_evidence_and_checks_at_start(tmp_path):
    """osiris_startup: the runner's journal becomes signed evidence, and a
    check is asked for at once (here it is refused: the trusted root is
    not there, and the refusal is in the journal, hence in the evidence);
    osiris_shutdown stops both."""
    from osiris.app import load as load_agent
    from osiris.evidence.log import EvidenceLog
    from osiris.evidence.service import EvidenceService
    from osiris.evidence.settings import EvidenceSettings
    from osiris_update_ab import plugin

    loaded = load_agent(config_data={"state_dir": str(tmp_path / "agent")}, environ={"OSIRIS_PLUGINS": "none"})
    ctx = loaded.ctx
    ctx.evidence = EvidenceService.open(ctx, EvidenceSettings())
    state = tmp_path / "update"
    state.mkdir()
    (state / "journal.jsonl").write_text(json.dumps({"seq": 1, "at": "2026-12-05T03:00:00Z", "step": "found",
                                                     "version": "2", "detail": {}}) + "\n")
    settings = Settings(repository="https://127.0.0.1:9", trusted_root=tmp_path / "root.json", hardware="t640",
                        state_dir=state, booted_version="1", disk=tmp_path / "none.img", runner="inline")
    ctx.settings = lambda name: settings  # the plugin's section, as the agent would validate it

    def steps():
        log = EvidenceLog(ctx.paths.evidence_log, create=False)
        try:
            return [b["payload"]["step"] for b in (json.loads(e.body) for e in log.iter_entries())
                    if b["kind"] == "update"]
        finally:
            log.close()

    await plugin.osiris_startup(ctx)
    try:
        for _ in range(1200):
            if "refused" in steps():
                break
            await asyncio.sleep(0.1)
        assert steps()[:1] == ["found"] and "refused" in steps(), steps()
    finally:
        await plugin.osiris_shutdown(ctx)
    assert id(ctx) not in plugin._TASKS
    await ctx.evidence.close()
    ctx.close()


def test_osiris_update_status_json_answers_on_the_test_disk(appliance):
    # Done-when of issue 10: the operator's command, a real `osiris`
    # process with the agent's config, on the test disk before and after an
    # install.
    import subprocess
    from pathlib import Path

    app = appliance
    cfg = json.loads(app.settings.read_text())
    cfg["state_dir"] = str(app.tmp / "agent-state")
    path = app.tmp / "config.json"
    path.write_text(json.dumps(cfg))
    osiris = str(Path(sys.executable).with_name("osiris"))

    def status() -> dict:
        res = subprocess.run([osiris, "-c", str(path), "update", "status", "--json"],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    before = status()
    assert before["configured"] is True and before["booted_version"] == "1"
    assert [(e["version"], e["state"]) for e in before["entries"]] == [("1", "blessed")]
    app.publish("2")
    rc, _out, err = app.run("apply")
    assert rc == 0, err
    after = status()
    assert [(e["version"], e["state"], e["tries_left"]) for e in after["entries"]] == [
        ("1", "blessed", None), ("2", "trial", 3)]
    assert [(s["version"], s["booted"]) for s in after["slots"]] == [("1", True), ("2", False)]
