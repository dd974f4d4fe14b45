"""Real clients against the lab: pywinrm (HTTPS with CA validation, NTLM
with message encryption) and pypsrp's WinRS client."""

from __future__ import annotations

import base64

import pytest
import requests
import winrm
from pypsrp.exceptions import WSManFaultError as PSRPFault
from pypsrp.shell import Process, SignalCode, WinRS
from pypsrp.wsman import WSMan
from winrm.exceptions import InvalidCredentialsError, WSManFaultError

from osiris_lab import pki


def test_pywinrm_https_validates_the_certificate_and_runs_commands(lab, clients):
    s = clients.https("srv01")
    r = s.run_cmd("hostname")
    assert (r.status_code, r.std_out) == (0, b"SRV01\r\n")
    r = s.run_ps("$env:COMPUTERNAME")
    assert (r.status_code, r.std_out.strip()) == (0, b"SRV01")
    # A client that trusts another CA refuses the lab's certificate.
    other = pki.create(lab.workdir / "other-ca")
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        clients.https("srv01", ca_trust_path=str(other.ca_file)).run_cmd("hostname")


def test_pywinrm_https_rejects_a_wrong_password(clients):
    with pytest.raises(InvalidCredentialsError):
        clients.https(password="not-the-password").run_cmd("hostname")


def test_pywinrm_ntlm_with_message_encryption(lab, clients):
    before = lab.host("dc01").encrypted_requests
    r = clients.ntlm("dc01").run_cmd("whoami")
    assert (r.status_code, r.std_out) == (0, b"lab\\osiris\r\n")
    # Create, Command, Receive, Signal, Delete: each sealed by the connection's NTLM context.
    assert lab.host("dc01").encrypted_requests - before == 5


def test_unencrypted_soap_over_http_is_refused_as_windows_does(clients):
    # AllowUnencrypted is false: NTLM without message encryption gets 401.
    with pytest.raises(InvalidCredentialsError):
        clients.ntlm("dc01", message_encryption="never").run_cmd("whoami")


def test_pywinrm_ntlm_over_https_with_channel_binding(clients):
    r = clients.ntlm("ws01", scheme="https").run_cmd("hostname")
    assert r.std_out == b"WS01\r\n"


def test_basic_over_plain_http_only_where_the_host_allows_it(lab):
    h = lab.host("ws01")
    session = winrm.Session(h.endpoint("http"), auth=(lab.username, lab.password), transport="basic",
                            ca_trust_path=None)
    with pytest.raises(InvalidCredentialsError):
        session.run_cmd("hostname")
    h.allow_unencrypted = True
    assert session.run_cmd("hostname").std_out == b"WS01\r\n"


def test_an_unknown_script_gets_the_powershell_error_not_a_success(clients):
    r = clients.https().run_ps("Get-Thing -Name 'x'")
    assert r.status_code == 1
    assert b"The term 'Get-Thing' is not recognized as the name of a cmdlet" in r.std_err
    r = clients.https().run_cmd("frobnicate.exe /all")
    assert r.status_code == 1 and b"'frobnicate.exe' is not recognized as an internal or external command" in r.std_err


def test_command_line_limits_are_those_of_windows(clients):
    s = clients.https()
    r = s.run_cmd("echo " + "x" * 8000)
    assert r.status_code == 0 and len(r.std_out) > 8000
    r = s.run_cmd("echo " + "x" * 8200)  # cmd.exe: 8191 characters at most
    assert (r.status_code, r.std_out) == (1, b"The command line is too long.\r\n")
    with pytest.raises(WSManFaultError) as err:  # CreateProcess: 32767 characters at most
        s.run_cmd("powershell", ["-EncodedCommand", "A" * 33000])
    assert err.value.wsman_fault_code == 0x800700CE


def test_pywinrm_encoded_command_is_utf16le(clients):
    s = clients.https()
    shell = s.protocol.open_shell()
    try:
        good = base64.b64encode("$env:COMPUTERNAME".encode("utf-16-le")).decode()
        cid = s.protocol.run_command(shell, "powershell", ["-NoProfile", "-EncodedCommand", good])
        assert s.protocol.get_command_output(shell, cid)[0] == b"WS01\r\n"
        s.protocol.cleanup_command(shell, cid)
        utf8 = base64.b64encode(b"$env:COMPUTERNAME").decode()  # not UTF-16LE: PowerShell cannot read it
        cid = s.protocol.run_command(shell, "powershell", ["-EncodedCommand", utf8])
        out, err, code = s.protocol.get_command_output(shell, cid)
        assert code == 1 and out == b""
    finally:
        s.protocol.close_shell(shell)


def _wsman(lab, host="ws01", **kw):
    h = lab.host(host)
    kw.setdefault("auth", "basic")
    return WSMan(lab.bind, port=h.https_port, ssl=True,
                 username=f"{lab.domain}\\{lab.username}", password=lab.password, cert_validation=str(lab.ca_file),
                 **kw)


def test_pypsrp_winrs_process_with_stdin_and_signal(lab):
    with _wsman(lab) as wsman:
        wsman.update_max_payload_size()  # GETs the config resource
        assert wsman.max_envelope_size == lab.quotas.max_envelope_kb * 1024
        with WinRS(wsman) as shell:
            proc = Process(shell, "hostname")
            proc.invoke()
            assert (proc.rc, proc.stdout) == (0, b"WS01\r\n")
            proc = Process(shell, "cmd.exe", ["/c", "echo", "two", "args"])  # one Arguments element each
            proc.invoke()
            assert (proc.rc, proc.stdout) == (0, b"two args\r\n")
            proc = Process(shell, "powershell.exe", ["-NoProfile", "-Command", "$PSVersionTable.PSVersion.ToString()"])
            proc.begin_invoke()
            proc.send(b"", end=True)  # stdin over WinRS Send
            proc.end_invoke()
            assert proc.stdout.strip() == lab.host("ws01").ps_version.encode()
            proc.signal(SignalCode.TERMINATE)  # "Terminate", capital T: compared case-insensitively


def test_pypsrp_ntlm_with_message_encryption(lab):
    h = lab.host("srv01")
    with WSMan("127.0.0.1", port=h.http_port, ssl=False, auth="ntlm", encryption="always",
               username=f"{lab.domain}\\{lab.username}", password=lab.password) as wsman:
        with WinRS(wsman) as shell:
            proc = Process(shell, "whoami")
            proc.invoke()
            assert proc.stdout == b"lab\\osiris\r\n"


def test_pypsrp_sees_faults_as_windows_sends_them(lab):
    with _wsman(lab) as wsman:
        shell = WinRS(wsman)
        shell.open()
        shell.close()
        shell.opened, shell.id = True, "gone"
        with pytest.raises(PSRPFault) as err:
            shell.close()  # the shell no longer exists
        assert err.value.code == 2150858843
        assert "shell was not found on the server" in err.value.reason
