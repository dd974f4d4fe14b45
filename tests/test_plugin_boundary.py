"""Plugins reach the core only through what it hands them on purpose.

An AST walk over every plugin's source: no private attribute of anything
but the plugin's own ``self``/``cls``, no private name imported from the
core, no ``ctx.config`` (the core's copy of the config file), and every
``ctx.<name>`` (and ``ctx.evidence.<name>``) a plugin uses is documented
in docs/plugins.md. So a reach into internals cannot come back unnoticed.
"""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "plugins").glob("*/src/**/*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _chain(node: ast.Attribute) -> list[str]:
    """``self.ctx.evidence.record`` -> ['self', 'ctx', 'evidence', 'record']."""
    names = []
    cur: ast.expr = node
    while isinstance(cur, ast.Attribute):
        names.append(cur.attr)
        cur = cur.value
    names.append(cur.id if isinstance(cur, ast.Name) else "")
    return names[::-1]


def ctx_uses(tree: ast.AST) -> set[str]:
    """Every ``ctx.X`` and ``ctx.evidence.Y`` the code touches (``ctx`` or
    ``self.ctx``; not in a function that binds ``ctx`` to something else,
    such as a deserialisation context)."""
    other = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                isinstance(n, ast.Name) and n.id == "ctx" and isinstance(n.ctx, ast.Store) for n in ast.walk(fn)):
            other.update(id(n) for n in ast.walk(fn))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            names = _chain(node)
            if names[0] == "ctx" and id(node) in other:
                continue
            if "ctx" in names[:-1]:
                rest = names[names.index("ctx") + 1:]
                used.add("ctx." + ".".join(rest[:2] if rest[0] == "evidence" else rest[:1]))
    return used


def violations(source: str, where: str) -> list[str]:
    tree = ast.parse(source)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                out.append(f"{where}:{node.lineno}: private attribute {ast.unparse(node)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and (_private(str(node.args[1].value)) or node.args[1].value == "config")):
            out.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "osiris":
            out.extend(f"{where}:{node.lineno}: imports the core's private {node.module}.{a.name}"
                       for a in node.names if _private(a.name))
    out.extend(f"{where}: reads {name}; use what ctx offers (docs/plugins.md)"
               for name in sorted(ctx_uses(tree)) if name == "ctx.config" or name.startswith("ctx.config."))
    return out


def documented() -> set[str]:
    doc = (REPO / "docs" / "plugins.md").read_text()
    out = set()
    for dotted in re.findall(r"`(?:await )?(ctx(?:\.\w+)+)", doc):
        parts = dotted.split(".")
        out.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return out


def test_the_checker_catches_reaches_into_the_core():
    bad = """
from osiris.store import Store, _iso
def osiris_executors(ctx):
    ctx.config.targets
    self.ctx._pool
    getattr(ctx, "config")
    ctx.evidence.log.verify_key
    return ctx._pool, self._own, obj.__class__
def parse(data):
    ctx = BytesDeserializationContext(data)
    return ctx.read_bytes(4)
"""
    found = violations(bad, "p.py")
    assert {v.split(": ", 1)[1] for v in found} == {
        "imports the core's private osiris.store._iso",
        "private attribute self.ctx._pool",
        "getattr(ctx, 'config')",
        "private attribute ctx._pool",
        "reads ctx.config; use what ctx offers (docs/plugins.md)",
    }
    uses = ctx_uses(ast.parse(bad))
    assert "ctx.evidence.log" in uses and "ctx.evidence.log" not in documented()
    assert "ctx.read_bytes" not in uses


def test_plugins_use_only_what_ctx_offers_on_purpose():
    assert SOURCES, "no plugin sources found"
    problems = []
    docs = documented()
    for path in SOURCES:
        where = str(path.relative_to(REPO))
        text = path.read_text()
        problems.extend(violations(text, where))
        problems.extend(f"{where}: uses {name}, which docs/plugins.md does not document"
                        for name in sorted(ctx_uses(ast.parse(text)) - docs))
    assert not problems, "\n".join(problems)
