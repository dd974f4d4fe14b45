"""Helpers for plugin authors' tests: load the agent the way it starts,
with only the plugin under test and its secrets in files; a port that
refuses connections."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .app import Loaded, load


def load_plugin(tmp_path: Path, plugin: str, settings: Mapping[str, Any] | None = None,
                secrets: Mapping[str, str] | None = None, **config: Any) -> Loaded:
    """Config, plugins and context as ``osiris run`` builds them, with only
    ``plugin`` loaded (plus the core's built-ins), its section set to
    ``settings``, and each secret written to a file under ``tmp_path``.
    Extra keyword arguments are further top-level config sections."""
    files = {}
    for name, value in (secrets or {}).items():
        path = Path(tmp_path) / f"secret-{name}"
        path.write_text(value + "\n")
        files[name] = str(path)
    data = {
        "state_dir": str(Path(tmp_path) / "state"),
        "secrets": {"files": files},
        "plugins": {plugin: dict(settings or {})},
        **config,
    }
    return load(config_data=data, environ={"OSIRIS_PLUGINS": plugin})


@contextlib.contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A loopback port that refuses connections while the block runs: bound,
    never listening. A port merely found free may be taken by another
    process before the test connects, or become the local port of the
    test's own connection to it, which then connects to itself."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        yield sock.getsockname()[1]
