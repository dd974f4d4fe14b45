"""The write-once directory store, driven by the real agent and outbox."""

import asyncio
import os
import stat
import subprocess

import pytest

from osiris.app import load
from osiris.evidence.keys import SigningKey
from osiris.evidence.log import EvidenceLog
from osiris.evidence.outbox import Outbox
from osiris.evidence.verify import verify_log
from osiris.runtime import Agent
from osiris_evidence_local import plugin
from osiris_evidence_local.plugin import LocalStore, WriteOnceViolation, write_once

ORIGIN = "osiris.evidence/clinic/box"


def config(tmp_path, store, **extra):
    return {"state_dir": str(tmp_path / "state"), "site": {"id": "clinic", "appliance": "box"},
            "agent": {"http": {"enabled": False}},
            "plugins": {"evidence-local": {"path": str(store), **extra}}}


def test_the_agent_writes_verifiable_read_only_files(tmp_path):
    store = tmp_path / "nas"
    store.mkdir()
    # the appliance's own checks and this sink only: another plugin may record bundles of its own at start
    loaded = load(config_data=config(tmp_path, store),
                  environ={"OSIRIS_PLUGINS": "appliance-selfcheck,evidence-local"})
    asyncio.run(Agent(loaded).run(once=True))
    [base] = (store / ORIGIN).iterdir()  # <origin>/<key id>
    log = EvidenceLog(tmp_path / "state/evidence/log.sqlite3", create=False)
    assert base.name == log.meta["key_id"]
    n = log.size()  # the start-up statement, the sweep, and whatever this machine's own checks led to
    bundles = sorted((base / "bundles").glob("*.json"))
    assert n >= 2 and [b.name for b in bundles] == [f"{i:012d}.json" for i in range(n)]
    assert sorted(p.name for p in (base / "checkpoints").iterdir()) == [f"{n}.note"]
    for p in [*bundles, base / "bundles/000000000000.sig", base / f"checkpoints/{n}.note", base / "public-key.pem"]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o444, p
    assert not [p for p in base.rglob(".*")]  # no temporary files left behind
    run = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "public-key.pem", "-rawin",
                          "-in", "bundles/000000000000.json", "-sigfile", "bundles/000000000000.sig"],
                         cwd=base, capture_output=True, text=True)
    assert run.returncode == 0 and "Signature Verified Successfully" in run.stdout
    assert (base / "bundles/000000000000.json").read_bytes() == log.entry(0).body
    assert log.cursor("evidence-local", "bundle")["delivered"] == n


def test_no_path_means_no_sink_and_bad_settings_are_named(tmp_path):
    loaded = load(config_data={"state_dir": str(tmp_path / "s")})
    assert plugin.osiris_evidence_sinks(loaded.ctx) is None
    from osiris.config import ConfigError
    with pytest.raises(ConfigError, match=r"plugins.evidence-local.*'pth'"):
        load(config_data={"state_dir": str(tmp_path / "s"), "plugins": {"evidence-local": {"pth": "/x"}}})


def test_write_once_is_idempotent_and_never_overwrites(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    target = tmp_path / "a.json"
    assert write_once(target, b"evidence") is True
    # The file's data, then its directory, reached the disk.
    assert synced[0].startswith(str(tmp_path / ".a.json.")) and synced[0].endswith(".tmp")
    assert synced[1] == str(tmp_path)
    assert write_once(target, b"evidence") is False  # a redelivery
    with pytest.raises(WriteOnceViolation, match="refusing to overwrite"):
        write_once(target, b"something else")
    assert target.read_bytes() == b"evidence" and stat.S_IMODE(target.stat().st_mode) == 0o444


async def test_a_store_that_is_away_for_a_stretch_gets_everything_once(tmp_path):
    key = SigningKey.generate()
    log = EvidenceLog(tmp_path / "log.sqlite3", origin=ORIGIN, verify_key=key.verify_key)
    from osiris.evidence.bundle import Identity, build_statement
    from osiris.evidence.scrub import Scrubber
    ident = Identity("clinic", "", "box", "0", "1", {})
    mount = tmp_path / "nas"  # not mounted yet
    sink = LocalStore(mount, public_key_pem=key.verify_key.pem())
    now = 0.0
    outbox = Outbox(log, [sink], backoff_initial=1, backoff_max=60, clock=lambda: now)
    for i in range(40):
        log.append([build_statement(ident, Scrubber(), "sweep", {"i": i})], key)
        if i % 10 == 9:
            log.checkpoint(key)
        failed = await outbox.drain(now=now)
        assert all(not d.ok for d in failed)
        assert "not mounted" in log.cursor(sink.name, "bundle")["last_error"]
        now += 30
    assert not mount.exists()  # never created behind the mount's back
    mount.mkdir()
    now += 120
    done = await outbox.drain(now=now)
    assert len(done) == 40 + 4 and all(d.ok for d in done)
    base = mount / ORIGIN / key.verify_key.key_id(ORIGIN).hex()
    files = sorted((base / "bundles").glob("*.json"))
    assert [int(f.stem) for f in files] == list(range(40))
    assert [f.read_bytes() for f in files] == [log.entry(i).body for i in range(40)]
    assert sorted(int(p.stem) for p in (base / "checkpoints").glob("*.note")) == [10, 20, 30, 40]
    # A redelivery after a lost acknowledgement changes nothing.
    before = {p: p.stat().st_mtime_ns for p in base.rglob("*") if p.is_file()}
    from osiris.evidence.bundle import SignedBundle
    e = log.entry(7)
    env = SignedBundle(ORIGIN, 7, e.bundle_id, e.body, e.sig, key.verify_key.key_id(ORIGIN)).to_envelope()
    await sink.deliver(e.bundle_id, env)
    assert {p: p.stat().st_mtime_ns for p in base.rglob("*") if p.is_file()} == before
    assert verify_log(log).ok
    log.close()


def _log_with(tmp_path, name, key, n):
    from osiris.evidence.bundle import Identity, build_statement
    from osiris.evidence.scrub import Scrubber

    log = EvidenceLog(tmp_path / name / "log.sqlite3", origin=ORIGIN, verify_key=key.verify_key)
    ident = Identity("clinic", "", "box", "0", "1", {})
    for i in range(n):
        log.append([build_statement(ident, Scrubber(), "sweep", {"i": i, "log": name})], key)
    log.checkpoint(key)
    return log


async def test_a_new_key_is_a_new_tree_in_the_store_not_a_collision(tmp_path):
    """Key rotation: a new key means a new log with the same origin whose
    indexes start at 0 again; both logs are stored, side by side, whole."""
    mount = tmp_path / "nas"
    mount.mkdir()
    old_key, new_key = SigningKey.generate(), SigningKey.generate()
    old_log = _log_with(tmp_path, "old", old_key, 3)
    assert all(d.ok for d in await Outbox(old_log, [LocalStore(mount, public_key_pem=old_key.verify_key.pem())]).drain())
    new_log = _log_with(tmp_path, "new", new_key, 2)  # the same origin, a new key
    done = await Outbox(new_log, [LocalStore(mount, public_key_pem=new_key.verify_key.pem())]).drain()
    assert [d.ok for d in done] == [True, True, True], [d.error for d in done]
    for log, key, n in ((old_log, old_key, 3), (new_log, new_key, 2)):
        base = mount / ORIGIN / key.verify_key.key_id(ORIGIN).hex()
        assert [f.read_bytes() for f in sorted((base / "bundles").glob("*.json"))] == [
            log.entry(i).body for i in range(n)]
        assert (base / f"checkpoints/{n}.note").read_bytes() == log.latest_checkpoint().note
        assert (base / "public-key.pem").read_bytes() == key.verify_key.pem()
        log.close()


async def test_a_store_of_the_old_layout_keeps_being_used_for_its_key(tmp_path):
    mount = tmp_path / "nas"
    key = SigningKey.generate()
    legacy = mount / ORIGIN
    (legacy / "bundles").mkdir(parents=True)
    write_once(legacy / "public-key.pem", key.verify_key.pem())
    log = _log_with(tmp_path, "log", key, 2)
    done = await Outbox(log, [LocalStore(mount, public_key_pem=key.verify_key.pem())]).drain()
    assert all(d.ok for d in done)
    assert sorted(p.name for p in (legacy / "bundles").glob("*.json")) == ["000000000000.json", "000000000001.json"]
    assert (legacy / "checkpoints/2.note").is_file()
    assert not (legacy / key.verify_key.key_id(ORIGIN).hex()).exists()
    log.close()


def test_verify_fails_a_log_cut_short_below_the_store_or_a_kept_checkpoint(tmp_path):
    """Two runs record two starts and sweeps (checkpoints n1 and n2, both in the store);
    an auditor exports and keeps checkpoint 2. Then the newest entry is
    deleted with its checkpoint and the outbox's cursors (triggers dropped):
    `osiris evidence verify --no-sinks` says ok, as every verify did before;
    asking the store, or giving the kept checkpoint, fails it, naming which."""
    import json
    import sqlite3
    import zipfile

    from click.testing import CliRunner

    from osiris.cli import cli

    store = tmp_path / "nas"
    store.mkdir()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config(tmp_path, store)))
    from osiris.evidence.log import EvidenceLog

    sizes = []
    for _ in range(2):  # the appliance's checks and this sink only (other plugins may record bundles at start)
        asyncio.run(Agent(load(cfg, environ={"OSIRIS_PLUGINS": "appliance-selfcheck,evidence-local"})).run(once=True))
        log = EvidenceLog(tmp_path / "state/evidence/log.sqlite3", create=False)
        sizes.append(log.size())  # the start-up statement, the sweep, and this machine's own failures
        log.close()
    n1, n2 = sizes
    r = CliRunner()
    assert r.invoke(cli, ["-c", str(cfg), "evidence", "export", str(tmp_path / "audit.zip")]).exit_code == 0
    kept = tmp_path / "kept.note"
    kept.write_bytes(zipfile.ZipFile(tmp_path / "audit.zip").read(f"checkpoints/{n2}.note"))
    ok = r.invoke(cli, ["-c", str(cfg), "evidence", "verify", "--checkpoint", str(kept)])
    assert ok.exit_code == 0 and "4 checkpoint(s) held outside the log compared" in ok.output, ok.output
    (store).rename(tmp_path / "unmounted")  # a store that is away is a warning, the rest is verified
    away = r.invoke(cli, ["-c", str(cfg), "evidence", "verify"])
    assert away.exit_code == 0 and "warning: sink evidence-local: could not read the newest checkpoint it holds: " \
        "FileNotFoundError" in away.output, away.output
    (tmp_path / "unmounted").rename(store)

    db = sqlite3.connect(tmp_path / "state/evidence/log.sqlite3", isolation_level=None)
    for t in ("entries_no_delete", "checkpoints_no_delete"):
        db.execute(f"DROP TRIGGER {t}")
    db.execute("DELETE FROM entries WHERE idx >= ?", (n1,))
    db.execute("DELETE FROM checkpoints WHERE size > ?", (n1,))
    db.execute("DELETE FROM sink_cursors")
    db.close()
    alone = r.invoke(cli, ["-c", str(cfg), "evidence", "verify", "--no-sinks"])
    assert alone.exit_code == 0 and alone.output.startswith(f"ok: {n1} entries"), alone.output
    sinks = r.invoke(cli, ["-c", str(cfg), "evidence", "verify"])
    assert sinks.exit_code == 1 and sinks.output.startswith(
        f"FAILED: index {n1}: sink evidence-local (its own copy) holds checkpoint {n2}, but the log holds {n1} entries: "
        "the newest entries were removed (the log was truncated)"), sinks.output
    pinned = r.invoke(cli, ["-c", str(cfg), "evidence", "verify", "--no-sinks", "--checkpoint", str(kept)])
    assert pinned.exit_code == 1 and f"checkpoint file {kept} holds checkpoint {n2}, but the log holds {n1}" in pinned.output
    missing = r.invoke(cli, ["-c", str(cfg), "evidence", "verify", "--checkpoint", str(tmp_path / "nope.note")])
    assert missing.exit_code == 2 and "nope.note: cannot read the checkpoint" in missing.output
