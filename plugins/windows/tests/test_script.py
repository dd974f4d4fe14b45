"""Script composition: the text depends only on the units, parameters are
data, and what travels fits Windows' limits."""

from __future__ import annotations

import base64
import json

import pytest

from osiris_windows import script
from osiris_windows.checks import checks, runbooks

NASTY = ["'; Remove-Item -Recurse C:\\ ; '", '"; $(Invoke-Expression \'whoami\'); "', "`$(calc)`", "@'\n'@",
         "x\r\n# osiris-check: evil/v1", "ü € 𝄞", "$env:OSIRIS_PWNED", "a;b|c&d>e"]


def _units():
    return tuple(script.unit("check", c.id, c.script) for c in checks())


def _sent(params_by_check):
    units = _units()
    timeouts = {u.id: 10.0 for u in units}
    text = script.compose(units)
    return text, script.environment(text, script.encode_params(units, params_by_check, timeouts))


def test_script_text_is_identical_whatever_the_parameter_values():
    plain = {c.id: dict(c.params) for c in checks()}
    nasty = {c.id: {"profiles": NASTY, "max_signature_age_days": "'; exit 1", "max_seconds": "$(Stop-Computer)",
                     "anything": {"nested": NASTY}} for c in checks()}
    text_a, env_a = _sent(plain)
    text_b, env_b = _sent(nasty)
    assert text_a == text_b
    script_vars = {k: v for k, v in env_a.items() if k.startswith("OSIRIS_SCRIPT")}
    assert script_vars == {k: v for k, v in env_b.items() if k.startswith("OSIRIS_SCRIPT")}
    assert env_a["OSIRIS_PARAMS_0"] != env_b["OSIRIS_PARAMS_0"]
    for value in NASTY:
        assert value not in text_b  # no parameter value reaches the source
    # The values arrive intact, as data.
    doc = json.loads(base64.b64decode(env_b["OSIRIS_PARAMS_0"]).decode("utf-8"))
    assert doc["units"]["windows.firewall.profiles_enabled"]["params"]["profiles"] == NASTY


def test_script_text_does_not_depend_on_unit_order():
    units = _units()
    assert script.compose(units) == script.compose(tuple(reversed(units)))


def test_bootstrap_fits_cmd_exe_and_is_powershell_utf16le():
    command, args = script.command_line()
    line = " ".join([command, *args])
    assert len(line) < 8191  # cmd.exe's limit, which WinRS commands go through
    assert base64.b64decode(args[-1]).decode("utf-16-le") == script.BOOTSTRAP
    assert script.BOOTSTRAP.startswith("# osiris-bootstrap: env/v1\n")


def test_large_values_are_split_over_environment_variables():
    big = "x" * 70000
    env = script.environment("# osiris-script: batch/v1\n" + big, base64.b64encode(big.encode()).decode())
    assert env["OSIRIS_SCRIPT_N"] == "3" and env["OSIRIS_PARAMS_N"] == "3"  # 93 KB of base64 each
    assert all(len(v) <= 32000 for v in env.values())
    joined = "".join(env[f"OSIRIS_SCRIPT_{i}"] for i in range(3))
    assert base64.b64decode(joined).decode().endswith(big)


def test_batches_are_split_only_when_the_envelope_is_too_small():
    units = list(_units())

    def size(batch):
        return sum(len(u.text) for u in batch)

    assert script.plan_batches(units, size, 10**6) == [sorted(units, key=lambda u: u.id)]
    limit = max(len(u.text) for u in units) + 10
    batches = script.plan_batches(units, size, limit)
    assert len(batches) > 1 and all(size(b) <= limit for b in batches)
    assert sorted(u.id for b in batches for u in b) == sorted(u.id for u in units)


@pytest.mark.parametrize("text, message", [
    (None, "needs a PowerShell script"),
    ("param($P)\n@{}", "must start with the line '# osiris-check: windows.x.y/v<N>'"),
    ("# osiris-check: windows.other/v1\n@{}", "must start with the line"),
    ("# osiris-check: windows.x.y/v0\n@{}", "must start with the line"),
    ("# osiris-check: windows.x.y/v1\n$a = @'\nx\n'@\n@{}", "starts with '@"),
])
def test_fragments_are_validated(text, message):
    with pytest.raises(script.ScriptError, match=message) as err:
        script.unit("check", "windows.x.y", text)
    assert "windows.x.y" in str(err.value)


def test_parameters_must_be_json_data():
    u = script.unit("check", "windows.x.y", "# osiris-check: windows.x.y/v1\n@{}")
    with pytest.raises(script.ScriptError, match="check windows.x.y: params must be JSON data"):
        script.encode_params([u], {u.id: {"when": object()}}, {u.id: 1.0})


def test_composing_many_different_batches_keeps_nothing():
    """Due checks differ from host to host and tick to tick: texts composed
    for them must not be kept (a cache of 256 filled RSS for ten minutes)."""
    import gc
    import random
    import tracemalloc

    units = [script.unit("check", f"soak.c{i:02d}", f"# osiris-check: soak.c{i:02d}/v1\n$x = '{'y' * 2000}'")
             for i in range(60)]
    rng = random.Random(14)
    subsets = [tuple(rng.sample(units, 40)) for _ in range(300)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for subset in subsets:
            script.environment(script.compose(subset), "")
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1024 * 1024, f"{kept / 2**20:.1f} MiB kept after composing {len(subsets)} batches"


def test_every_shipped_fragment_is_valid():
    for c in checks():
        assert script.unit("check", c.id, c.script).version == 1
    for r in runbooks():
        assert script.unit("runbook", r.id, r.script).version == 1


def test_result_parsing_finds_the_line_and_rejects_junk():
    doc = {"osiris": "batch/v1", "results": [{"id": "a.b", "ok": True, "data": {"x": 1}, "ms": 3}]}
    line = "OSIRIS-RESULT " + base64.b64encode(json.dumps(doc).encode()).decode()
    out = script.parse_output(f"WARNING: something\r\n{line}\r\n".encode())
    assert out["a.b"].ok and out["a.b"].data == {"x": 1}
    with pytest.raises(ValueError, match="no OSIRIS-RESULT line"):
        script.parse_output(b"hello\r\n")
    with pytest.raises(ValueError, match="not base64 JSON"):
        script.parse_output(b"OSIRIS-RESULT %%%\r\n")
    bad = base64.b64encode(json.dumps({"osiris": "other"}).encode()).decode()
    with pytest.raises(ValueError, match="not an osiris batch/v1 document"):
        script.parse_output(f"OSIRIS-RESULT {bad}".encode())
