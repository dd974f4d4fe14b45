"""Time budgets: one deadline, computed once, passed down.

Whoever starts work on a host (the engine for a sweep, the ladder for a
runbook or a verification) computes one deadline, a ``time.monotonic()``
value, and hands it to the executor; the executor plans its batches,
retries and clean-up to end before it, and the caller stops waiting at it.
Nobody re-derives the budget from the checks' timeouts on their own (that
contract lived in four copies, and the copies drifted).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")

#: Seconds a host may take beyond the scripts' own time budgets (connecting,
#: starting PowerShell, retrying, cleaning up).
TRANSPORT_GRACE = 30.0


def after(seconds: float) -> float:
    """A deadline ``seconds`` from now."""
    return time.monotonic() + seconds


def for_checks(timeouts: Iterable[float]) -> float:
    """The deadline of one observation of a host: its checks' budgets plus
    the transport's grace."""
    return after(sum(timeouts) + TRANSPORT_GRACE)


def for_runbook(timeout: float) -> float:
    """The deadline of one runbook run: its own budget plus the transport's grace."""
    return after(timeout + TRANSPORT_GRACE)


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (never negative)."""
    return max(0.0, deadline - time.monotonic())


async def within(deadline: float, aw: Awaitable[T]) -> T:
    """Await ``aw`` until ``deadline``; ``asyncio.TimeoutError`` after it."""
    return await asyncio.wait_for(aw, remaining(deadline))
