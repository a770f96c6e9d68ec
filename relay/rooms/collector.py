"""LeftRoomCollector: a full garbage collection soon after rooms are left.

A left room's SDK objects (its `rtc.Room`, participants and their native handles) hold
each other in reference cycles, so only Python's cyclic collector frees them, and until
it does each pins its native side: about 0.5 MB per room (`bench/sdk_churn.py --keep`).
A room that lived for minutes sits in the oldest generation, which the collector visits
rarely (when it grew by a quarter), so a relay whose rooms come and go kept growing by
150 to 300 kB per room left (`bench/soak.py`). After a leave this runs `gc.collect()`
once, `delay_s` later (the SDK's tasks of the room finish meanwhile), and at most once
per `min_interval_s`: rooms that leave together share one collection. `relay run`
freezes (`gc.freeze()`) what it built before its first room, so the collection walks
only what came after.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

import structlog

from relay import metrics

log = structlog.get_logger(__name__)

DELAY_S = 1.0
MIN_INTERVAL_S = 5.0


class LeftRoomCollector:
    def __init__(
        self,
        delay_s: float = DELAY_S,
        min_interval_s: float = MIN_INTERVAL_S,
        collect: Callable[[], int] = gc.collect,
    ) -> None:
        self._delay_s = delay_s
        self._min_interval_s = min_interval_s
        self._collect = collect
        self._last = float("-inf")  # loop time of the last collection
        self._scheduled: asyncio.TimerHandle | None = None

    def room_left(self) -> None:
        """A room was left: collect soon, unless a collection is already due."""
        if self._scheduled is not None:
            return
        loop = asyncio.get_running_loop()
        at = max(loop.time() + self._delay_s, self._last + self._min_interval_s)
        self._scheduled = loop.call_at(at, self._run)

    def close(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None

    def _run(self) -> None:
        self._scheduled = None
        started = time.perf_counter()
        freed = self._collect()
        pause_s = time.perf_counter() - started
        self._last = asyncio.get_running_loop().time()
        metrics.LEFT_ROOM_COLLECTION.observe(pause_s)
        log.debug("left_rooms_collected", freed=freed, pause_ms=round(pause_s * 1000, 1))
