"""`osiris-lab serve` as a separate process, as the demo and bench use it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import winrm

LAB = Path(sys.executable).with_name("osiris-lab")


def test_serve_prints_endpoints_ca_and_credentials(tmp_path):
    config = tmp_path / "lab.json"
    proc = subprocess.Popen([str(LAB), "serve", "--hosts", "3", "--json", "--control", "--workdir", str(tmp_path),
                             "--write-config", str(config)], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert [h["name"] for h in info["hosts"]] == ["dc01", "srv01", "ws01"]
        assert Path(info["ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
        user, password = Path(info["credential_file"]).read_text().strip().split(":", 1)
        assert password == info["password"] and oct(Path(info["credential_file"]).stat().st_mode & 0o777) == "0o600"
        r = winrm.Session(info["hosts"][2]["https"], auth=(info["username"], password), transport="ssl",
                          ca_trust_path=info["ca_file"]).run_cmd("hostname")
        assert r.std_out == b"WS01\r\n"
        cfg = json.loads(config.read_text())
        assert {t["name"]: t["role"] for t in cfg["targets"]} == {"dc01": "dc", "srv01": "server", "ws01": "workstation"}
        assert cfg["targets"][0]["options"]["ca_file"] == info["ca_file"]
        assert cfg["secrets"]["files"]["lab-winrm"] == info["credential_file"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_serve_human_output_and_emulations_listing(tmp_path):
    out = subprocess.run([str(LAB), "emulations"], capture_output=True, text=True).stdout
    assert "check    windows.firewall.profiles_enabled/v1" in out
    assert "runbook  windows.firewall.enable_profiles/v1" in out
    proc = subprocess.Popen([str(LAB), "serve", "--hosts", "1", "--workdir", str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(5)]
        assert "1 emulated Windows hosts" in lines[0] and "dc01" in lines[1] and "CA file:" in lines[2]
        assert "credentials: LAB\\osiris / " in lines[3]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
