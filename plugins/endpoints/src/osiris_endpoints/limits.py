"""Token buckets: the handshake-rate limit (new calls per second, answered
with RESOURCE_EXHAUSTED and a retry hint) and each endpoint's event rate
(beyond it the stream is read more slowly: back-pressure, not refusal)."""

from __future__ import annotations

import random
import time


class Bucket:
    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self.tokens, self.stamp = float(burst), clock()

    def _fill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, n: float = 1.0) -> float:
        """Take ``n`` tokens: 0 when they were there, else the seconds until
        they would be (nothing taken)."""
        self._fill()
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate

    def debt(self, n: float) -> float:
        """Take ``n`` tokens even if that goes below zero; the seconds the
        caller should wait before its next read."""
        self._fill()
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def retry_hint_ms(wait: float) -> int:
    """A retry hint with full jitter on top of the wait, so refused
    callers do not come back together."""
    base = max(wait, 0.05)
    return int(1000 * (base + random.uniform(0, 2 * base)))
