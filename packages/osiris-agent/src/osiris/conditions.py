"""Fact predicates: the conditions L1 rules match failing facts with, and
that plugins declaring checks as data (the windows baseline's check packs)
test facts with. One definition, so a condition means the same wherever it
is written.

``{eq: 0}``, ``{ne: 1}``, ``{in: [3, 4]}``, ``{not_in: [...]}``,
``{contains: x}``, ``{gt: n}``, ``{ge: n}``, ``{lt: n}``, ``{le: n}`` (numbers
only; booleans count as 1 and 0), ``{exists: false}``; several keys must all
hold. A fact that is absent fails every condition but ``exists: false``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FactCondition"]


class FactCondition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    eq: Any = None
    ne: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None
    contains: Any = None
    gt: float | None = None
    lt: float | None = None
    ge: float | None = None
    le: float | None = None
    exists: bool | None = None

    def holds(self, present: bool, value: Any) -> bool:
        fs = self.model_fields_set
        if "exists" in fs and present != self.exists:
            return False
        if not present:
            return "exists" in fs and not self.exists
        checks = [
            ("eq", lambda: value == self.eq),
            ("ne", lambda: value != self.ne),
            ("in_", lambda: value in (self.in_ or [])),
            ("not_in", lambda: value not in (self.not_in or [])),
            ("contains", lambda: isinstance(value, (list, str, dict)) and self.contains in value),
            ("gt", lambda: isinstance(value, (int, float)) and value > self.gt),
            ("lt", lambda: isinstance(value, (int, float)) and value < self.lt),
            ("ge", lambda: isinstance(value, (int, float)) and value >= self.ge),
            ("le", lambda: isinstance(value, (int, float)) and value <= self.le),
        ]
        return all(test() for name, test in checks if name in fs)
