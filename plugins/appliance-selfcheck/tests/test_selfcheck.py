import os
import shutil


from osiris.app import load
from osiris.engine import Engine
from osiris.paths import DataPaths
from osiris.records import Status
from osiris.store import Store
from osiris.testing import load_plugin
from osiris_appliance_selfcheck import plugin
from osiris_appliance_selfcheck.timex import STATES, read_clock_state

FREE = {"path": "/s", "total_bytes": 100 * 2**30, "free_bytes": 5 * 2**30, "free_percent": 5.0}


def test_free_space_thresholds():
    p = {"min_free_percent": 10, "min_free_mib": 1024}
    v = plugin.evaluate_free_space(FREE, p)
    assert v.status is Status.FAIL and "5120 MiB free (5.0%)" in v.reason
    assert plugin.evaluate_free_space(FREE, {"min_free_percent": 4, "min_free_mib": 1024}).status is Status.PASS
    assert plugin.evaluate_free_space(FREE, {"min_free_percent": 4, "min_free_mib": 6000}).status is Status.FAIL


def test_free_space_probe_agrees_with_the_os(tmp_path):
    facts = plugin.probe_free_space({"path": str(tmp_path)})
    usage = shutil.disk_usage(tmp_path)
    assert facts["total_bytes"] == usage.total
    # free space moves while other processes write; allow 1%
    assert abs(facts["free_bytes"] - usage.free) <= usage.total * 0.01


def test_clock_state_is_read_from_the_kernel():
    facts = read_clock_state()
    assert facts["state"] in STATES.values()
    assert facts["maxerror_us"] >= 0
    # synchronized is derived from the state and the unsync flag, nothing else
    expected = facts["state"] != "TIME_ERROR" and not facts["unsync_flag"]
    assert facts["synchronized"] is expected


def test_clock_evaluation():
    p = {"max_clock_error_ms": 500}
    synced = {"synchronized": True, "state": "TIME_OK", "maxerror_us": 20_000}
    assert plugin.evaluate_clock(synced, p).status is Status.PASS
    assert plugin.evaluate_clock({**synced, "maxerror_us": 900_000}, p).status is Status.FAIL
    v = plugin.evaluate_clock({**synced, "synchronized": False, "state": "TIME_ERROR"}, p)
    assert v.status is Status.FAIL and "TIME_ERROR" in v.reason


def test_loose_key_fails_and_runbook_fixes_it_idempotently(tmp_path):
    state = tmp_path / "state"
    (state / "keys").mkdir(parents=True)
    os.chmod(state, 0o750)
    key = state / "keys" / "appliance.ed25519"
    key.write_bytes(b"k" * 32)
    os.chmod(key, 0o644)
    params = {**plugin.data_params(DataPaths.of(state)), "key_paths": []}
    v = plugin.evaluate_permissions(plugin.probe_permissions(params), {})
    assert v.status is Status.FAIL and "appliance.ed25519" in v.reason and "0644" in v.reason
    assert plugin.fix_permissions(params) == {"changed": [str(key)]}
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert plugin.evaluate_permissions(plugin.probe_permissions(params), {}).status is Status.PASS
    assert plugin.fix_permissions(params) == {"changed": []}


def test_missing_configured_key_and_open_state_dir_fail(tmp_path):
    os.chmod(tmp_path, 0o757)
    params = {**plugin.data_params(DataPaths.of(tmp_path)), "key_paths": [str(tmp_path / "nope.key")]}
    v = plugin.evaluate_permissions(plugin.probe_permissions(params), {})
    assert v.status is Status.FAIL and "nope.key: missing" in v.reason and "0757" in v.reason


async def test_plugin_end_to_end_through_the_engine(tmp_path):
    cfg = {"state_dir": str(tmp_path / "state"),
           "plugins": {"appliance-selfcheck": {"min_free_percent": 0, "min_free_mib": 0}}}
    loaded = load(config_data=cfg, environ={"OSIRIS_PLUGINS": "appliance-selfcheck"})
    store = Store(loaded.ctx.state_dir)
    try:
        observations = await Engine(loaded.registry, store, loaded.targets).sweep(force=True)
    finally:
        loaded.ctx.close()
    by_id = {o.check: o for o in observations}
    assert set(by_id) == {"appliance.storage.state_free_space", "appliance.clock.synchronized",
                          "appliance.files.private", "appliance.boot.newest_version"}
    # This machine was not booted into an osiris version by systemd-boot: nothing fell back.
    assert by_id["appliance.boot.newest_version"].status is Status.PASS
    assert by_id["appliance.storage.state_free_space"].status is Status.PASS
    assert by_id["appliance.files.private"].status is Status.PASS
    assert by_id["appliance.clock.synchronized"].status in (Status.PASS, Status.FAIL)
    assert all(o.target == "appliance" for o in observations)


def test_evidence_log_database_is_covered(tmp_path):
    (tmp_path / "evidence").mkdir()
    log = tmp_path / "evidence" / "log.sqlite3"
    log.write_bytes(b"")
    os.chmod(tmp_path, 0o750)
    os.chmod(log, 0o644)
    params = {**plugin.data_params(DataPaths.of(tmp_path)), "key_paths": []}
    v = plugin.evaluate_permissions(plugin.probe_permissions(params), {})
    assert v.status is Status.FAIL and "log.sqlite3: mode 0644" in v.reason
    plugin.fix_permissions(params)
    assert log.stat().st_mode & 0o777 == 0o640
    assert plugin.evaluate_permissions(plugin.probe_permissions(params), {}).status is Status.PASS


async def test_moved_evidence_directory_is_the_one_checked_and_fixed(tmp_path):
    """With ``evidence.directory`` elsewhere, the check looks at the log
    the agent really writes (ctx.paths), not <state_dir>/evidence."""
    moved = tmp_path / "data" / "evidence"
    loaded = load_plugin(tmp_path, "appliance-selfcheck", {"min_free_percent": 0, "min_free_mib": 0},
                         evidence={"directory": str(moved)})
    assert loaded.ctx.paths.evidence_log == moved / "log.sqlite3"
    store = Store(loaded.ctx.state_dir)
    moved.mkdir(parents=True)
    for name in ("log.sqlite3", "log.sqlite3-wal"):
        (moved / name).write_bytes(b"")
        os.chmod(moved / name, 0o644)
    os.chmod(moved, 0o755)
    engine = Engine(loaded.registry, store, loaded.targets)
    try:
        first = {o.check: o for o in await engine.sweep(force=True)}["appliance.files.private"]
        assert first.status is Status.FAIL
        assert f"{moved}: mode 0755" in first.reason and f"{moved / 'log.sqlite3-wal'}: mode 0644" in first.reason
        runbook = loaded.registry.runbooks["appliance.files.make_private"].spec
        changed = runbook.action({})["changed"]
        assert set(changed) == {str(moved), str(moved / "log.sqlite3"), str(moved / "log.sqlite3-wal")}
        assert (moved / "log.sqlite3").stat().st_mode & 0o777 == 0o640
        again = {o.check: o for o in await engine.sweep(force=True)}["appliance.files.private"]
        assert again.status is Status.PASS
    finally:
        store.close()
        loaded.ctx.close()


# -- boot fallback -----------------------------------------------------------------


def _efivar(d, name, text):
    from osiris_appliance_selfcheck.boot import VENDOR

    (d / f"{name}-{VENDOR}").write_bytes(b"\x06\x00\x00\x00" + text.encode("utf-16-le"))


def test_a_fallback_fails_naming_both_versions_from_the_efi_variables(tmp_path):
    from osiris_appliance_selfcheck.boot import evaluate_boot, probe_boot

    _efivar(tmp_path, "LoaderEntries", "osiris_1.4.1.efi\x00osiris_1.4.2+0-3.efi\x00auto-reboot-to-firmware-setup\x00")
    _efivar(tmp_path, "LoaderEntrySelected", "osiris_1.4.1.efi\x00")
    facts = probe_boot({"efivars": str(tmp_path)})
    v = evaluate_boot(facts, {"prefix": "osiris"})
    assert v.status is Status.FAIL
    assert "booted version 1.4.1, but version 1.4.2 is installed as osiris_1.4.2+0-3.efi (it ran out of tries)" in v.reason
    _efivar(tmp_path, "LoaderEntrySelected", "osiris_1.4.2+2-1.efi\x00")
    assert evaluate_boot(probe_boot({"efivars": str(tmp_path)}), {"prefix": "osiris"}).status is Status.PASS


def test_no_boot_loader_information_is_not_a_fallback(tmp_path):
    from osiris_appliance_selfcheck.boot import evaluate_boot, probe_boot

    v = evaluate_boot(probe_boot({"efivars": str(tmp_path / "none")}), {"prefix": "osiris"})
    assert v.status is Status.PASS and "not booted by systemd-boot" in v.reason


def test_versions_compare_as_systemd_boot_orders_them():
    from osiris_appliance_selfcheck.boot import newer

    assert newer("1.10", "1.9") and newer("2", "1.99") and newer("1.4.2", "1.4")
    assert newer("1.4", "1.4~rc1") and not newer("1.4~rc1", "1.4")
    assert not newer("1.4.2", "1.4.2")
