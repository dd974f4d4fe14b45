"""The windows plugin's health check for the boot gate: one target that
answers is enough, none fails naming each, no windows target adds no check."""

from __future__ import annotations

import asyncio
import socket

from osiris.records import HealthCheck
from osiris.testing import load_plugin, refused_port


def checks_of(tmp_path, ports):
    targets = [{"name": name, "kind": "windows", "role": "server", "address": "127.0.0.1",
                "credential": "winrm-admin", "options": {"port": port, "transport": "ntlm"}}
               for name, port in ports.items()]
    loaded = load_plugin(tmp_path, "windows", {"connect_timeout": 10}, {"winrm-admin": "u:p"}, targets=targets)
    return [c for plugin, c in loaded.pm.contributions("osiris_health_checks", ctx=loaded.ctx)
            if plugin == "windows"]


def test_one_answering_target_is_enough(tmp_path):
    with refused_port() as closed, socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        [check] = checks_of(tmp_path, {"dc01": closed, "srv01": srv.getsockname()[1]})
        res = asyncio.run(check.run())
    assert isinstance(check, HealthCheck) and check.name == "windows.reachable"
    assert res.ok and "srv01 answers" in res.detail, res.detail


def test_no_answering_target_fails_naming_each(tmp_path):
    with refused_port() as a, refused_port() as b:
        [check] = checks_of(tmp_path, {"dc01": a, "ws01": b})
        res = asyncio.run(check.run())
    assert not res.ok
    assert "none of the 2 windows targets answers" in res.detail
    assert f"dc01 (127.0.0.1:{a}): connection refused" in res.detail
    assert f"ws01 (127.0.0.1:{b}): connection refused" in res.detail


def test_without_windows_targets_there_is_no_check(tmp_path):
    assert checks_of(tmp_path, {}) == []
