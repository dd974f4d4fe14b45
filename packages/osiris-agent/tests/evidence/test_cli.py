"""``osiris evidence`` and the agent: a real `run --once` records a verifiable
sweep; a bad key stops the agent with the file named."""

import json
import os
import subprocess
import zipfile

from click.testing import CliRunner

from osiris.cli import cli

from ..conftest import OSIRIS


def run_once(cfg):
    """The real command, in a real process, with the appliance's own checks
    only (another plugin may record its own bundles at start, e.g. the
    windows baseline's check packs)."""
    return subprocess.run([str(OSIRIS), "--config", str(cfg), "run", "--once"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "OSIRIS_PLUGINS": "appliance-selfcheck"})


def run_once_here(cfg):
    """The same command in this process (no interpreter start-up to pay)."""
    return CliRunner().invoke(cli, ["--config", str(cfg), "run", "--once"])


def test_run_once_records_and_the_cli_verifies_shows_and_exports(tmp_path, write_config):
    cfg = write_config({"site": {"id": "clinic", "appliance": "box"}})
    assert run_once(cfg).returncode in (0, 1)  # a check may fail on this machine; the run completes
    r = CliRunner()
    status = r.invoke(cli, ["-c", str(cfg), "evidence", "status", "--format", "json"])
    assert status.exit_code == 0, status.output
    data = json.loads(status.output)
    # the start-up statement, the sweep, and for each failing check (this
    # machine's own state) its escalation and resolution
    n = data["entries"]
    assert data["origin"] == "osiris.evidence/clinic/box" and n >= 2 and n % 2 == 0
    assert data["checkpoint"]["size"] == n  # --once checkpoints before it exits
    ok = r.invoke(cli, ["-c", str(cfg), "evidence", "verify"])
    assert ok.exit_code == 0 and ok.output.startswith(f"ok: {n} entries"), ok.output
    started = r.invoke(cli, ["-c", str(cfg), "evidence", "show", "0"])
    assert started.exit_code == 0 and '"kind": "agent_start"' in started.output, started.output
    assert '"checks_sha256"' in started.output and '"config_sha256"' in started.output
    shown = r.invoke(cli, ["-c", str(cfg), "evidence", "show", "1"])
    assert shown.exit_code == 0 and '"kind": "sweep"' in shown.output and "signature verifies" in shown.output
    one = r.invoke(cli, ["-c", str(cfg), "evidence", "verify", "1"])
    assert one.exit_code == 0 and f"included in checkpoint {n}" in one.output
    out = tmp_path / "out.zip"
    exp = r.invoke(cli, ["-c", str(cfg), "evidence", "export", "--from", "2000-01-01", "--to", "0", str(out)])
    assert exp.exit_code == 0, exp.output
    assert "bundles/000000000000.json" in zipfile.ZipFile(out).namelist()
    again = r.invoke(cli, ["-c", str(cfg), "evidence", "export", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    ve = r.invoke(cli, ["evidence", "verify-export", str(out)])
    assert ve.exit_code == 0 and ve.output.startswith("ok:"), ve.output
    k = r.invoke(cli, ["-c", str(cfg), "evidence", "key"])
    assert "BEGIN PUBLIC KEY" in k.output and "osiris.evidence/clinic/box+" in k.output
    missing = r.invoke(cli, ["-c", str(cfg), "evidence", "show", "no-such-bundle"])
    assert missing.exit_code == 1 and "no bundle 'no-such-bundle'" in missing.output


def test_verify_exits_1_and_names_the_first_bad_index(tmp_path, write_config):
    import sqlite3

    cfg = write_config({})
    assert run_once_here(cfg).exit_code in (0, 1)
    db = sqlite3.connect(tmp_path / "state" / "evidence" / "log.sqlite3", isolation_level=None)
    db.execute("DROP TRIGGER tail_no_change")
    db.execute("UPDATE tail SET data = CAST(replace(CAST(data AS TEXT), 'appliance', 'Appliance') AS BLOB)")
    db.close()
    bad = CliRunner().invoke(cli, ["-c", str(cfg), "evidence", "verify", "--fast"])
    assert bad.exit_code == 1 and bad.output.startswith("FAILED: index 0:"), bad.output


def test_a_loose_or_swapped_key_stops_the_agent_with_the_file_named(tmp_path, write_config):
    cfg = write_config({})
    assert run_once_here(cfg).exit_code in (0, 1)
    key = tmp_path / "state" / "keys" / "evidence-ed25519.key"
    os.chmod(key, 0o644)
    res = run_once_here(cfg)
    assert res.exit_code == 1
    assert f"osiris: {key}: mode 0644" in res.output and "owner only" in res.output
    os.chmod(key, 0o600)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    res = run_once_here(cfg)
    assert res.exit_code == 1 and "does not match the pinned public key" in res.output


def test_observations_pushed_by_a_source_are_evidence_too(tmp_path, plugin_module):
    import asyncio

    from osiris.app import load
    from osiris.evidence.log import EvidenceLog
    from osiris.runtime import Agent

    mod = plugin_module("pushing_source", '''
        from osiris import hookimpl
        from osiris.records import Observation, Status

        class Pusher:
            name = "pusher"
            async def run(self, emit):
                await emit(Observation("ws07", "appliance.files.private", Status.FAIL,
                                       "endpoint says: key readable by jane@example.com", {"mode": "0644"}))

        @hookimpl
        def osiris_sources(ctx):
            return Pusher()
    ''')
    loaded = load(config_data={"state_dir": str(tmp_path / "state"), "plugin_modules": [mod],
                               "agent": {"http": {"enabled": False}}})
    asyncio.run(Agent(loaded).run(once=True))
    log = EvidenceLog(tmp_path / "state" / "evidence" / "log.sqlite3", create=False)
    pushed = [json.loads(e.body) for e in log.iter_entries() if e.kind == "observation"]
    assert len(pushed) == 1
    st = pushed[0]
    assert st["host"] == "ws07" and st["payload"]["observations"][0]["status"] == "fail"
    assert st["payload"]["observations"][0]["reason"] == "endpoint says: key readable by [REDACTED:EMAIL]"
    assert st["policy"]["checks"]["appliance.files.private"]["plugin"] == "appliance-selfcheck"
    assert [e.kind for e in log.iter_entries()].count("sweep") == 1
