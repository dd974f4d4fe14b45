"""Static checks of our PowerShell (no PowerShell here): a real grammar
first, then the rules a grammar cannot know.

The lab recognises scripts by their markers and never runs them, so a
syntax error would pass every other test and fail on every Windows host.
:func:`syntax_errors` parses with tree-sitter's PowerShell grammar (PyPI
``tree-sitter-powershell``) and reports every ERROR and MISSING node with
its line and column. :func:`problems` adds what the executor and Windows
PowerShell 5.1 need beyond the grammar: no PowerShell 7 syntax (``??``,
``?.``, ternaries, pipeline chains, 6+ parameters), no ``exit`` (it ends
the batch's runspace), no ``try`` without ``catch``/``finally`` (PowerShell's
parser refuses it, the grammar does not), no interactive host cmdlets, a
native program only after ``$ErrorActionPreference`` is relaxed, dates
formatted under the invariant culture, and a fragment's first statement
``param($P)``. Code is told from strings and comments by the parse tree.
"""

from __future__ import annotations

import re

import tree_sitter
import tree_sitter_powershell

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))

# The grammar (0.26.4) refuses a command parameter whose name holds a digit
# (`-EnableSMB1Protocol`), which PowerShell accepts: upstream issue
# airbus-cert/tree-sitter-powershell#59. Such digits are read as letters
# before parsing; the text keeps its length, so positions stay true.
_PARAM_WITH_DIGIT = re.compile(rb"(?<=\s)-[A-Za-z][A-Za-z0-9]*[0-9][A-Za-z0-9]*(?=[\s:]|$)")


def _unquirk(source: bytes) -> bytes:
    return _PARAM_WITH_DIGIT.sub(lambda m: re.sub(rb"[0-9]", b"x", m.group(0)), source)


def parse(text: str) -> tree_sitter.Tree:
    return PARSER.parse(_unquirk(text.encode("utf-8")))


def _nodes(node: tree_sitter.Node):
    yield node
    for child in node.children:
        yield from _nodes(child)


def syntax_errors(text: str) -> list[str]:
    """``line L, column C: ...`` for every innermost ERROR or MISSING node
    (columns count bytes, 1-based); empty when the grammar accepts the
    text. Error recovery may wrap the whole text in an ERROR node: the
    innermost ones are where the parse went wrong."""
    tree = parse(text)
    if not tree.root_node.has_error:
        return []
    source = text.encode("utf-8")
    found: list[str] = []

    def walk(node: tree_sitter.Node) -> bool:
        """Report the errors under ``node``; True if there were any."""
        nested = False
        for child in node.children:
            if child.has_error or child.is_missing:
                nested = walk(child) or nested
        if nested or not (node.is_error or node.is_missing):
            return nested
        row, col = node.start_point
        where = f"line {row + 1}, column {col + 1}"
        if node.is_missing:
            found.append(f"{where}: missing {node.type!r}")
        else:
            snippet = source[node.start_byte:node.end_byte].decode("utf-8", "replace").strip().split("\n")[0]
            found.append(f"{where}: syntax error at {snippet[:40]!r}")
        return True

    walk(tree.root_node)
    return found


def code_only(text: str) -> str:
    """The text with comments removed and each string reduced to its quotes
    (newlines kept), as the parse tree delimits them."""
    source = text.encode("utf-8")
    spans: list[tuple[int, int, bytes]] = []
    for node in _nodes(parse(text).root_node):
        if node.type == "comment":
            spans.append((node.start_byte, node.end_byte, b""))
        elif node.type == "string_literal":
            verbatim = source[node.start_byte:node.start_byte + 2] == b"@'" or source[node.start_byte] == ord("'")
            spans.append((node.start_byte, node.end_byte, b"''" if verbatim else b'""'))
    out, pos = [], 0
    for start, end, quotes in sorted(spans):
        if start < pos:
            continue  # a string inside a string already reduced
        out += [source[pos:start], quotes, b"\n" * source.count(b"\n", start, end)]
        pos = end
    out.append(source[pos:])
    return b"".join(out).decode("utf-8")


FORBIDDEN = [
    (re.compile(r"\?\?"), "?? (null-coalescing: PowerShell 7)"),
    (re.compile(r"\?\.|\?\["), "?. / ?[ (null-conditional: PowerShell 7)"),
    (re.compile(r"\s\?\s[^\n]*\s:\s"), "a ternary ?: (PowerShell 7)"),
    (re.compile(r"&&|\|\|"), "&& / || pipeline chains (PowerShell 7)"),
    (re.compile(r"-AsHashtable\b", re.I), "-AsHashtable (PowerShell 6+)"),
    (re.compile(r"-Parallel\b", re.I), "ForEach-Object -Parallel (PowerShell 7)"),
    (re.compile(r"-EnumsAsStrings\b", re.I), "ConvertTo-Json -EnumsAsStrings (PowerShell 6.2+)"),
    (re.compile(r"\$PSStyle\b|\bGet-Error\b", re.I), "PowerShell 7 only"),
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


def _tree_rules(text: str) -> list[str]:
    """What PowerShell's own parser or the executor refuses and the grammar
    accepts, found in the tree."""
    found = []
    for node in _nodes(parse(text).root_node):
        line = node.start_point[0] + 1
        if node.type == "flow_control_statement" and node.children and node.children[0].type == "exit":
            found.append(f"line {line}: uses exit (ends the batch's runspace)")
        elif node.type == "try_statement" and not any(c.type in ("catch_clauses", "finally_clause")
                                                      for c in node.children):
            found.append(f"line {line}: try without catch or finally (PowerShell refuses it)")
    return found


def problems(text: str, fragment: bool = True) -> list[str]:
    """Everything wrong with ``text``: syntax errors alone when there are
    any, else the rules above. ``fragment``: a check's or runbook's unit,
    whose first statement must be ``param($P)``."""
    errors = syntax_errors(text)
    if errors:
        return errors
    code = code_only(text)
    found = [f"uses {why}" for rx, why in FORBIDDEN if rx.search(code)]
    found += _tree_rules(text)
    native = NATIVE.search(code)
    if native:
        relaxed = code.find("$ErrorActionPreference = ''")  # 'Continue' is reduced to its quotes
        if relaxed < 0 or relaxed > native.start():
            found.append("calls a native program before relaxing $ErrorActionPreference")
    found += [f"formats a date under the host's culture: {snippet} (use InvariantCulture)"
              for snippet in culture_dependent_dates(text)]
    if fragment:
        lines = [ln.strip() for ln in code.splitlines() if ln.strip()]
        if not lines or lines[0] != "param($P)":
            found.append("the first statement must be param($P)")
    return found
