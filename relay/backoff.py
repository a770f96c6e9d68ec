"""Capped exponential backoff with jitter, for every retry loop in the relay."""

from __future__ import annotations

import random


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """Delay before retry `attempt` (0-based): doubling, capped, jittered to 50-100%.

    The jitter keeps replicas that lost Redis or LiveKit together from coming back in
    lockstep."""
    delay: float = min(max_s, initial_s * 2.0 ** min(attempt, 32))
    return delay * (0.5 + random.random() / 2)
