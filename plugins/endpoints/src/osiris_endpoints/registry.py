"""Enrolled endpoints, one record each in the plugin's durable state
(``ctx.state("endpoints")``), shared by the running agent and the
``osiris endpoints`` commands (revocation is a change of this record)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

KEY = "endpoint/"


class Endpoints:
    def __init__(self, state: Any):
        self.state = state

    def get(self, name: str) -> dict[str, Any] | None:
        return self.state.get(KEY + name)

    def all(self) -> list[dict[str, Any]]:
        return [rec for _key, rec in self.state.items(KEY)]

    def put(self, rec: dict[str, Any]) -> None:
        self.state.put(KEY + rec["name"], rec)

    def update(self, name: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
        """Change an existing record in one transaction (None when there is none)."""
        return self.state.update(KEY + name, lambda rec: None if rec is None else change(rec))

    def revoke(self, name: str, by: str = "osiris endpoints revoke") -> dict[str, Any] | None:
        now = time.time()
        return self.update(name, lambda rec: rec if rec.get("revoked_at") else
                           {**rec, "revoked_at": now, "revoked_by": by})


def new_record(name: str, role: str, serial: int, not_after: float, version: str) -> dict[str, Any]:
    now = time.time()
    return {"name": name, "role": role, "serials": [str(serial)], "not_after": not_after, "enrolled_at": now,
            "version": version, "last_seen": now, "queue_id": "", "acked": 0, "queue_depth": 0,
            "revoked_at": None, "silent": False, "gap_open": False}
