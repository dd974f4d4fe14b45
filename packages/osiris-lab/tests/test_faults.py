"""Fault and latency injection, seen from a real client."""

from __future__ import annotations

import errno
import socket
import time

import pytest
import requests
from winrm.exceptions import WinRMOperationTimeoutError, WinRMTransportError

from osiris_lab import Lab


def test_refused_until_cleared(lab, clients):
    lab.inject_fault("srv01", "refused")
    with pytest.raises(requests.exceptions.ConnectionError, match="[Rr]efused"):
        clients.https("srv01").run_cmd("hostname")
    assert clients.https("ws01").run_cmd("hostname").status_code == 0  # the others still answer
    lab.clear_faults("srv01")
    assert clients.https("srv01").run_cmd("hostname").std_out == b"SRV01\r\n"


def test_a_refused_host_holds_its_ports_until_it_listens_again(lab, clients):
    """While refusing, the host's ports stay bound (not listening): no other
    socket can take them, so listening again on the same ports cannot fail."""
    h = lab.host("srv01")
    ports = (h.http_port, h.https_port)
    lab.inject_fault("srv01", "refused")
    try:
        for port in ports:
            with socket.socket() as other, pytest.raises(OSError) as err:
                other.bind((lab.bind, port))
            assert err.value.errno == errno.EADDRINUSE, port
        with pytest.raises(requests.exceptions.ConnectionError, match="[Rr]efused"):
            clients.https("srv01").run_cmd("hostname")
    finally:
        lab.clear_faults("srv01")
    assert (h.http_port, h.https_port) == ports and h._holds == []  # the holds were handed back
    assert clients.https("srv01").run_cmd("hostname").std_out == b"SRV01\r\n"


def test_refused_for_a_while(lab, clients):
    # Long enough that the first attempt is made inside it on a loaded
    # machine; then the host comes back on its own (no clear_faults), which
    # is waited for rather than assumed after a fixed sleep.
    lab.inject_fault("srv01", "refused", duration=3)
    with pytest.raises(requests.exceptions.ConnectionError, match="[Rr]efused"):
        clients.https("srv01").run_cmd("hostname")
    deadline = time.monotonic() + 60
    while True:
        try:
            r = clients.https("srv01").run_cmd("hostname")
            break
        except requests.exceptions.ConnectionError:
            assert time.monotonic() < deadline, "srv01 still refuses a minute after its 3 s refusal"
            time.sleep(0.1)
    assert r.std_out == b"SRV01\r\n"
    assert not lab.host("srv01").faults  # it came back because the fault expired


def test_reset_for_a_number_of_requests(lab, clients):
    lab.inject_fault("ws01", "reset", count=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        clients.https().run_cmd("hostname")
    assert clients.https().run_cmd("hostname").status_code == 0  # the count is used up


def test_http_500(lab, clients):
    lab.inject_fault("ws01", "http500", count=1)
    with pytest.raises(WinRMTransportError) as err:
        clients.https().run_cmd("hostname")
    assert err.value.code == 500


def test_operation_timeout_fault_on_any_request(lab, clients):
    lab.inject_fault("dc01", "operation_timeout", count=1)
    with pytest.raises(WinRMOperationTimeoutError):
        clients.https("dc01").protocol.open_shell()
    assert clients.https("dc01").run_cmd("hostname").status_code == 0


def test_hang_never_answers(lab, clients):
    # The hang lasts until the lab stops (the fault only has to be live when
    # the request arrives): the client's read timeout is what ends the wait.
    lab.inject_fault("ws01", "hang", duration=600)
    before = lab.host("ws01").requests
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        clients.https(read_timeout_sec=2, operation_timeout_sec=1).run_cmd("hostname")
    assert time.monotonic() - started > 1.5  # it waited its read timeout (2 s): the host accepted and never answered
    assert lab.host("ws01").requests - before == 1  # the first request (Create) hung


def test_request_and_powershell_start_latency(lab, clients):
    # Only lower bounds are timed (a loaded machine can only make things
    # slower); "no start latency" is shown by a start latency far longer
    # than the OperationTimeout, which a Receive would then have to answer
    # with the operation-timeout fault.
    h = lab.host("ws01")
    s = clients.https()
    lab.set_latency("ws01", request=0.2)
    before = h.requests
    t0 = time.perf_counter()
    s.run_cmd("hostname")  # Create, Command, Receive, Signal, Delete
    assert h.requests - before == 5
    assert time.perf_counter() - t0 >= 5 * 0.2
    lab.set_latency("ws01", request=0.0, ps_start=600)
    p = clients.https(operation_timeout_sec=20, read_timeout_sec=30).protocol
    shell = p.open_shell()
    try:
        cid = p.run_command(shell, "hostname")  # no PowerShell: no start latency
        assert p.get_command_output_raw(shell, cid) == (b"WS01\r\n", b"", 0, True)
        p.operation_timeout_sec = 1
        cid = p.run_command(shell, "powershell", ["-Command", "$env:COMPUTERNAME"])
        with pytest.raises(WinRMOperationTimeoutError):  # still starting
            p.get_command_output_raw(shell, cid)
    finally:
        p.close_shell(shell)
    lab.set_latency("ws01", ps_start=0.4)
    t0 = time.perf_counter()
    assert s.run_ps("$env:COMPUTERNAME").std_out == b"WS01\r\n"
    assert time.perf_counter() - t0 >= 0.4


def test_a_fault_limited_to_command_strikes_after_the_command_started(lab, clients):
    h = lab.host("ws01")
    p = clients.https().protocol
    shell = p.open_shell()
    lab.inject_fault("ws01", "reset", count=1, action="Command")
    before = h.commands_run
    with pytest.raises(requests.exceptions.ConnectionError):
        p.run_command(shell, "hostname")
    assert h.commands_run == before + 1  # the host ran it; only the reply was lost
    lab.inject_fault("ws01", "http500", count=1, action="command")  # case-insensitive
    with pytest.raises(WinRMTransportError) as err:
        p.run_command(shell, "hostname")
    assert err.value.code == 500 and h.commands_run == before + 2
    cid = p.run_command(shell, "hostname")  # the counts are used up
    assert p.get_command_output_raw(shell, cid)[0] == b"WS01\r\n"
    p.close_shell(shell)


def test_an_operation_timeout_limited_to_an_action_replaces_the_reply(lab, clients):
    lab.inject_fault("ws01", "operation_timeout", count=1, action="Command")
    s = clients.https()
    shell = s.protocol.open_shell()  # Create is not affected
    before = lab.host("ws01").commands_run
    with pytest.raises(WinRMOperationTimeoutError):
        s.protocol.run_command(shell, "hostname")
    assert lab.host("ws01").commands_run == before  # not handled
    s.protocol.close_shell(shell)


def test_a_fault_limited_to_an_action_over_the_control_api(lab):
    url = f"http://{lab.bind}:{lab.control_port}/hosts/ws01/faults"
    r = requests.post(url, json={"kind": "http500", "count": 1, "action": "Receive"}, timeout=60)
    assert r.status_code == 200
    assert [(f.kind, f.action) for f in lab.host("ws01").faults] == [("http500", "Receive")]
    r = requests.post(url, json={"kind": "reset", "action": "Launch"}, timeout=60)
    assert r.status_code == 400 and "action 'Launch': expected one of Create, Command" in r.json()["error"]


def test_fault_arguments_are_checked(lab):
    with pytest.raises(ValueError, match="fault kind 'meltdown'"):
        lab.inject_fault("ws01", "meltdown")
    with pytest.raises(ValueError, match="not for 'refused'"):
        lab.inject_fault("ws01", "refused", count=2)
    with pytest.raises(ValueError, match="not for 'refused'"):
        lab.inject_fault("ws01", "refused", action="Command")
    with pytest.raises(KeyError, match="no host 'nope'"):
        lab.inject_fault("nope", "hang")


def test_practice_shapes():
    from osiris_lab import practice

    assert [(h.name, h.role) for h in practice(3)] == [("dc01", "dc"), ("srv01", "server"), ("ws01", "workstation")]
    roles = [h.role for h in practice(200)]
    assert roles.count("dc") == 1 and roles.count("server") == 19 and roles.count("workstation") == 180
    with pytest.raises(ValueError, match="unique"):
        Lab([("a", "dc"), ("a", "server")])
