"""The rules docs/architecture.md states, held by reading the source.

* Data flows one way, source -> engine -> ladder -> evidence -> sinks: no
  stage imports the stages after it or the process that wires them.
* Only the store and the evidence log speak SQL.
* No module imports another module's private name.
* Plugins reach the core through ``ctx`` and the public records, never
  through the engine, the ladder, the store or the agent process.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "packages" / "osiris-agent" / "src" / "osiris"
PLUGINS = sorted((REPO / "plugins").glob("*/src"))

# module (dotted, under osiris) -> modules it must not import. A stage never
# imports what comes after it in the flow, nor the process that wires them.
WIRING = {"osiris.runtime", "osiris.api", "osiris.cli", "osiris.app"}
FORBIDDEN = {
    "osiris.store": {"osiris.flow", "osiris.engine", "osiris.healing", "osiris.evidence"} | WIRING,
    "osiris.flow": {"osiris.engine", "osiris.healing", "osiris.evidence"} | WIRING,
    "osiris.engine": {"osiris.healing", "osiris.evidence"} | WIRING,
    "osiris.healing": {"osiris.engine", "osiris.evidence"} | WIRING,
    "osiris.evidence": {"osiris.engine", "osiris.healing", "osiris.flow"} | WIRING,
}
PLUGIN_FORBIDDEN = {"osiris.engine", "osiris.healing", "osiris.store", "osiris.flow.record"} | WIRING
# Where SQL may be executed: the state store, the evidence log, and the
# transaction/migration discipline both share.
SQL_MODULES = {CORE / "store.py", CORE / "sqlitedb.py", CORE / "evidence" / "log.py"}
SQL_CALLS = {"execute", "executemany", "executescript"}


def dotted(path: Path) -> str:
    rel = path.relative_to(CORE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, me: str | None = None) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) of every import in a file;
    ``me`` is the file's dotted module name (for relative imports)."""
    tree = ast.parse(path.read_text(), str(path))
    me = me or (dotted(path) if path.is_relative_to(CORE) else "")
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.append((node.lineno, module, [a.name for a in node.names]))
    return out


def within(module: str, prefixes: set[str]) -> str | None:
    return next((p for p in prefixes if module == p or module.startswith(p + ".")), None)


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_the_rules_see_the_modules_they_name():
    """A rule about a module that was renamed away would pass forever."""
    modules = {dotted(p) for p in core_files()}
    for rule in [*FORBIDDEN, *(m for ms in FORBIDDEN.values() for m in ms)]:
        assert any(m == rule or m.startswith(rule + ".") for m in modules), rule
    assert all(p.exists() for p in SQL_MODULES)


def direction_violations(path: Path, me: str) -> list[str]:
    rule = within(me, set(FORBIDDEN))
    if rule is None:
        return []
    out = []
    for line, module, names in imports(path, me):
        targets = [module] + [f"{module}.{n}" for n in names]
        out += [f"{path}:{line}: {me} imports {t}: data flows one way (docs/architecture.md)"
                for t in targets if within(t, FORBIDDEN[rule])][:1]
    return out


def sql_violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path}:{n.lineno}: SQL outside the store and the evidence log" for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and (n.func.attr in SQL_CALLS
                 or n.func.attr == "connect" and isinstance(n.func.value, ast.Name) and n.func.value.id == "sqlite3")]


def private_violations(path: Path, me: str | None = None) -> list[str]:
    return [f"{path}:{line}: imports {module}.{n}, a private name"
            for line, module, names in imports(path, me) for n in names if n.startswith("_") and not n.startswith("__")]


def plugin_violations(path: Path) -> list[str]:
    out = []
    for line, module, names in imports(path):
        targets = [module] + [f"{module}.{n}" for n in names]
        out += [f"{path}:{line}: a plugin imports {t}; plugins get what they need through ctx"
                for t in targets if within(t, PLUGIN_FORBIDDEN)][:1]
    return out


ALL_SOURCES = [*core_files(), *(p for src in PLUGINS for p in sorted(src.rglob("*.py")))]


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(CORE)))
def test_no_stage_imports_what_comes_after_it(path):
    assert direction_violations(path, dotted(path)) == []


@pytest.mark.parametrize("path", ALL_SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_only_the_store_and_the_evidence_log_speak_sql(path):
    assert path in SQL_MODULES or sql_violations(path) == []


@pytest.mark.parametrize("path", ALL_SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_another_modules_private_name(path):
    assert private_violations(path) == []


@pytest.mark.parametrize("src", PLUGINS, ids=lambda p: p.parent.name)
def test_plugins_reach_the_core_through_ctx_not_its_stages(src):
    assert [v for path in sorted(src.rglob("*.py")) for v in plugin_violations(path)] == []


def test_the_checker_catches_what_it_is_for(tmp_path):
    """Each rule fails on a planted violation (it could fail for real)."""
    planted = tmp_path / "planted.py"
    planted.write_text("from ..engine import Engine\nfrom ..store import _now\nfrom osiris.store import Store\n\n"
                       "def f(db):\n    return db.execute('SELECT 1')\n")
    assert direction_violations(planted, "osiris.healing.planted") == [
        f"{planted}:1: osiris.healing.planted imports osiris.engine: data flows one way (docs/architecture.md)"]
    assert sql_violations(planted) == [f"{planted}:6: SQL outside the store and the evidence log"]
    assert private_violations(planted, "osiris.healing.planted") == [f"{planted}:2: imports osiris.store._now, a private name"]
    assert plugin_violations(planted) == [
        f"{planted}:3: a plugin imports osiris.store; plugins get what they need through ctx"]
