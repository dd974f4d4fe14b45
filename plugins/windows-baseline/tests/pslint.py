"""A small static checker for our PowerShell fragments (no PowerShell here).

It tokenises enough of the language to find code outside strings and
comments (single- and double-quoted strings, here-strings, ``#`` and
``<# #>`` comments), checks that brackets balance, and refuses syntax that
Windows PowerShell 5.1 does not have (PowerShell 7's ``??``, ``?.``,
ternaries, pipeline chains) and patterns that break in the executor's
runspace (``exit``, ``2>&1`` on native programs, a native program called
while ``$ErrorActionPreference`` is still ``Stop``).
"""

from __future__ import annotations

import re

PAIRS = {")": "(", "}": "{", "]": "["}


def code_only(text: str) -> str:
    """The text with strings and comments blanked (newlines kept); raises
    ValueError on unbalanced brackets or unterminated strings."""
    out: list[str] = []
    stack: list[tuple[str, int]] = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        if text.startswith("<#", i):
            end = text.find("#>", i + 2)
            if end < 0:
                raise ValueError(f"line {line}: unterminated block comment")
            line += text.count("\n", i, end)
            out.append("\n" * text.count("\n", i, end))
            i = end + 2
            continue
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if text.startswith("@'\n", i) or text.startswith('@"\n', i):
            quote = text[i + 1]
            m = re.compile(rf"^{quote}@", re.M).search(text, i + 3)
            if not m:
                raise ValueError(f"line {line}: unterminated here-string")
            line += text.count("\n", i, m.end())
            out.append('""' + "\n" * text.count("\n", i, m.end()))
            i = m.end()
            continue
        if c == "'":
            j = i + 1
            while True:
                j = text.find("'", j)
                if j < 0:
                    raise ValueError(f"line {line}: unterminated single-quoted string")
                if text.startswith("''", j):
                    j += 2
                    continue
                break
            out.append("''")
            line += text.count("\n", i, j)
            i = j + 1
            continue
        if c == '"':
            j, depth = i + 1, 0
            while j < n:
                d = text[j]
                if d == "`":
                    j += 2
                    continue
                if text.startswith("$(", j):
                    depth += 1
                    j += 2
                    continue
                if d == ")" and depth:
                    depth -= 1
                elif d == '"' and not depth:
                    if text.startswith('""', j):
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise ValueError(f"line {line}: unterminated double-quoted string")
            out.append('""')
            line += text.count("\n", i, j)
            i = j + 1
            continue
        if c == "`":  # line continuation or escape outside strings
            out.append(" ")
            i += 2
            continue
        if c in "({[":
            stack.append((c, line))
        elif c in ")}]":
            if not stack or stack[-1][0] != PAIRS[c]:
                raise ValueError(f"line {line}: unbalanced {c!r}")
            stack.pop()
        out.append(c)
        i += 1
    if stack:
        raise ValueError(f"line {stack[-1][1]}: {stack[-1][0]!r} is never closed")
    return "".join(out)


FORBIDDEN = [
    (re.compile(r"\?\?"), "?? (null-coalescing: PowerShell 7)"),
    (re.compile(r"\?\.|\?\["), "?. / ?[ (null-conditional: PowerShell 7)"),
    (re.compile(r"\s\?\s[^\n]*\s:\s"), "a ternary ?: (PowerShell 7)"),
    (re.compile(r"&&|\|\|"), "&& / || pipeline chains (PowerShell 7)"),
    (re.compile(r"-AsHashtable\b", re.I), "-AsHashtable (PowerShell 6+)"),
    (re.compile(r"-Parallel\b", re.I), "ForEach-Object -Parallel (PowerShell 7)"),
    (re.compile(r"-EnumsAsStrings\b", re.I), "ConvertTo-Json -EnumsAsStrings (PowerShell 6.2+)"),
    (re.compile(r"\$PSStyle\b|\bGet-Error\b", re.I), "PowerShell 7 only"),
    (re.compile(r"^\s*exit\b", re.I | re.M), "exit (ends the batch's runspace)"),
    (re.compile(r"2>&1"), "2>&1 (stderr of a native program becomes a terminating error under Stop)"),
    (re.compile(r"\b(Read-Host|Write-Host)\b", re.I), "interactive host cmdlets"),
    (re.compile(r"\bInvoke-Expression\b|\biex\b", re.I), "Invoke-Expression"),
]
NATIVE = re.compile(r"&\s*[A-Za-z0-9_]+\.exe\b", re.I)

# Date and time patterns in a custom format string (yyyy, MM, dd, HH, mm, ss...).
_DATE_TOKENS = re.compile(r"yy|MM|dd|HH|hh|mm|ss|fff|tt")
_TOSTRING = re.compile(r"""\.ToString\(\s*(['"])([^'"]*)\1([^)]*)\)""", re.I)
_GET_DATE_FORMAT = re.compile(r"""\bGet-Date\b[^\n|;]*-U?Format\s+(?:(['"])([^'"]*)\1|(\S+))""", re.I)
_F_OPERATOR = re.compile(r"""\{\d+(?:,-?\d+)?:([^{}'"\n]*)\}""")


def culture_dependent_dates(text: str) -> list[str]:
    """Dates formatted with a custom pattern under the host's current
    culture, which changes the separators and, under a non-Gregorian
    calendar (th-TH: Buddhist years), the year itself. Returns the
    offending snippets. ``.ToString('o')`` and other one-letter standard
    formats are invariant; a custom pattern needs
    ``[Globalization.CultureInfo]::InvariantCulture``."""
    found = []
    for m in _TOSTRING.finditer(text):
        fmt, rest = m.group(2), m.group(3)
        if len(fmt) > 1 and _DATE_TOKENS.search(fmt) and "invariantculture" not in rest.lower():
            found.append(m.group(0))
    for m in _GET_DATE_FORMAT.finditer(text):
        fmt = m.group(2) if m.group(2) is not None else m.group(3)
        if len(fmt) > 1:  # Get-Date -Format/-UFormat has no culture parameter
            found.append(m.group(0))
    for m in _F_OPERATOR.finditer(text):  # '{0:yyyy-MM-dd}' -f $d, [string]::Format(...)
        if _DATE_TOKENS.search(m.group(1)):
            found.append(m.group(0))
    return found


def problems(text: str) -> list[str]:
    try:
        code = code_only(text)
    except ValueError as exc:
        return [str(exc)]
    found = [f"uses {why}" for rx, why in FORBIDDEN if rx.search(code)]
    native = NATIVE.search(code)
    if native:
        relaxed = code.find("$ErrorActionPreference = ''")  # 'Continue' is blanked as a string
        if relaxed < 0 or relaxed > native.start():
            found.append("calls a native program before relaxing $ErrorActionPreference")
    found += [f"formats a date under the host's culture: {snippet} (use InvariantCulture)"
              for snippet in culture_dependent_dates(text)]
    lines = [ln.strip() for ln in code.splitlines() if ln.strip()]
    if not lines or lines[0] != "param($P)":
        found.append("the first statement must be param($P)")
    return found
