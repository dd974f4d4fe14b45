"""Plugin discovery: entry points, selection by environment, fail-fast."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from osiris.plugins import PluginError, PluginManager

from .conftest import OSIRIS, REPO


def run_cli(*args, env=None, cwd=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(OSIRIS), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=60)


def test_plugins_lists_selfcheck_with_version_and_hooks():
    res = run_cli("plugins", "--format", "json")
    assert res.returncode == 0, res.stderr
    infos = {p["name"]: p for p in json.loads(res.stdout)}
    sc = infos["appliance-selfcheck"]
    assert sc["version"] == "0.1.0"
    assert sc["distribution"] == "osiris-appliance-selfcheck"
    assert set(sc["hooks"]) == {"osiris_checks", "osiris_rules", "osiris_runbooks", "osiris_settings"}
    assert infos["local"]["builtin"] is True
    table = run_cli("plugins").stdout
    assert "appliance-selfcheck" in table and "0.1.0" in table and "osiris_checks" in table


def _installer():
    uv = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    if Path(uv).exists():
        return [uv, "pip", "install", "--python", sys.executable]
    return [sys.executable, "-m", "pip", "install"]


@pytest.fixture(scope="module")
def outside_plugin(tmp_path_factory):
    """Build and install a separate distribution into a target directory,
    with a real installer: its entry point is found like any plugin's."""
    src = tmp_path_factory.mktemp("dist")
    (src / "osiris_demo_plugin").mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [project]
        name = "osiris-demo-plugin"
        version = "2.3.4"
        dependencies = []
        [project.entry-points.osiris]
        demo = "osiris_demo_plugin"
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"
    '''))
    (src / "osiris_demo_plugin" / "__init__.py").write_text(textwrap.dedent('''
        from osiris import CheckSpec, Status, Verdict, hookimpl

        def probe(params):
            return {"answer": params["answer"]}

        def evaluate(facts, params):
            ok = facts["answer"] == 42
            return Verdict(Status.PASS if ok else Status.FAIL, f"answer is {facts['answer']}")

        @hookimpl
        def osiris_checks(ctx):
            return CheckSpec(id="demo.answer", title="The answer", target_kind="local",
                             hipaa=("164.308(a)(1)(ii)(D)",), probe=probe, evaluate=evaluate,
                             params={"answer": 42})
    '''))
    target = tmp_path_factory.mktemp("site")
    cmd = _installer() + ["--no-deps", "--no-build-isolation", "--target", str(target), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert list(target.glob("osiris_demo_plugin-2.3.4.dist-info"))
    return target


def test_separate_distribution_contributes_a_check_that_osiris_check_runs(outside_plugin, write_config):
    env = {"PYTHONPATH": str(outside_plugin)}
    res = run_cli("plugins", "--format", "json", env=env)
    demo = {p["name"]: p for p in json.loads(res.stdout)}["demo"]
    assert demo == {**demo, "version": "2.3.4", "distribution": "osiris-demo-plugin", "builtin": False}
    cfg = write_config({})
    res = run_cli("--config", str(cfg), "check", "--check", "demo.answer", "--format", "json", env=env)
    assert res.returncode == 0, res.stderr
    [obs] = json.loads(res.stdout)
    assert obs == {**obs, "check": "demo.answer", "status": "pass", "facts": {"answer": 42}}
    # The check's params are overridable from config and the verdict follows.
    cfg = write_config({"checks": {"demo.answer": {"params": {"answer": 41}}}})
    res = run_cli("--config", str(cfg), "check", "--check", "demo.answer", env=env)
    assert res.returncode == 1 and "FAIL" in res.stdout and "answer is 41" in res.stdout


def test_environment_selects_and_disables_outside_plugins(outside_plugin):
    base = {"PYTHONPATH": str(outside_plugin)}
    def names(env):
        return {p["name"] for p in json.loads(run_cli("plugins", "--format", "json", env={**base, **env}).stdout)}

    assert {"demo", "appliance-selfcheck", "local"} <= names({})
    assert names({"OSIRIS_PLUGINS": "none"}) == {"local"}, "built-ins load whatever the selection"
    assert names({"OSIRIS_PLUGINS": "demo"}) == {"local", "demo"}
    assert "demo" not in names({"OSIRIS_DISABLE_PLUGINS": "demo"})
    assert "local" not in names({"OSIRIS_DISABLE_PLUGINS": "local"})


def test_unknown_hook_fails_at_startup(plugin_module):
    mod = plugin_module("typo_plugin", '''
        from osiris import hookimpl

        @hookimpl
        def osiris_chekcs(ctx):
            return []
    ''')
    pm = PluginManager()
    with pytest.raises(PluginError, match="typo_plugin.*does not know"):
        pm.load(extra_modules=[mod], environ={"OSIRIS_PLUGINS": "none"})


def test_unmarked_hook_function_fails_at_startup(plugin_module):
    mod = plugin_module("unmarked_plugin", '''
        def osiris_checks(ctx):
            return []
    ''')
    with pytest.raises(PluginError, match="not marked with @osiris.hookimpl"):
        PluginManager().load(extra_modules=[mod], environ={"OSIRIS_PLUGINS": "none"})


def test_cli_exits_3_on_a_broken_plugin(plugin_module, write_config, tmp_path):
    plugin_module("typo_plugin2", '''
        from osiris import hookimpl

        @hookimpl
        def osiris_startupp(ctx):
            pass
    ''')
    cfg = write_config({"plugin_modules": ["typo_plugin2"]})
    res = run_cli("--config", str(cfg), "check", env={"PYTHONPATH": str(tmp_path / "plugmods")})
    assert res.returncode == 3
    assert "typo_plugin2" in res.stderr and "osiris_startupp" in res.stderr


def test_duplicate_check_ids_are_refused(plugin_module, write_config):
    from osiris.app import load

    plugin_module("dup_plugin", '''
        from osiris import CheckSpec, Status, Verdict, hookimpl

        @hookimpl
        def osiris_checks(ctx):
            return CheckSpec(id="appliance.clock.synchronized", title="again", target_kind="local",
                             hipaa=("164.312(b)",), probe=dict, evaluate=lambda f, p: Verdict(Status.PASS, ""))
    ''')
    with pytest.raises(PluginError, match="contributed by both 'dup_plugin' and 'appliance-selfcheck'"):
        load(write_config({"plugin_modules": ["dup_plugin"]}))


def test_plugin_rejecting_site_config_exits_2_not_3(plugin_module, write_config, tmp_path):
    plugin_module("strict_executor", '''
        from osiris import hookimpl
        from osiris.config import ConfigError

        @hookimpl
        def osiris_executors(ctx):
            raise ConfigError([f"{ctx.source}: section 'targets[0]', key 'options.port': expected 1-65535"])
    ''')
    cfg = write_config({"plugin_modules": ["strict_executor"]})
    res = run_cli("--config", str(cfg), "check", env={"PYTHONPATH": str(tmp_path / "plugmods"), "OSIRIS_PLUGINS": "none"})
    assert res.returncode == 2, res.stderr
    assert f"{cfg}: section 'targets[0]', key 'options.port'" in res.stderr


@pytest.fixture
def entry_point_plugin(tmp_path):
    """An installed plugin (a dist-info with an ``osiris`` entry point on
    PYTHONPATH) whose module source the test gives."""

    def make(name: str, source: str) -> dict[str, str]:
        site = tmp_path / f"site-{name}"
        info = site / f"osiris_{name}-1.0.dist-info"
        info.mkdir(parents=True)
        (site / f"osiris_{name}.py").write_text(textwrap.dedent(source))
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: osiris-{name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[osiris]\n{name} = osiris_{name}\n")
        return {"PYTHONPATH": str(site)}

    return make


def test_a_plugin_whose_commands_hook_raises_is_named_and_the_rest_works(entry_point_plugin, write_config):
    env = entry_point_plugin("badcmd", '''
        from osiris import hookimpl

        @hookimpl
        def osiris_commands(cli):
            @cli.command("half-added")
            def half_added():
                pass
            raise RuntimeError("commands are broken")
    ''')
    cfg = write_config({})
    res = run_cli("config", "check", str(cfg), env=env)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
    assert "plugin 'badcmd': osiris_commands failed: RuntimeError: commands are broken" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("plugins", "--format", "json", env=env)
    assert res.returncode == 0 and "badcmd" in {p["name"] for p in json.loads(res.stdout)}
    res = run_cli("half-added", env=env)
    assert res.returncode == 2 and "No such command 'half-added'" in res.stderr, "half-added commands are taken back"


def test_a_plugin_that_cannot_be_imported_is_reported_by_commands_that_need_plugins(entry_point_plugin, write_config):
    env = entry_point_plugin("broken", "raise ImportError('no such library')\n")
    res = run_cli("--help", env=env)
    assert res.returncode == 0 and "config" in res.stdout, res.stderr
    for args in (["config", "check", str(write_config({}))], ["plugins"], ["config", "schema"]):
        res = run_cli(*args, env=env)
        assert res.returncode == 3, (args, res.stderr)
        assert "plugin 'broken' (osiris-broken): cannot import osiris_broken: no such library" in res.stderr
        assert "Traceback" not in res.stderr


def test_one_plugin_manager_per_cli_process(monkeypatch, write_config):
    from click.testing import CliRunner

    from osiris import cli as cli_module

    made = []
    real = cli_module.PluginManager

    def counting():
        made.append(1)
        return real()

    monkeypatch.setattr(cli_module, "PluginManager", counting)
    monkeypatch.setattr("osiris.app.PluginManager", counting)
    plugins = cli_module.Plugins()
    plugins.add_commands(cli_module.cli)
    res = CliRunner().invoke(cli_module.cli, ["config", "check", str(write_config({}))], obj=plugins)
    assert res.exit_code == 0, res.output
    assert len(made) == 1


def test_contributions_come_in_pluggys_own_call_order():
    """Attributed contributions (and the L2 planners the ladder awaits one
    by one) follow the order pluggy itself calls implementations in, so
    ``tryfirst`` and registration order mean what pluggy's docs say."""
    from osiris import hookimpl

    class First:
        @hookimpl(tryfirst=True)
        def osiris_rules(self, ctx):
            return "first"

    class Early:
        @hookimpl
        def osiris_rules(self, ctx):
            return "registered-early"

    class Late:
        @hookimpl
        def osiris_rules(self, ctx):
            return "registered-late"

    pm = PluginManager()
    for name, plugin in (("first", First()), ("early", Early()), ("late", Late())):
        pm.register(plugin, name)
    ours = [item for _plugin, item in pm.contributions("osiris_rules", ctx=None)]
    assert ours == pm.hook.osiris_rules(ctx=None) == ["first", "registered-late", "registered-early"]
    assert [impl.plugin_name for impl in pm.impls("osiris_rules")] == ["first", "late", "early"]


def test_collect_refuses_a_record_of_the_wrong_type_naming_plugin_and_hook():
    from osiris import hookimpl
    from osiris.records import CheckSpec

    class Wrong:
        @hookimpl
        def osiris_checks(self, ctx):
            return {"id": "not.a.spec"}

    pm = PluginManager()
    pm.register(Wrong(), "wrong")
    with pytest.raises(PluginError, match="plugin 'wrong': osiris_checks returned dict, expected CheckSpec"):
        pm.collect("osiris_checks", CheckSpec, ctx=None)
