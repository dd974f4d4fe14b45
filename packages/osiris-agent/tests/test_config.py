"""Config validation: every error names file, section, key and expectation."""

import json
import subprocess

import pytest

from osiris.app import load
from osiris.config import ConfigError

from .conftest import OSIRIS


def run_cli(*args, env=None, input=None):
    return subprocess.run([str(OSIRIS), *args], capture_output=True, text=True, env=env, timeout=60, input=input)


def test_wrong_type_in_plugin_section_exits_2_naming_everything(write_config):
    path = write_config({"plugins": {"appliance-selfcheck": {"min_free_percent": "lots"}}})
    res = run_cli("config", "check", str(path))
    assert res.returncode == 2, res.stderr
    assert str(path) in res.stderr
    assert "plugins.appliance-selfcheck" in res.stderr
    assert "min_free_percent" in res.stderr
    assert "expected a number" in res.stderr and '"lots"' in res.stderr


def test_unknown_key_exits_2_naming_everything(write_config):
    path = write_config({"plugins": {"appliance-selfcheck": {"min_free_pct": 5}}})
    res = run_cli("config", "check", str(path))
    assert res.returncode == 2
    assert str(path) in res.stderr and "plugins.appliance-selfcheck" in res.stderr
    assert "unknown key 'min_free_pct'" in res.stderr


def test_unknown_core_key_and_bad_core_type(write_config):
    path = write_config({"agent": {"workers": "many", "wrokers": 2, "http": {"port": 0}}})
    res = run_cli("config", "check", str(path))
    assert res.returncode == 2
    assert "section 'agent', key 'workers': expected an integer" in res.stderr
    assert "section 'agent': unknown key 'wrokers'" in res.stderr


def test_section_for_a_plugin_that_is_not_installed(write_config):
    path = write_config({"plugins": {"apliance-selfcheck": {}}})
    with pytest.raises(ConfigError, match="no installed plugin has settings named 'apliance-selfcheck'"):
        load(path)


def test_inline_secret_is_refused(write_config):
    path = write_config({"targets": [{"name": "dc1", "kind": "local", "options": {"password": "hunter2"}}]})
    with pytest.raises(ConfigError) as exc:
        load(path)
    msg = str(exc.value)
    assert "targets[0]" in msg and "options" in msg and "inline secret" in msg
    assert "hunter2" not in msg, "a secret typed inline must not be echoed back"


def test_target_of_unknown_kind(write_config):
    path = write_config({"targets": [{"name": "dc1", "kind": "winrmx"}]})
    with pytest.raises(ConfigError, match=r"targets\[0\]', key 'kind'.*'winrmx'"):
        load(path)


def test_json_syntax_error_has_line_and_column(write_config, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"site": {"id": "x",}}')
    res = run_cli("config", "check", str(path))
    assert res.returncode == 2
    assert f"{path}:1:" in res.stderr and "not valid JSON" in res.stderr


def test_yaml_is_accepted(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"site:\n  id: yaml-site\nstate_dir: {tmp_path / 's'}\nplugins:\n  appliance-selfcheck:\n    min_free_percent: 3\n")
    loaded = load(path)
    assert loaded.config.site.id == "yaml-site"
    assert loaded.ctx.settings("appliance-selfcheck").min_free_percent == 3


def test_check_override_of_unknown_check(write_config):
    path = write_config({"checks": {"appliance.nope": {"interval": 5}}})
    with pytest.raises(ConfigError, match="section 'checks', key 'appliance.nope'"):
        load(path)


def test_check_override_changes_params(write_config):
    path = write_config({"checks": {"appliance.storage.state_free_space": {"interval": 7, "params": {"min_free_mib": 1}}}})
    spec = load(path).registry.checks["appliance.storage.state_free_space"].spec
    assert spec.interval == 7 and spec.params["min_free_mib"] == 1 and "path" in spec.params


def test_schema_includes_plugin_sections():
    res = run_cli("config", "schema")
    assert res.returncode == 0, res.stderr
    schema = json.loads(res.stdout)
    section = schema["properties"]["plugins"]["properties"]["appliance-selfcheck"]
    assert "min_free_percent" in section["properties"]
    assert schema["properties"]["plugins"]["additionalProperties"] is False


def test_good_config_checks_ok(write_config):
    path = write_config({"site": {"id": "clinic-1"}, "plugins": {"appliance-selfcheck": {"min_free_percent": 5}}})
    res = run_cli("config", "check", str(path))
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout


def test_secret_typed_into_the_credential_field_is_not_echoed(write_config):
    path = write_config({"targets": [{"name": "dc1", "kind": "local", "credential": "Winter2024! admin"}]})
    res = run_cli("config", "check", str(path))
    assert res.returncode == 2 and "targets[0]" in res.stderr and "credential" in res.stderr
    assert "Winter2024" not in res.stderr


def test_unknown_check_parameter_is_an_error(write_config):
    path = write_config({"checks": {"appliance.storage.state_free_space": {"params": {"min_free_mb": 1}}}})
    with pytest.raises(ConfigError, match=r"key 'appliance.storage.state_free_space.params.min_free_mb'.*min_free_mib"):
        load(path)


def test_duplicate_target_names_are_located(write_config):
    path = write_config({"targets": [{"name": "dc1", "kind": "local"}, {"name": "dc1", "kind": "local"}]})
    with pytest.raises(ConfigError, match=r"section 'targets'.*'dc1' is used twice"):
        load(path)


def test_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes('{"site": {"name": "Caf\xe9"}}'.encode("latin-1"))
    res = run_cli("config", "check", str(path))
    assert res.returncode == 2 and f"{path}: not UTF-8 text" in res.stderr


def test_a_secret_nested_in_target_options_is_refused_and_never_echoed(write_config, tmp_path):
    (tmp_path / "dc").write_text("admin:pw")
    path = write_config({"secrets": {"directory": str(tmp_path)}, "targets": [
        {"name": "dc1", "kind": "windows", "address": "10.0.0.1", "credential": "dc",
         "options": {"auth": {"user": "admin", "password": "Hunter2Secret"}}}]})
    res = run_cli("config", "check", str(path))
    assert res.returncode == 2, res.stderr
    assert "targets[0]" in res.stderr and "auth.password" in res.stderr and "inline secret" in res.stderr
    assert "Hunter2Secret" not in res.stderr


def test_errors_hide_values_under_secret_names_at_any_depth():
    from osiris.config import shown

    value = {"user": "admin", "auth": {"AdminPassword": "s3cret-1", "list": [{"api_key": "s3cret-2"}]},
             "token_secret": "a-name", "switch": True}
    text = shown(value, ("targets", 0, "options", "auth"), limit=1000)
    assert "s3cret" not in text and "admin" in text and "a-name" in text, text
    assert shown("s3cret-3", ("plugins", "x", "smtp_password")) is None
    assert shown("s3cret-4", ("targets", 0, "credential")) is None


def test_wrong_types_are_not_coerced(write_config):
    path = write_config({"agent": {"workers": "8", "check_self": "no", "tick": 5, "http": {"port": "8780"}}})
    res = run_cli("config", "check", str(path))
    assert res.returncode == 2, res.stderr
    assert f"{path}: section 'agent', key 'workers': expected an integer, got \"8\"" in res.stderr
    assert f"{path}: section 'agent', key 'check_self': expected true or false, got \"no\"" in res.stderr
    assert "key 'http.port': expected an integer" in res.stderr
    assert "tick" not in res.stderr, "an integer where a number is expected is fine"


def test_plugin_sections_are_strict_too(write_config):
    path = write_config({"plugins": {"appliance-selfcheck": {"min_free_percent": "15"}}})
    res = run_cli("config", "check", str(path))
    assert res.returncode == 2 and "plugins.appliance-selfcheck" in res.stderr and "min_free_percent" in res.stderr


@pytest.mark.parametrize("listen", ["999.1.1.1", "not an address", "", "127.0.0.1:8780"])
def test_a_bad_listen_address_fails_config_check(write_config, listen):
    path = write_config({"agent": {"http": {"listen": listen, "port": 0}}})
    res = run_cli("config", "check", str(path))
    assert res.returncode == 2, res.stderr
    assert f"{path}: section 'agent', key 'http.listen': expected an IP address" in res.stderr


def test_a_busy_port_stops_run_with_a_clear_error_and_no_traceback(write_config):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        path = write_config({"agent": {"http": {"port": port}}})
        res = run_cli("--config", str(path), "run", "--once")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert f"{path}: section 'agent', key 'http.listen'/'http.port': cannot listen on 127.0.0.1 port {port}" in res.stderr
    assert "another process holds it" in res.stderr


def test_an_address_of_another_machine_stops_run_as_a_config_error(write_config, tmp_path):
    from osiris_lab import pki

    path = write_config({"agent": {"http": {"listen": "192.0.2.1", "port": 0}}})  # TEST-NET-1, never local
    res = run_cli("--config", str(path), "run", "--once")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "192.0.2.1 is not a loopback address: the status page and API would be open to the network" in res.stderr
    # with TLS and an account, the address itself is what is wrong
    files = pki.create(tmp_path / "pki")
    path = write_config({"agent": {"http": {"listen": "192.0.2.1", "port": 0, "tls": {
        "cert": str(files.cert_file), "key": str(files.key_file)}}}})
    res = run_cli("--config", str(path), "users", "add", "ops", "--role", "operator", "--password-stdin",
                  input="correct horse battery staple\n")
    assert res.returncode == 0, res.stderr
    res = run_cli("--config", str(path), "run", "--once")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "cannot listen on 192.0.2.1" in res.stderr, res.stderr
