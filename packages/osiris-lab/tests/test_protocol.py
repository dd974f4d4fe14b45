"""WS-Management behaviour as Windows has it: RelatesTo, the operation
timeout fault on Receive, quotas, shell lifetime, envelope and environment
limits, the config resource."""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET

import pytest
import xmltodict
from winrm.exceptions import WinRMOperationTimeoutError, WinRMTransportError, WSManFaultError

from osiris_lab import Lab, Quotas, soap


def test_responses_relate_to_the_request(clients):
    p = clients.https().protocol
    mid = uuid.uuid4()
    req = {"env:Envelope": p.build_wsman_header(action=soap.ACTION_GET, resource_uri=soap.CONFIG_URI, message_id=mid)}
    req["env:Envelope"]["env:Body"] = {}
    root = ET.fromstring(p.send_message(xmltodict.unparse(req)))
    assert root.find("s:Header/a:RelatesTo", soap.NS).text == f"uuid:{mid}"
    cfg = root.find("s:Body/cfg:Config", soap.NS)
    assert cfg.findtext("cfg:MaxEnvelopeSizekb", namespaces=soap.NS) == "500"
    assert cfg.findtext("cfg:Winrs/cfg:MaxShellsPerUser", namespaces=soap.NS) == "4"
    assert cfg.findtext("cfg:Service/cfg:AllowUnencrypted", namespaces=soap.NS) == "false"


def test_receive_answers_the_operation_timeout_fault_until_the_command_is_done(lab, clients):
    # The start takes far longer than the first Receive's OperationTimeout,
    # however late that Receive arrives on a loaded machine.
    lab.set_latency("ws01", ps_start=6)
    p = clients.https(operation_timeout_sec=1, read_timeout_sec=30).protocol
    shell = p.open_shell()
    try:
        cid = p.run_command(shell, "powershell", ["-Command", "hostname"])
        with pytest.raises(WinRMOperationTimeoutError):  # fault 2150858793: poll again
            p.get_command_output_raw(shell, cid)
        out, err, code = p.get_command_output(shell, cid)  # pywinrm polls through it
        assert (out, code) == (b"WS01\r\n", 0)
    finally:
        p.close_shell(shell)


def test_shells_per_user_quota(lab, clients):
    p = clients.https("dc01").protocol
    shells = [p.open_shell() for _ in range(lab.quotas.max_shells_per_user)]
    try:
        with pytest.raises(WSManFaultError) as err:
            p.open_shell()
        assert err.value.wsman_fault_code == 2150859173
        assert "maximum number of 4 concurrent shells" in err.value.reason
    finally:
        for s in shells:
            p.close_shell(s, close_session=False)
    p.close_shell(p.open_shell())  # released


def test_a_deleted_shell_is_gone(clients):
    p = clients.https().protocol
    shell = p.open_shell()
    p.close_shell(shell)
    with pytest.raises(WSManFaultError) as err:
        p.run_command(shell, "hostname")
    assert err.value.wsman_fault_code == 2150858843 and err.value.fault_subcode == "w:InvalidSelectors"


def test_idle_shells_are_reaped(tmp_path):
    lab = Lab([("ws01", "workstation")], workdir=tmp_path, quotas=Quotas(idle_timeout_ms=300))
    with lab.running():
        import winrm

        p = winrm.Protocol(lab.host("ws01").endpoint("https"), transport="ssl", username=lab.username,
                           password=lab.password, ca_trust_path=str(lab.ca_file))
        shell = p.open_shell()
        deadline = time.monotonic() + 60  # the reaper looks every second; a loaded machine may delay it
        while lab.host("ws01").shells and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not lab.host("ws01").shells, "the idle shell was not reaped within a minute"
        with pytest.raises(WSManFaultError) as err:
            p.run_command(shell, "hostname")
        assert err.value.wsman_fault_code == 2150858843


def test_signal_code_is_compared_case_insensitively_and_checked(clients):
    p = clients.https().protocol
    shell = p.open_shell()
    try:
        cid = p.run_command(shell, "hostname")
        p.get_command_output(shell, cid)
        p.cleanup_command(shell, cid)  # pywinrm: .../signal/terminate
        cid = p.run_command(shell, "hostname")
        req = {"env:Envelope": p.build_wsman_header(action=soap.ACTION_SIGNAL, resource_uri=soap.SHELL_CMD_URI,
                                                     shell_id=shell)}
        req["env:Envelope"]["env:Body"] = {"rsp:Signal": {"@CommandId": cid, "rsp:Code": "urn:not-a-signal"}}
        with pytest.raises(WSManFaultError, match="unknown signal code"):
            p.send_message(xmltodict.unparse(req))
    finally:
        p.close_shell(shell)


def test_processes_per_shell_quota(lab, clients):
    p = clients.https("srv01").protocol
    shell = p.open_shell()
    try:
        for _ in range(lab.quotas.max_processes_per_shell):
            p.run_command(shell, "hostname")  # never signalled: each still counts
        with pytest.raises(WSManFaultError, match="maximum number of 25 concurrent processes"):
            p.run_command(shell, "hostname")
    finally:
        p.close_shell(shell)


def test_request_envelope_and_environment_limits(lab, clients):
    p = clients.https().protocol
    with pytest.raises(WSManFaultError) as err:  # one variable past 32767 characters
        p.open_shell(env_vars={"BIG": "x" * 33000})
    assert err.value.wsman_fault_code == 0x80070057
    env = {f"V{i}": "x" * 30000 for i in range(18)}  # 540 KB: past MaxEnvelopeSizekb
    with pytest.raises(WinRMTransportError) as terr:
        p.open_shell(env_vars=env)
    assert terr.value.code == 413
    shell = p.open_shell(env_vars={f"V{i}": "x" * 30000 for i in range(10)})  # 300 KB fits
    p.close_shell(shell)


def test_malformed_soap_gets_a_schema_fault(clients):
    p = clients.https().protocol
    with pytest.raises(WSManFaultError) as err:
        p.send_message("<not-soap/>")
    assert err.value.wsman_fault_code == 2150858817


def test_the_chaos_http_api(lab):
    import json
    import urllib.error
    import urllib.request

    base = f"http://{lab.bind}:{lab.control_port}"

    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, hosts = call("GET", "/hosts")
    assert status == 200 and "password" not in hosts
    assert hosts["hosts"][0]["state"]["firewall.public.enabled"] is True
    assert call("POST", "/hosts/ws01/break", {"setting": "smb.server.smb1_enabled"}) == (200, {"ok": True, "value": True})
    assert lab.host("ws01").state["smb.server.smb1_enabled"] is True
    status, err = call("POST", "/hosts/ws99/break", {"setting": "smb.server.smb1_enabled"})
    assert status == 404 and "ws99" in err["error"]
    status, err = call("POST", "/hosts/ws01/break", {"setting": "no.such.setting"})
    assert status == 404 and "no.such.setting" in err["error"]
    status, err = call("POST", "/hosts/ws01/faults", {"kind": "explode"})
    assert status == 400 and "explode" in err["error"]
    assert call("POST", "/hosts/ws01/faults", {"kind": "http500", "count": 1})[0] == 200
    assert lab.host("ws01").take_fault(("http500",)) == "http500"
    assert call("POST", "/hosts/ws01/restore", {})[0] == 200
    assert lab.host("ws01").state["smb.server.smb1_enabled"] is False
