"""RoomFollower against the real Redis: seq order, repeats, late entries, gaps, new runs."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from relay import keys
from relay.config import RedisSettings
from relay.consumer import RoomEvent, RoomFollower, Skipped
from tests.consumer.support import event, events, wait_for, write

ROOM = "Lobby {2}: café"  # braces and spaces: the key template's hash tag must hold


async def collect(follower: RoomFollower, count: int, timeout_s: float = 5) -> list[RoomEvent]:
    got: list[RoomEvent] = []

    async def read() -> None:
        async for item in follower.events():
            got.append(item)
            if len(got) == count:
                follower.stop()

    await asyncio.wait_for(read(), timeout_s)
    return got


async def test_repeats_late_entries_and_gaps_in_one_room(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    first = events(ROOM, 3)  # seq 1, 2, 3
    await write(redis, redis_settings, first)
    await write(redis, redis_settings, first[1:])  # a retried batch: 2 and 3 again, same ids
    await write(redis, redis_settings, [event(ROOM, 5)])  # 4 never came: a gap
    await write(redis, redis_settings, [event(ROOM, 4)])  # seq 4 after 5: late
    await redis.xadd(keys.room_key(redis_settings, ROOM), {"event": "{oops"})
    # The relay observed the room anew (or another replica took it): seq starts again.
    await write(redis, redis_settings, [event(ROOM, 1, kind="observer.joined"), event(ROOM, 2)])
    skipped: list[Skipped] = []
    follower = RoomFollower.for_room(
        redis, redis_settings, ROOM, block_ms=50, on_skip=skipped.append
    )
    got = await collect(follower, 6)

    assert [(e.seq, e.missing, e.new_run) for e in got] == [
        (1, 0, False),
        (2, 0, False),
        (3, 0, False),
        (5, 1, False),
        (1, 0, True),
        (2, 0, False),
    ]
    assert [e.event["id"] for e in got[:3]] == [e.id for e in first]
    assert [(s.reason, s.event and s.event["seq"]) for s in skipped] == [
        ("duplicate", 2),
        ("duplicate", 3),
        ("late", 4),
        ("bad_entry", None),
    ]
    assert skipped[2].detail == "last seq 5"
    assert follower.skipped == {"duplicate": 2, "late": 1, "bad_entry": 1}
    assert follower.gaps == 1
    assert follower.last_seq == 2


async def test_it_follows_new_entries_and_resumes_from_the_last_entry_id(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    await write(redis, redis_settings, events(ROOM, 2))  # before the follower: not shown
    follower = RoomFollower.for_room(redis, redis_settings, ROOM, start_id="$", block_ms=50)
    reader = asyncio.create_task(collect(follower, 2))
    await wait_for(lambda: follower.last_id != "$", what="the follower to resolve $")
    await asyncio.sleep(0.2)  # several blocking reads time out: nothing may be missed
    await write(redis, redis_settings, events(ROOM, 3, first_seq=3))
    got = await reader
    assert [e.seq for e in got] == [3, 4]

    # A follower started from where the first stopped sees the rest, and only that.
    resumed = RoomFollower.for_room(redis, redis_settings, ROOM, start_id=follower.last_id)
    assert [e.seq for e in await collect(resumed, 1)] == [5]


async def test_an_observer_joined_that_continues_the_count_is_not_a_new_run(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    # A re-join within one relay process keeps the room's counter.
    batch = [*events(ROOM, 2), event(ROOM, 3, kind="observer.joined"), event(ROOM, 4)]
    await write(redis, redis_settings, batch)
    follower = RoomFollower.for_room(redis, redis_settings, ROOM, block_ms=50)
    got = await collect(follower, 4)
    assert [(e.seq, e.new_run, e.missing) for e in got] == [
        (1, False, 0),
        (2, False, 0),
        (3, False, 0),
        (4, False, 0),
    ]
