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
    loaded = load(config_data=config(tmp_path, store))
    asyncio.run(Agent(loaded).run(once=True))
    base = store / ORIGIN
    bundles = sorted((base / "bundles").glob("*.json"))
    assert [b.name for b in bundles] == ["000000000000.json"]
    assert sorted(p.name for p in (base / "checkpoints").iterdir()) == ["1.note"]
    for p in [*bundles, base / "bundles/000000000000.sig", base / "checkpoints/1.note", base / "public-key.pem"]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o444, p
    assert not [p for p in base.rglob(".*")]  # no temporary files left behind
    run = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "public-key.pem", "-rawin",
                          "-in", "bundles/000000000000.json", "-sigfile", "bundles/000000000000.sig"],
                         cwd=base, capture_output=True, text=True)
    assert run.returncode == 0 and "Signature Verified Successfully" in run.stdout
    log = EvidenceLog(tmp_path / "state/evidence/log.sqlite3", create=False)
    assert (base / "bundles/000000000000.json").read_bytes() == log.entry(0).body
    assert log.cursor("evidence-local", "bundle")["delivered"] == 1


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
        assert "not mounted" in (log.cursor(sink.name, "bundle")["last_error"] or "not mounted")
        now += 30
    assert not mount.exists()  # never created behind the mount's back
    mount.mkdir()
    now += 120
    done = await outbox.drain(now=now)
    assert len(done) == 40 + 4 and all(d.ok for d in done)
    files = sorted((mount / ORIGIN / "bundles").glob("*.json"))
    assert [int(f.stem) for f in files] == list(range(40))
    assert [f.read_bytes() for f in files] == [log.entry(i).body for i in range(40)]
    assert sorted(int(p.stem) for p in (mount / ORIGIN / "checkpoints").glob("*.note")) == [10, 20, 30, 40]
    # A redelivery after a lost acknowledgement changes nothing.
    before = {p: p.stat().st_mtime_ns for p in (mount / ORIGIN).rglob("*") if p.is_file()}
    from osiris.evidence.bundle import SignedBundle
    e = log.entry(7)
    env = SignedBundle(ORIGIN, 7, e.bundle_id, e.body, e.sig, key.verify_key.key_id(ORIGIN)).to_envelope()
    await sink.deliver(e.bundle_id, env)
    assert {p: p.stat().st_mtime_ns for p in (mount / ORIGIN).rglob("*") if p.is_file()} == before
    assert verify_log(log).ok
    log.close()
