"""The update-ab plugin's hooks (filled in by the update work of issue 10)."""

from __future__ import annotations
