"""Target options and credentials: clear errors, secrets kept out of them."""

from __future__ import annotations

import pytest

from osiris.config import ConfigError
from osiris.secrets import Secret
from osiris_windows.settings import OptionsError, credentials, parse_options


def test_defaults_and_endpoints(tmp_path):
    assert parse_options("ws01", {}).endpoint("10.0.0.5") == "https://10.0.0.5:5986/wsman"
    assert parse_options("ws01", {"transport": "ntlm"}).endpoint("ws01.clinic.lan") == "http://ws01.clinic.lan:5985/wsman"
    assert parse_options("ws01", {"port": 15986}).endpoint("fe80::1") == "https://[fe80::1]:15986/wsman"
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert parse_options("ws01", {"ca_bundle": str(ca)}).ca_file == ca


@pytest.mark.parametrize("options, expected", [
    ({"transport": "basic"}, "key 'options.transport': expected 'https' (with ca_file) or 'ntlm'"),
    ({"transport": "basic"}, "sends the password in clear over plain HTTP; for a lab target only"),
    ({"transport": "htps"}, "key 'options.transport': expected Input should be 'https', 'ntlm' or 'basic', got \"htps\""),
    ({"trasnport": "https"}, "key 'options.trasnport': unknown key (expected one of"),
    ({"port": 70000}, "key 'options.port'"),
    ({"transport": "ntlm", "ca_file": "/etc/hosts"}, "key 'options.ca_file': expected no ca_file with transport 'ntlm'"),
    ({"ca_file": "/nonexistent/ca.pem"}, "key 'options.ca_file': expected a readable PEM file"),
])
def test_bad_options_name_the_target_and_the_key(options, expected):
    with pytest.raises(OptionsError) as err:
        parse_options("ws01", options)
    assert "target 'ws01'" in str(err.value) and expected in str(err.value)


@pytest.mark.parametrize("options", [
    {"auth": {"user": "admin", "password": "Hunter2Secret"}},
    {"auth": ["ntlm", {"ClientSecret": "Hunter2Secret"}]},
    {"port": {"pwd": "Hunter2Secret"}},
])
def test_a_secret_inside_a_bad_option_is_never_echoed(options):
    with pytest.raises(OptionsError) as err:
        parse_options("ws01", options)
    key = next(iter(options))
    assert f"key 'options.{key}'" in str(err.value) and "Hunter2Secret" not in str(err.value)


def test_options_are_not_coerced():
    with pytest.raises(OptionsError, match="key 'options.port'"):
        parse_options("ws01", {"port": "5986"})
    with pytest.raises(OptionsError, match="key 'options.allow_insecure_basic_for_lab'"):
        parse_options("ws01", {"transport": "basic", "allow_insecure_basic_for_lab": "yes"})


def test_basic_over_http_only_with_the_lab_flag():
    opts = parse_options("lab", {"transport": "basic", "allow_insecure_basic_for_lab": True})
    assert opts.endpoint("127.0.0.1") == "http://127.0.0.1:5985/wsman"


def test_config_with_basic_over_http_is_refused_at_start_up(lab, agent):
    targets = lab.targets("basic")
    for t in targets:
        t["options"].pop("allow_insecure_basic_for_lab")
    with pytest.raises(ConfigError) as err:
        agent(targets=targets)
    text = str(err.value)
    assert "section 'targets[0]'" in text and "target 'dc01'" in text
    assert "key 'options.transport'" in text and "sends the password in clear over plain HTTP" in text
    assert "allow_insecure_basic_for_lab: true" in text


def test_config_without_address_or_credential_is_refused(lab, agent):
    t = lab.host("ws01").target()
    with pytest.raises(ConfigError, match="target 'ws01': key 'credential': expected the name of a secret"):
        agent(targets=[{**t, "credential": None}])
    with pytest.raises(ConfigError, match="target 'ws01': key 'address'"):
        agent(targets=[{**t, "address": ""}])


@pytest.mark.parametrize("value, user, password", [
    ("osiris:pa:ss word", "osiris", "pa:ss word"),
    ("CLINIC\\svc-osiris:x", "CLINIC\\svc-osiris", "x"),
    ('{"username": "svc@clinic.lan", "password": "p:w"}', "svc@clinic.lan", "p:w"),
])
def test_credential_formats(value, user, password):
    c = credentials(Secret("winrm", value), "ws01")
    assert (c.username, c.password.reveal()) == (user, password)
    assert password not in repr(c)


@pytest.mark.parametrize("value", ["just-a-password", ":nouser", '{"username": "x"}', "{not json"])
def test_bad_credentials_never_echo_the_secret(value):
    with pytest.raises(ValueError) as err:
        credentials(Secret("winrm", value), "ws01")
    msg = str(err.value)
    assert "secret 'winrm' (credential of target 'ws01')" in msg
    assert value not in msg and "nouser" not in msg and "just-a-password" not in msg
