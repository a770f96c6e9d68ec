"""A token bucket: `burst` units at most, refilled at `rate_per_s`; the caller's clock.

Shared by the observer's per-room and per-participant limits and the browser ingest's
per-token budget. A clock that steps back (wall time) refills nothing rather than raising.
"""

from __future__ import annotations

import math


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._level = float(burst)
        self._at = now

    def wait_s(self, count: float, now: float) -> float:
        """0 if `count` units fit now (nothing is taken), else the seconds until they
        would; inf when `count` is above the burst (it never fits)."""
        self._refill(now)
        if count <= self._level:
            return 0.0
        if count > self._burst:
            return math.inf
        return (count - self._level) / self._rate

    def take(self, count: float, now: float) -> float:
        """Take `count` units if they fit (0), else take nothing and say how long to wait."""
        wait = self.wait_s(count, now)
        if wait == 0.0:
            self._level -= count
        return wait

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._at)
        self._level = min(self._burst, self._level + elapsed * self._rate)
        self._at = max(self._at, now)
