"""LeftRoomCollector: one full collection soon after rooms leave, rooms leaving together
share it, and the room manager calls it when an observer ends."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any, cast

from relay.observer import RoomTarget
from relay.rooms.collector import LeftRoomCollector
from relay.rooms.manager import RoomManager
from relay.rooms.observed import ObservedRoom
from tests.support import metric


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return 0


async def test_rooms_leaving_together_share_one_collection_and_later_ones_wait() -> None:
    collect = Counting()
    collector = LeftRoomCollector(delay_s=0.05, min_interval_s=0.4, collect=collect)
    for _ in range(3):
        collector.room_left()
    await asyncio.sleep(0.02)
    assert collect.calls == 0  # not at once: the room's SDK tasks finish first
    await asyncio.sleep(0.1)
    assert collect.calls == 1
    collector.room_left()
    await asyncio.sleep(0.15)
    assert collect.calls == 1  # within min_interval_s of the last one
    await asyncio.sleep(0.3)
    assert collect.calls == 2
    collector.room_left()
    collector.close()
    await asyncio.sleep(0.5)
    assert collect.calls == 2  # closed: the scheduled one is cancelled


class Cycle:
    """Stands for a left room's SDK objects: they reference each other."""

    def __init__(self) -> None:
        self.me = self


async def test_the_collection_frees_cycles_of_the_oldest_generation() -> None:
    cycle = Cycle()
    alive = weakref.ref(cycle)
    gc.collect()  # survives: now in the oldest generation
    del cycle
    gc.collect(0)
    gc.collect(1)
    assert alive() is not None  # the young collections do not reach it
    before = metric("relay_left_room_collection_seconds_count")
    collector = LeftRoomCollector(delay_s=0.01)
    collector.room_left()
    await asyncio.sleep(0.1)
    assert alive() is None
    assert metric("relay_left_room_collection_seconds_count") == before + 1


class EndingObserver:
    """The ObservedRoom surface the manager uses; its room ends at once."""

    ended_by: str | None = "ROOM_DELETED"
    connected = False

    async def run(self) -> None:
        await asyncio.sleep(0)

    def stop(self) -> None:
        pass


async def test_the_manager_collects_after_an_observer_ended() -> None:
    collect = Counting()
    collector = LeftRoomCollector(delay_s=0.01, collect=collect)

    def make(target: RoomTarget) -> ObservedRoom:
        return cast(ObservedRoom, cast(Any, EndingObserver()))

    manager = RoomManager(make, max_rooms=4, collector=collector)
    assert manager.want(RoomTarget("a")) and manager.want(RoomTarget("b"))
    await asyncio.sleep(0.1)
    assert manager.wanted == [] and collect.calls == 1
