"""The Windows side of the endpoint agent, as far as Linux can hold it: the
runner script parses with PowerShell's grammar and carries no data, the
fragment and parameters travel as environment variables, a hung check is
killed at its timeout, and output is read strictly."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from pathlib import Path

from osiris_endpoint.host import RUNNER, Check, PowerShellHost, parse_output

REPO = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("osiris_tests_pslint", REPO / "tests" / "pslint.py")
pslint = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pslint)

# A stand-in for powershell.exe: decodes what the runner would, answers as it would.
FAKE = """#!{python}
import base64, json, os, sys, time
args = sys.argv[1:]
assert args[:4] == ["-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand"], args
script = base64.b64decode(os.environ["OSIRIS_UNIT"]).decode()
params = json.loads(base64.b64decode(os.environ["OSIRIS_PARAMS"]))
if "hang" in script:
    time.sleep(60)
doc = {{"ok": True, "data": {{"script_head": script.splitlines()[0], "params": params}}}}
print("noise before the result")
print("OSIRIS-RESULT " + base64.b64encode(json.dumps(doc).encode()).decode())
"""


def test_the_runner_parses_and_is_the_same_for_every_check():
    assert pslint.problems(RUNNER, fragment=False) == []
    assert "OSIRIS_UNIT" in RUNNER and "OSIRIS_PARAMS" in RUNNER


async def test_a_check_runs_with_its_fragment_and_params_as_data_and_a_hung_one_is_killed(tmp_path):
    exe = tmp_path / "powershell.exe"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(0o755)
    host = PowerShellHost(str(exe))
    odd = "'; Remove-Item C:\\ -Recurse; '"
    ok, hung = await host.run([
        Check("windows.smb.v1_disabled", "# osiris-check: windows.smb.v1_disabled/v1\nparam($P)\n@{}", {"x": odd},
              60, 30),
        Check("windows.hang.check", "# osiris-check: windows.hang.check/v1\n# hang", {}, 60, 0.5)])
    assert ok.facts == {"script_head": "# osiris-check: windows.smb.v1_disabled/v1", "params": {"x": odd}}
    assert ok.error == ""
    assert hung.facts is None and hung.error == "timed out after 0.5 s"
    missing = await PowerShellHost(str(tmp_path / "nope.exe")).run([Check("a.b", "x", {}, 60, 5)])
    assert missing[0].facts is None and missing[0].error.startswith("cannot start ")


def test_output_is_read_strictly():
    def line(doc):
        return ("OSIRIS-RESULT " + base64.b64encode(json.dumps(doc).encode()).decode()).encode()

    assert parse_output(b"x\r\n" + line({"ok": True, "data": {"a": 1}})) == ({"a": 1}, "")
    assert parse_output(line({"ok": False, "error": "Get-SmbServerConfiguration: access denied"})) == (
        None, "Get-SmbServerConfiguration: access denied")
    assert parse_output(line({"ok": True, "data": [1]})) == (None, "the check returned no facts")
    assert parse_output(b"OSIRIS-RESULT !!!") == (None, "the runner's result line is not base64 JSON")
    assert parse_output(b"") == (None, "the runner printed no result line")
