"""Shared fixtures: config files, test plugins written as real modules."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
OSIRIS = Path(sys.executable).with_name("osiris")


@pytest.fixture
def write_config(tmp_path):
    def write(data: dict, name: str = "config.json") -> Path:
        path = tmp_path / name
        data = {"state_dir": str(tmp_path / "state"), **data}
        data.setdefault("agent", {}).setdefault("http", {"port": 0})
        path.write_text(json.dumps(data, indent=2))
        return path

    return write


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """Write a plugin module under tmp_path and make it importable."""
    root = tmp_path / "plugmods"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))

    def make(name: str, source: str) -> str:
        (root / f"{name}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)
        # The import system caches directory listings and trusts them while
        # the directory's mtime is unchanged: a file written within the same
        # timestamp tick as an earlier lookup there would not be found.
        importlib.invalidate_caches()
        return name

    return make
