"""WS-Management SOAP envelopes as Windows writes them: parse requests,
build responses and faults.

The lab answers real clients (pywinrm, pypsrp), so the envelopes follow
what WinRM puts on the wire (MS-WSMV): the ``a:RelatesTo`` echo of the
request's ``a:MessageID``, ``x:ResourceCreated`` with the ShellId selector on
Create, base64 ``rsp:Stream`` elements on Receive, and SOAP 1.2 faults with a
``f:WSManFault`` detail carrying the numeric code clients key on (for example
2150858793, the Receive operation timeout that clients poll through).
Responses are built from string templates: the server renders thousands of
them per second in the benchmark, and escaping is done explicitly.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "cfg": "http://schemas.microsoft.com/wbem/wsman/1/config",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}

SHELL_CMD_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
CONFIG_URI = "http://schemas.microsoft.com/wbem/wsman/1/config"

ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTION_COMMAND = _SHELL + "Command"
ACTION_RECEIVE = _SHELL + "Receive"
ACTION_SEND = _SHELL + "Send"
ACTION_SIGNAL = _SHELL + "Signal"
ACTION_FAULT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"

SIGNAL_TERMINATE = _SHELL + "signal/terminate"
SIGNAL_CTRL_C = _SHELL + "signal/ctrl_c"
SIGNAL_CTRL_BREAK = _SHELL + "signal/ctrl_break"
STATE_DONE = _SHELL + "CommandState/Done"
STATE_RUNNING = _SHELL + "CommandState/Running"

# The WSManFault codes clients act on.
CODE_OPERATION_TIMEOUT = 2150858793
CODE_SHELL_NOT_FOUND = 2150858843
CODE_SHELLS_PER_USER = 2150859173
CODE_OPERATIONS_PER_USER = 2150859174
CODE_SCHEMA_VALIDATION = 2150858817
# Not seen on the wire by us; the neighbouring quota code (MS-WSMV lists the message).
CODE_PROCESSES_PER_SHELL = 2150859175
CODE_ACTION_NOT_SUPPORTED = 2150858771
CODE_FILENAME_TOO_LONG = 0x800700CE  # HRESULT_FROM_WIN32(ERROR_FILENAME_EXCED_RANGE) from CreateProcess


class SoapError(ValueError):
    """A request that is not a well-formed WS-Man envelope."""


@dataclass
class Request:
    action: str
    resource_uri: str
    message_id: str
    operation_timeout: float | None
    max_envelope_size: int | None
    selectors: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    body: ET.Element | None = None

    def find(self, path: str) -> ET.Element | None:
        return None if self.body is None else self.body.find(path, NS)

    def findall(self, path: str) -> list[ET.Element]:
        return [] if self.body is None else self.body.findall(path, NS)


_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration(text: str | None) -> float | None:
    """xs:duration as WS-Man uses it (``PT20S``, ``PT60.000S``) in seconds."""
    if not text:
        return None
    m = _DURATION.match(text.strip())
    if not m:
        raise SoapError(f"OperationTimeout {text!r} is not an xs:duration")
    d, h, mi, s = m.groups()
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


def parse_request(data: bytes) -> Request:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise SoapError(f"not XML: {exc}") from None
    if root.tag != f"{{{NS['s']}}}Envelope":
        raise SoapError("not a SOAP 1.2 envelope")
    header = root.find("s:Header", NS)
    if header is None:
        raise SoapError("envelope has no Header")

    def text(path: str) -> str:
        el = header.find(path, NS)
        return (el.text or "").strip() if el is not None else ""

    selectors = {el.get("Name", ""): (el.text or "") for el in header.findall("w:SelectorSet/w:Selector", NS)}
    options = {el.get("Name", ""): (el.text or "") for el in header.findall("w:OptionSet/w:Option", NS)}
    max_env = text("w:MaxEnvelopeSize")
    body = root.find("s:Body", NS)
    return Request(
        action=text("a:Action"),
        resource_uri=text("w:ResourceURI"),
        message_id=text("a:MessageID"),
        operation_timeout=parse_duration(text("w:OperationTimeout")),
        max_envelope_size=int(max_env) if max_env.isdigit() else None,
        selectors=selectors,
        options=options,
        body=body,
    )


_ENVELOPE = (
    '<s:Envelope xml:lang="en-US" xmlns:s="{s}" xmlns:a="{a}" xmlns:x="{x}" xmlns:w="{w}" '
    'xmlns:rsp="{rsp}" xmlns:p="{p}"><s:Header><a:Action>{action}</a:Action>'
    "<a:MessageID>uuid:{mid}</a:MessageID>"
    "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
    "<a:RelatesTo>{relates}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
)


def envelope(action: str, relates_to: str, body: str) -> bytes:
    return _ENVELOPE.format(
        action=escape(action), mid=str(uuid.uuid4()).upper(), relates=escape(relates_to), body=body, **NS
    ).encode("utf-8")


def create_response(relates_to: str, endpoint: str, shell_id: str, owner: str, client_ip: str,
                    idle_timeout_s: float, input_streams: str, output_streams: str) -> bytes:
    body = (
        f"<x:ResourceCreated><a:Address>{escape(endpoint)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{SHELL_CMD_URI}</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
        f"</x:ResourceCreated><rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId>"
        f"<rsp:ResourceUri>{SHELL_CMD_URI}</rsp:ResourceUri><rsp:Owner>{escape(owner)}</rsp:Owner>"
        f"<rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP><rsp:IdleTimeOut>PT{idle_timeout_s:.3f}S</rsp:IdleTimeOut>"
        f"<rsp:InputStreams>{escape(input_streams)}</rsp:InputStreams>"
        f"<rsp:OutputStreams>{escape(output_streams)}</rsp:OutputStreams>"
        "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
        "</rsp:Shell>"
    )
    return envelope(ACTION_CREATE + "Response", relates_to, body)


def command_response(relates_to: str, command_id: str) -> bytes:
    body = f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
    return envelope(ACTION_COMMAND + "Response", relates_to, body)


def receive_response(relates_to: str, command_id: str, chunks: list[tuple[str, str]], done: bool,
                     exit_code: int | None) -> bytes:
    """``chunks`` are (stream name, base64 text); a finished command also
    gets End markers on both streams and CommandState Done with ExitCode."""
    cid = quoteattr(command_id)
    parts = [f"<rsp:Stream Name={quoteattr(name)} CommandId={cid}>{b64}</rsp:Stream>" for name, b64 in chunks]
    if done:
        parts.append(f'<rsp:Stream Name="stdout" CommandId={cid} End="true"></rsp:Stream>')
        parts.append(f'<rsp:Stream Name="stderr" CommandId={cid} End="true"></rsp:Stream>')
        parts.append(f'<rsp:CommandState CommandId={cid} State="{STATE_DONE}">'
                     f"<rsp:ExitCode>{int(exit_code or 0)}</rsp:ExitCode></rsp:CommandState>")
    else:
        parts.append(f'<rsp:CommandState CommandId={cid} State="{STATE_RUNNING}"></rsp:CommandState>')
    return envelope(ACTION_RECEIVE + "Response", relates_to, "<rsp:ReceiveResponse>" + "".join(parts) + "</rsp:ReceiveResponse>")


def send_response(relates_to: str) -> bytes:
    return envelope(ACTION_SEND + "Response", relates_to, "<rsp:SendResponse/>")


def signal_response(relates_to: str) -> bytes:
    return envelope(ACTION_SIGNAL + "Response", relates_to, "<rsp:SignalResponse/>")


def delete_response(relates_to: str) -> bytes:
    return envelope(ACTION_DELETE + "Response", relates_to, "")


def config_response(relates_to: str, cfg: dict[str, object]) -> bytes:
    """The ``winrm/config`` resource (what ``winrm get winrm/config`` shows)."""
    service = "".join(f"<cfg:{k}>{escape(str(v))}</cfg:{k}>" for k, v in cfg["Service"].items())  # type: ignore[union-attr]
    winrs = "".join(f"<cfg:{k}>{escape(str(v))}</cfg:{k}>" for k, v in cfg["Winrs"].items())  # type: ignore[union-attr]
    top = "".join(f"<cfg:{k}>{escape(str(v))}</cfg:{k}>" for k, v in cfg.items() if not isinstance(v, dict))
    body = (f'<cfg:Config xmlns:cfg="{NS["cfg"]}">{top}<cfg:Service>{service}</cfg:Service>'
            f"<cfg:Winrs>{winrs}</cfg:Winrs></cfg:Config>")
    return envelope(ACTION_GET + "Response", relates_to, body)


class WSManFault(Exception):
    """A fault the server answers with HTTP 500, as Windows does."""

    def __init__(self, code: str, subcode: str, reason: str, wsman_code: int | None, machine: str = "localhost"):
        super().__init__(reason)
        self.code = code
        self.subcode = subcode
        self.reason = reason
        self.wsman_code = wsman_code
        self.machine = machine

    def render(self, relates_to: str) -> bytes:
        detail = ""
        if self.wsman_code is not None:
            detail = (f'<s:Detail><f:WSManFault xmlns:f="{NS["f"]}" Code="{self.wsman_code}" '
                      f"Machine={quoteattr(self.machine)}><f:Message>{escape(self.reason)}</f:Message>"
                      "</f:WSManFault></s:Detail>")
        body = (f"<s:Fault><s:Code><s:Value>{self.code}</s:Value><s:Subcode><s:Value>{self.subcode}</s:Value>"
                f'</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{escape(self.reason)}</s:Text></s:Reason>'
                f"{detail}</s:Fault>")
        return envelope(ACTION_FAULT, relates_to, body)


# -- the faults Windows returns ------------------------------------------------------


def operation_timeout(machine: str) -> WSManFault:
    return WSManFault("s:Receiver", "w:TimedOut",
                      "The WS-Management service cannot complete the operation within the time specified in "
                      "OperationTimeout.  ", CODE_OPERATION_TIMEOUT, machine)


def shell_not_found(machine: str, shell_id: str) -> WSManFault:
    return WSManFault("s:Sender", "w:InvalidSelectors",
                      f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell "
                      "was not found on the server. Possible causes are: the specified ShellId is incorrect or the "
                      "shell no longer exists on the server. Provide the correct ShellId or create a new shell and "
                      "retry the operation. ", CODE_SHELL_NOT_FOUND, machine)


def _quota(machine: str, code: int, who: str, limit: int, what: str, close: str) -> WSManFault:
    return WSManFault("s:Receiver", "w:QuotaLimit",
                      f"The WS-Management service cannot process the request. This {who} is allowed a maximum number "
                      f"of {limit} concurrent {what}, which has been exceeded. {close} ", code, machine)


def shells_per_user(machine: str, limit: int) -> WSManFault:
    return _quota(machine, CODE_SHELLS_PER_USER, "user", limit, "shells",
                  "Close existing shells or raise the quota for this user.")


def operations_per_user(machine: str, limit: int) -> WSManFault:
    return _quota(machine, CODE_OPERATIONS_PER_USER, "user", limit, "operations",
                  "Close existing operations for this user, or raise the quota for this user.")


def processes_per_shell(machine: str, limit: int) -> WSManFault:
    return _quota(machine, CODE_PROCESSES_PER_SHELL, "shell", limit, "processes",
                  "Close existing processes or raise the quota for this shell.")


def filename_too_long(machine: str) -> WSManFault:
    return WSManFault("s:Receiver", "w:InternalError", "The filename or extension is too long. ",
                      CODE_FILENAME_TOO_LONG, machine)


def action_not_supported(machine: str, action: str) -> WSManFault:
    return WSManFault("s:Sender", "a:ActionNotSupported",
                      f"The action is not supported by the service. Action: {action} ", CODE_ACTION_NOT_SUPPORTED,
                      machine)


def invalid_request(machine: str, detail: str) -> WSManFault:
    return WSManFault("s:Sender", "w:SchemaValidationError",
                      f"The SOAP XML in the message does not match the corresponding XML schema definition. {detail} ",
                      CODE_SCHEMA_VALIDATION, machine)


def invalid_parameter(machine: str) -> WSManFault:
    """What CreateProcess/SetEnvironmentVariable report for a value past a
    Windows limit (ERROR_INVALID_PARAMETER as an HRESULT)."""
    return WSManFault("s:Receiver", "w:InternalError", "The parameter is incorrect. ", 0x80070057, machine)
