"""The token bucket: a burst, a refill rate, the caller's clock."""

from __future__ import annotations

import copy
import math

from hypothesis import given
from hypothesis import strategies as st

from relay.ratelimit import TokenBucket


def test_a_burst_then_the_refill_rate() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=5, now=0.0)
    assert [bucket.take(1, 0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(1, 0.0) == 0.1  # one unit comes back every 0.1 s
    assert bucket.take(1, 0.1) == 0.0
    assert bucket.take(3, 1.0) == 0.0  # refilled to the burst, never above it
    assert bucket.take(3, 1.0) > 0


def test_wait_s_takes_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1, burst=2, now=0.0)
    assert bucket.wait_s(2, 0.0) == 0.0
    assert bucket.wait_s(2, 0.0) == 0.0
    assert bucket.take(2, 0.0) == 0.0


def test_more_than_the_burst_never_fits() -> None:
    assert TokenBucket(rate_per_s=100, burst=10, now=0.0).take(11, 1e9) == math.inf


def test_a_clock_that_steps_back_refills_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1, burst=1, now=100.0)
    assert bucket.take(1, 100.0) == 0.0
    assert bucket.take(1, 50.0) > 0  # no refill for a step back
    assert bucket.take(1, 100.5) > 0  # nor for the time up to where it had been
    assert bucket.take(1, 101.0) == 0.0


@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 1000),
    steps=st.lists(st.tuples(st.floats(0, 2), st.integers(1, 50)), max_size=200),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket(rate, burst, now=0.0)
    now, taken = 0.0, 0
    for advance, count in steps:
        now += advance
        wait = bucket.take(count, now)
        if wait == 0.0:
            taken += count
        else:  # refused: it would fit after `wait`, not before
            assert wait > 0
            later = copy.deepcopy(bucket)  # asking at a later time moves the bucket's clock
            assert count > burst or later.wait_s(count, now + wait * 1.0001 + 1e-9) == 0.0
    assert taken <= burst + rate * now + 1e-6
