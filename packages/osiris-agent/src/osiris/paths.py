"""Where the appliance keeps its data.

One place names the files, so that the store, the evidence log, the
``osiris evidence`` commands and the appliance's own checks (plugins get
this as ``ctx.paths``) agree on them, including when ``evidence.directory``
moves the evidence log out of the state directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATE_DB = "osiris.sqlite3"
EVIDENCE_LOG = "log.sqlite3"


@dataclass(frozen=True)
class DataPaths:
    state_dir: Path
    evidence_dir: Path

    @classmethod
    def of(cls, state_dir: str | Path, evidence_directory: str | Path | None = None) -> DataPaths:
        state_dir = Path(state_dir)
        return cls(state_dir, Path(evidence_directory) if evidence_directory else state_dir / "evidence")

    @property
    def state_db(self) -> Path:
        """The state store (SQLite, WAL: ``-wal`` and ``-shm`` files beside it)."""
        return self.state_dir / STATE_DB

    @property
    def evidence_log(self) -> Path:
        """The evidence log (SQLite, WAL)."""
        return self.evidence_dir / EVIDENCE_LOG

    @property
    def key_dir(self) -> Path:
        """The evidence signing key and its pinned public half."""
        return self.state_dir / "keys"
