"""The host state model, the emulation registry and the batch runner,
driven directly (the plugin's tests drive them through the executor)."""

from __future__ import annotations

import base64
import json

import pytest

from osiris_lab import HostState, Lab, declare, emulation
from osiris_lab.batch import ScriptRunner
from osiris_lab.processes import ProcessContext, split_command_line


def test_state_defaults_by_role_and_errors_that_name_host_and_path():
    ws = HostState("ws07", "workstation")
    assert ws["firewall.public.enabled"] is True and ws["smb.server.smb1_enabled"] is False
    assert ws.break_("smb.server.smb1_enabled") is True and ws["smb.server.smb1_enabled"] is True
    ws.restore("smb.server.smb1_enabled")
    assert ws["smb.server.smb1_enabled"] is False
    with pytest.raises(KeyError, match="host 'ws07': no setting 'firewall.pubic.enabled'"):
        ws.set("firewall.pubic.enabled", False)
    with pytest.raises(ValueError, match="role 'laptop'"):
        HostState("x", "laptop")


def test_a_plugin_declares_more_settings_and_emulations():
    declare("test.only.widget", {"dc": 1, "server": 2, "workstation": 3}, 0, "a setting for this test",
            roles=["server", "workstation"])
    assert HostState("s", "server")["test.only.widget"] == 2
    with pytest.raises(KeyError, match="does not apply to role 'dc'"):
        HostState("d", "dc")["test.only.widget"]
    with pytest.raises(ValueError, match="declared twice"):
        declare("test.only.widget", 5, 0, "different")

    @emulation.check("test.only.widget_check", 2, cost_ms=1)
    def widget(host, params):
        return {"widget": host["test.only.widget"], "want": params["want"]}

    assert emulation.lookup("check", "test.only.widget_check", 2).fn is widget
    assert emulation.lookup("check", "test.only.widget_check", 1) is None


def _env(script: str, params: dict) -> dict[str, str]:
    s = base64.b64encode(script.encode()).decode()
    p = base64.b64encode(json.dumps(params).encode()).decode()
    half = len(s) // 2  # split over two variables, as a large batch is
    return {"OSIRIS_SCRIPT_N": "2", "OSIRIS_SCRIPT_0": s[:half], "OSIRIS_SCRIPT_1": s[half:],
            "OSIRIS_PARAMS_N": "1", "OSIRIS_PARAMS_0": p}


async def _run(host, env):
    async def no_stdin():
        return b""

    async def runner(text, ctx):
        return await ScriptRunner(host)(text, ctx)

    boot = "# osiris-bootstrap: env/v1\n(the bootstrap text is not interpreted)"
    return await runner(boot, ProcessContext(host.name.upper(), "LAB\\osiris", env, no_stdin, 0.0, runner))


def _doc(outcome) -> dict:
    line = outcome.stdout.decode().strip()
    assert line.startswith("OSIRIS-RESULT ")
    return json.loads(base64.b64decode(line.split(" ", 1)[1]))


BATCH = """# osiris-script: batch/v1
[void]$Units.Add(@{ Kind = 'check'; Id = 'windows.smb.v1_disabled'; Body = @'
# osiris-check: windows.smb.v1_disabled/v1
'@ })
[void]$Units.Add(@{ Kind = 'check'; Id = 'windows.firewall.profiles_enabled'; Body = @'
# osiris-check: windows.firewall.profiles_enabled/v1
'@ })
[void]$Units.Add(@{ Kind = 'check'; Id = 'windows.smb.v1_disabled_next'; Body = @'
# osiris-check: windows.smb.v1_disabled_next/v3
'@ })
"""


async def test_batch_units_fail_alone(tmp_path):
    lab = Lab([("ws01", "workstation")], workdir=tmp_path)
    host = lab.host("ws01")
    params = {"v": 1, "units": {"windows.smb.v1_disabled": {"timeout_ms": 1000, "params": {}},
                                "windows.firewall.profiles_enabled": {"timeout_ms": 50, "params": {}},
                                "windows.smb.v1_disabled_next": {"timeout_ms": 1000, "params": {}}}}
    lab.slow_unit("ws01", "windows.firewall.profiles_enabled", 200)
    doc = _doc(await _run(host, _env(BATCH, params)))
    assert doc["computer"] == "WS01"
    by_id = {r["id"]: r for r in doc["results"]}
    assert by_id["windows.smb.v1_disabled"] == {**by_id["windows.smb.v1_disabled"], "ok": True,
                                                "data": {"smb1_server_enabled": False}}
    assert by_id["windows.firewall.profiles_enabled"]["error"] == "timed out after 50 ms"
    assert by_id["windows.smb.v1_disabled_next"]["error_type"] == "Osiris.Lab.NotEmulated"
    lab.fail_unit("ws01", "windows.smb.v1_disabled")
    doc = _doc(await _run(host, _env(BATCH, params)))
    assert [r["ok"] for r in doc["results"]] == [False, False, False]
    assert "made to throw" in doc["results"][0]["error"]


async def test_a_unit_that_names_a_probe_type_runs_that_types_emulation(tmp_path):
    """A check pack's checks share their probe type's script: the lab runs
    the type's one emulation for each, with that check's inputs."""
    @emulation.probe("test_only_echo", 1, cost_ms=0)
    def echo(host, params):
        return {"host": host.name, "asked": params["probe"]["what"]}

    batch = "# osiris-script: batch/v1\n" + "".join(
        f"[void]$Units.Add(@{{ Kind = 'check'; Id = '{cid}'; Body = @'\n# osiris-check: {cid}/v1\n"
        f"# osiris-probe: {ptype}/v1\nparam($P)\n'@ }})\n"
        for cid, ptype in (("site.one.a", "test_only_echo"), ("site.two.b", "test_only_echo"),
                           ("site.three.c", "test_only_unknown")))
    params = {"v": 1, "units": {cid: {"timeout_ms": 1000, "params": {"probe": {"what": cid}}}
                                for cid in ("site.one.a", "site.two.b", "site.three.c")}}
    lab = Lab([("ws01", "workstation")], workdir=tmp_path)
    by_id = {r["id"]: r for r in _doc(await _run(lab.host("ws01"), _env(batch, params)))["results"]}
    assert by_id["site.one.a"]["data"] == {"host": "ws01", "asked": "site.one.a"}
    assert by_id["site.two.b"]["data"] == {"host": "ws01", "asked": "site.two.b"}
    assert by_id["site.three.c"]["error_type"] == "Osiris.Lab.NotEmulated"
    assert "probe test_only_unknown/v1 (check site.three.c)" in by_id["site.three.c"]["error"]


async def test_bootstrap_without_a_known_script(tmp_path):
    lab = Lab([("ws01", "workstation")], workdir=tmp_path)
    host = lab.host("ws01")
    out = await _run(host, _env("Remove-Item C:\\ -Recurse", {"units": {}}))
    assert out.exit_code == 1 and b"The term 'Remove-Item' is not recognized" in out.stderr
    out = await _run(host, {})
    assert (out.exit_code, out.stdout) == (0, b"")  # an empty script prints nothing
    env = _env(BATCH, {"units": {}})
    env["OSIRIS_PARAMS_0"] = "%%%"
    out = await _run(host, env)
    assert out.exit_code == 1 and b"cannot read parameters" in out.stderr


def test_command_line_splitting_follows_windows_rules():
    assert split_command_line('powershell -Command "a b" c') == ["powershell", "-Command", "a b", "c"]
    assert split_command_line(r'x "a\"b" c\\d') == ["x", 'a"b', r"c\\d"]
    assert split_command_line('a "b ""c"" d" e\\\\"f g"') == ["a", 'b "c" d', "e\\f g"]
    assert split_command_line("ps -e " + "QUJD" * 600 + "\t x") == ["ps", "-e", "QUJD" * 600, "x"]
