"""The write guard against a real Redis (7.0 here: the script; IDMP's bytes are checked in
test_redis_streams): a repeat is skipped, per stream, whoever sends it; a failed XADD
leaves no guard behind; a flushed script cache is reloaded; the window ends."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from relay.config import RedisSettings
from relay.contract.event import DeadLetter, Entry, Event
from relay.sinks import RedisStreamsSink
from relay.sinks.write_guard import GUARDED_XADD_SHA, IDMP_SINCE, parse_version, resolve
from tests.sinks.test_redis_streams import stamped


def skipped(stream: str) -> float:
    value = REGISTRY.get_sample_value("relay_duplicates_skipped_total", {"stream": stream})
    return value or 0.0


async def ids_in(redis: aioredis.Redis, key: str) -> list[bytes]:
    return [fields[b"id"] for _, fields in await redis.xrange(key)]


def sink_for(redis: aioredis.Redis, settings: RedisSettings, **update: object) -> RedisStreamsSink:
    return RedisStreamsSink(redis, settings.model_copy(update=update), close_client=False)


async def test_auto_picks_the_script_on_a_redis_without_idmp(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    version = parse_version(str((await redis.info("server"))["redis_version"]))
    assert version < IDMP_SINCE  # this machine's 7.0: the fallback is the tested path
    assert await resolve("auto", redis) == "script"
    sink = sink_for(redis, redis_settings)
    assert sink.guard is None
    await sink.write([stamped("a", 0)])
    assert sink.guard == "script"
    assert parse_version("8.6.0") >= IDMP_SINCE > parse_version("8.4.2")
    assert await resolve("off", redis) == "off"


async def test_a_batch_written_twice_is_in_each_stream_once(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sink = sink_for(redis, redis_settings)
    batch: list[Entry] = [*(stamped("a", n) for n in range(3)), stamped("b", 3)]
    before = skipped("events"), skipped("room")
    await sink.write(batch)
    await sink.write(batch[1:])  # a retry after a lost reply, one entry further on
    prefix = redis_settings.prefix
    expected = [e.id.encode() for e in batch if isinstance(e, Event)]
    assert await ids_in(redis, f"{prefix}:events") == expected
    assert await ids_in(redis, f"{prefix}:room:{{a}}") == expected[:3]
    assert await ids_in(redis, f"{prefix}:room:{{b}}") == expected[3:]
    assert sink.duplicates_skipped == 6
    assert (skipped("events") - before[0], skipped("room") - before[1]) == (3, 3)


async def test_a_dead_letter_written_twice_is_in_the_dlq_once(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    """A retried batch, or a journal replayed after a crash, brings the same letter (its id
    made once, when it was) again; another letter of the same content is written."""
    sink = sink_for(redis, redis_settings)
    letter = DeadLetter("a", "oversized", 1.0, {"size": 9})
    same_content = DeadLetter("a", "oversized", 1.0, {"size": 9})
    before = skipped("dlq")
    await sink.write([letter, stamped("a", 0)])
    await sink.write([letter, stamped("a", 0), same_content])
    assert await ids_in(redis, f"{redis_settings.prefix}:dlq") == [
        letter.id.encode(),
        same_content.id.encode(),
    ]
    assert skipped("dlq") - before == 1


async def test_two_sinks_of_one_room_write_each_id_once(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    """Two observers of one room (a hand-over) announce the same events at once."""
    first, second = sink_for(redis, redis_settings), sink_for(redis, redis_settings)
    events = [stamped("shared", n) for n in range(200)]

    async def write_all(sink: RedisStreamsSink, size: int) -> None:
        for n in range(0, len(events), size):  # one batch at a time, as a pipeline does
            await sink.write(events[n : n + size])

    await asyncio.gather(write_all(first, 10), write_all(second, 7))
    ids = await ids_in(redis, f"{redis_settings.prefix}:room:{{shared}}")
    assert sorted(ids) == sorted(e.id.encode() for e in events)
    assert first.duplicates_skipped + second.duplicates_skipped == 2 * 200


async def test_without_the_guard_a_repeat_is_written_again(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sink = sink_for(redis, redis_settings, write_guard="off")
    event = stamped("a", 0)
    await sink.write([event])
    await sink.write([event])
    assert len(await ids_in(redis, f"{redis_settings.prefix}:room:{{a}}")) == 2
    assert sink.duplicates_skipped == 0


async def test_a_repeat_after_the_window_is_written_again(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sink = sink_for(redis, redis_settings, dedupe_window_s=0.2)
    event = stamped("a", 0)
    await sink.write([event])
    await sink.write([event])
    assert len(await ids_in(redis, f"{redis_settings.prefix}:room:{{a}}")) == 1
    await asyncio.sleep(0.4)
    await sink.write([event])
    assert len(await ids_in(redis, f"{redis_settings.prefix}:room:{{a}}")) == 2


async def test_a_refused_xadd_leaves_no_guard_so_a_later_write_goes_in(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    prefix = redis_settings.prefix
    await redis.set(f"{prefix}:room:{{taken}}", "not a stream")
    sink = sink_for(redis, redis_settings)
    event = stamped("taken", 0)
    rejected = await sink.write([event])
    assert [(entry, error.split()[0]) for entry, error in rejected] == [(event, "WRONGTYPE")]
    assert await redis.keys(f"{prefix}:dedupe:{{taken}}:*") == []  # its guard deleted
    await redis.delete(f"{prefix}:room:{{taken}}")  # the operator frees the key
    assert await sink.write([event]) == []
    assert await ids_in(redis, f"{prefix}:room:{{taken}}") == [event.id.encode()]
    assert await ids_in(redis, f"{prefix}:events") == [event.id.encode()]  # once


async def test_a_flushed_script_cache_is_loaded_again(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sink = sink_for(redis, redis_settings)
    await sink.write([stamped("a", 0)])
    await redis.script_flush()  # what a restarted Redis has: NOSCRIPT, then EVAL loads it
    assert await sink.write([stamped("a", 1), stamped("a", 0)]) == []
    ids = await ids_in(redis, f"{redis_settings.prefix}:room:{{a}}")
    assert ids == [stamped("a", 0).id.encode(), stamped("a", 1).id.encode()]
    assert await redis.script_exists(GUARDED_XADD_SHA.decode()) == [True]
