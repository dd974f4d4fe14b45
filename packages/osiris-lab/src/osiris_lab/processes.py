"""What a WinRS Command starts on the emulated host: cmd.exe and powershell.exe.

Windows limits hold here as they do on Windows, so a client that works in
the lab does not fail on a real host for a reason the lab hid:

* WinRS runs the command line through ``cmd.exe /c`` unless the client asks
  to skip it (``WINRS_SKIP_CMD_SHELL``); cmd.exe refuses lines longer than
  8191 characters ("The command line is too long.", exit code 1), and
  CreateProcess refuses lines of 32767 characters or more (the Command
  request faults with "The filename or extension is too long.").
* ``powershell -EncodedCommand`` takes base64 of UTF-16LE.
* Errors are written as PowerShell writes them when its stdout is
  redirected: CLIXML on stderr (``#< CLIXML``), exit code 1.

The scripts themselves are dispatched on their markers (:mod:`.batch`);
a script the lab does not know gets PowerShell's "term is not recognized"
error, never a silent success.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

CMD_MAX_LINE = 8191
CREATE_PROCESS_MAX_LINE = 32767
# One environment variable, "name=value" and its terminator (Windows' documented limit).
ENV_VAR_MAX = 32767


@dataclass
class Outcome:
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0


def join_command(command: str, arguments: list[str]) -> str:
    """WinRS joins Command and each Arguments element with spaces."""
    return " ".join([command, *arguments]) if arguments else command


_PLAIN = re.compile(r'[^\\" \t]+')


def split_command_line(line: str) -> list[str]:
    """CommandLineToArgvW's rules (quotes and backslashes), enough for the
    command lines WinRS clients send."""
    args: list[str] = []
    cur: list[str] = []
    i, n, in_quotes, have = 0, len(line), False, False
    while i < n:
        plain = _PLAIN.match(line, i)
        if plain is not None:  # a run of ordinary characters (a -EncodedCommand value is kilobytes of them)
            cur.append(plain.group())
            i, have = plain.end(), True
            continue
        c = line[i]
        if c == "\\":
            j = i
            while j < n and line[j] == "\\":
                j += 1
            count = j - i
            if j < n and line[j] == '"':
                cur.append("\\" * (count // 2))
                if count % 2:
                    cur.append('"')
                    i = j + 1
                else:
                    i = j
                have = True
                continue
            cur.append("\\" * count)
            i, have = j, True
            continue
        if c == '"':
            if in_quotes and i + 1 < n and line[i + 1] == '"':
                cur.append('"')
                i += 2
                continue
            in_quotes, have = not in_quotes, True
            i += 1
            continue
        if c in " \t" and not in_quotes:
            if have:
                args.append("".join(cur))
                cur, have = [], False
            i += 1
            continue
        cur.append(c)
        have = True
        i += 1
    if have:
        args.append("".join(cur))
    return args


def clixml_error(message: str, command: str = "") -> bytes:
    """An error record as powershell.exe writes it to redirected stderr."""
    lines = [f"{command} : {message}" if command else message]
    if command:
        lines += ["At line:1 char:1", f"+ {command}", "+ " + "~" * max(len(command), 1),
                  f"    + CategoryInfo          : ObjectNotFound: ({command}:String) [], CommandNotFoundException",
                  "    + FullyQualifiedErrorId : CommandNotFoundException", " "]
    parts = "".join(f'<S S="Error">{escape(line)}_x000D__x000A_</S>' for line in lines)
    return ('#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
            f"{parts}</Objs>").encode("utf-8")


def not_recognized(name: str) -> str:
    """PowerShell's message for a command it does not know."""
    return (f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable "
            "program. Check the spelling of the name, or if a path was included, verify that the path is correct "
            "and try again.")


def command_not_found(name: str) -> Outcome:
    return Outcome(stderr=clixml_error(not_recognized(name), name), exit_code=1)


_FIRST_TOKEN = re.compile(r"[A-Za-z_$][\w$:.\\-]*")


def first_command(script: str) -> str:
    """The first command word of a script, skipping comments; what
    PowerShell would name in its error if it did not know the command."""
    text = re.sub(r"<#.*?#>", "", script, flags=re.S)
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = _FIRST_TOKEN.match(line)
            return m.group(0) if m else line.split()[0]
    return ""


def decode_encoded_command(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-16-le")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"Cannot process the command because the value specified with -EncodedCommand is not "
                         f"properly encoded. The value must be Base64 encoded. ({exc})") from None


@dataclass
class ProcessContext:
    """What a running process can use: the host, its stdin, the clock."""

    host_name: str
    user: str
    env: dict[str, str]  # the WinRS shell's environment variables
    stdin: Callable[[], Awaitable[bytes]]  # everything the client sends, once it ends the stream
    ps_start_latency: float
    run_script: Callable[[str, "ProcessContext"], Awaitable[Outcome]]


_PS_SWITCHES = {"-nologo", "-noprofile", "-noninteractive", "-noexit", "-sta", "-mta"}
_PS_VALUED = {"-executionpolicy", "-inputformat", "-outputformat", "-windowstyle", "-version", "-configurationname"}


async def run(line: str, skip_cmd_shell: bool, ctx: ProcessContext) -> Outcome:
    """Run a WinRS command line (the server has refused, with Windows' fault,
    a line longer than CreateProcess takes)."""
    if not skip_cmd_shell and len(line) > CMD_MAX_LINE:
        return Outcome(stdout=b"The command line is too long.\r\n", exit_code=1)
    argv = split_command_line(line)
    if not argv:
        return Outcome()
    exe = argv[0].lower().rsplit("\\", 1)[-1]
    if exe in ("cmd", "cmd.exe") and len(argv) > 1 and argv[1].lower() in ("/c", "/k"):
        return await run(line.split(argv[1], 1)[1].strip(), False, ctx)
    if exe in ("powershell", "powershell.exe"):
        return await _powershell(argv[1:], ctx)
    if exe in ("hostname", "hostname.exe"):
        return Outcome(stdout=f"{ctx.host_name}\r\n".encode())
    if exe in ("whoami", "whoami.exe"):
        return Outcome(stdout=f"{ctx.user.lower()}\r\n".encode())
    if exe == "echo" and not skip_cmd_shell:
        return Outcome(stdout=(line.split(" ", 1)[1] if " " in line else "ECHO is on.").encode("cp437", "replace") + b"\r\n")
    if skip_cmd_shell:
        raise FileNotFoundError(argv[0])
    return Outcome(stderr=(f"'{argv[0]}' is not recognized as an internal or external command,\r\n"
                           "operable program or batch file.\r\n").encode("cp437", "replace"), exit_code=1)


async def _powershell(args: list[str], ctx: ProcessContext) -> Outcome:
    await asyncio.sleep(ctx.ps_start_latency)  # a cold powershell.exe start
    i = 0
    while i < len(args):
        a = args[i].lower()
        if a in _PS_SWITCHES:
            i += 1
        elif a in _PS_VALUED:
            i += 2
        elif a in ("-encodedcommand", "-enc", "-e", "-ec") and i + 1 < len(args):
            try:
                script = decode_encoded_command(args[i + 1])
            except ValueError as exc:
                return Outcome(stderr=clixml_error(str(exc)), exit_code=1)
            return await ctx.run_script(script, ctx)
        elif a in ("-command", "-c"):
            return await ctx.run_script(" ".join(args[i + 1:]), ctx)
        else:
            # powershell.exe treats the rest of the line as a command.
            return await ctx.run_script(" ".join(args[i:]), ctx)
    return Outcome()
