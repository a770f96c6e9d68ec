"""StreamConsumer against the real Redis, on entries written by RedisStreamsSink."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from relay import keys
from relay.config import RedisSettings
from relay.consumer import BadEntry, RecentIds, StreamConsumer, StreamEvent
from relay.redis_client import create_redis
from tests.consumer.support import event, events, pending_count, wait_for, write
from tests.fixtures.redis_server import RedisServer

GROUP = "analytics"
FAST: dict[str, Any] = {"block_ms": 50, "retry_initial_s": 0.01, "retry_max_s": 0.05}


@contextlib.asynccontextmanager
async def running(consumer: StreamConsumer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(consumer.run())
    try:
        yield task
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 5)


class Recorder:
    """A handler that records what it was given (and may fail on chosen seqs)."""

    def __init__(self, fail_seqs: dict[int, int] | None = None) -> None:
        self.seen: list[StreamEvent] = []
        self.fail_seqs = dict(fail_seqs or {})  # seq -> failures left

    async def __call__(self, item: StreamEvent) -> None:
        if self.fail_seqs.get(item.seq, 0) > 0:
            self.fail_seqs[item.seq] -= 1
            raise RuntimeError(f"store unavailable for seq {item.seq}")
        self.seen.append(item)

    @property
    def seqs(self) -> list[int]:
        return [item.seq for item in self.seen]


async def test_the_group_and_the_stream_are_created_when_missing(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    consumer = StreamConsumer(redis, stream, GROUP, "c1", Recorder())
    assert await consumer.ensure_group() is True
    assert await consumer.ensure_group() is False  # BUSYGROUP is not an error
    groups: Any = await redis.xinfo_groups(stream)
    assert [g["name"] for g in groups] == [GROUP.encode()]


@pytest.mark.parametrize(("group_start", "expected"), [("0", [1, 2, 3]), ("$", [3])])
async def test_a_new_group_starts_from_the_history_or_from_now(
    redis: aioredis.Redis, redis_settings: RedisSettings, group_start: Any, expected: list[int]
) -> None:
    stream = keys.events_key(redis_settings)
    await write(redis, redis_settings, events("r1", 2))
    handler = Recorder()
    consumer = StreamConsumer(redis, stream, GROUP, "c1", handler, group_start=group_start, **FAST)
    await consumer.ensure_group()
    await write(redis, redis_settings, [event("r1", 3)])
    async with running(consumer):
        await wait_for(lambda: 3 in handler.seqs, what="seq 3")
    assert handler.seqs == expected


async def test_events_are_handled_in_order_and_acknowledged_after_the_handler(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    written = events("r1", 5)
    await write(redis, redis_settings, written)
    pending_while_handling: list[int] = []

    async def handler(item: StreamEvent) -> None:
        # The entry in hand is still pending: the XACK comes after the handler returns.
        pending: Any = await redis.xpending_range(stream, GROUP, item.entry_id, item.entry_id, 1)
        pending_while_handling.append(len(pending))
        seen.append(item.event)

    seen: list[dict[str, Any]] = []
    consumer = StreamConsumer(redis, stream, GROUP, "c1", handler, **FAST)
    async with running(consumer):
        await wait_for(lambda: consumer.stats.acked == 5, what="5 acks")
    assert seen == [json.loads(e.to_json()) for e in written]
    assert pending_while_handling == [1] * 5
    assert await pending_count(redis, stream, GROUP) == 0


async def test_a_failing_handler_leaves_the_entry_pending_and_it_is_retried_in_order(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    await write(redis, redis_settings, events("r1", 4))
    handler = Recorder(fail_seqs={2: 3})  # seq 2 fails three times, then goes through
    consumer = StreamConsumer(redis, stream, GROUP, "c1", handler, **FAST)
    async with running(consumer):
        await wait_for(lambda: handler.seqs == [1], what="seq 1")
        await wait_for(lambda: consumer.stats.failures >= 1, what="a failure")
        await wait_for(lambda: consumer.stats.handled == 4, what="all handled")
    assert handler.seqs == [1, 2, 3, 4]  # nothing after 2 went first
    assert consumer.stats.failures == 3
    assert await pending_count(redis, stream, GROUP) == 0


async def test_an_entry_whose_handler_keeps_failing_is_given_up_after_max_attempts(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    await write(redis, redis_settings, events("r1", 3))
    handler = Recorder(fail_seqs={2: 1000})
    bad: list[BadEntry] = []
    consumer = StreamConsumer(
        redis, stream, GROUP, "c1", handler, max_attempts=3, on_bad_entry=bad.append, **FAST
    )
    async with running(consumer):
        await wait_for(lambda: handler.seqs == [1, 3], what="seq 3 after 2 was given up")
    assert [b.reason for b in bad] == ["handler_failed"]
    assert json.loads(bad[0].fields[b"event"])["seq"] == 2
    assert consumer.stats.failures == 3
    assert await pending_count(redis, stream, GROUP) == 0


async def test_a_repeated_id_is_handled_once_and_every_entry_is_acknowledged(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    batch = events("r1", 3)
    await write(redis, redis_settings, batch)
    await write(redis, redis_settings, batch[1:])  # a retried batch: same ids again
    handler = Recorder()
    consumer = StreamConsumer(redis, stream, GROUP, "c1", handler, **FAST)
    async with running(consumer):
        await wait_for(lambda: consumer.stats.acked == 5, what="5 acks")
    assert handler.seqs == [1, 2, 3]
    assert consumer.stats.duplicates == 2
    assert await pending_count(redis, stream, GROUP) == 0


async def test_without_a_window_repeats_reach_the_handler(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    batch = events("r1", 2)
    await write(redis, redis_settings, batch)
    await write(redis, redis_settings, batch)
    handler = Recorder()
    consumer = StreamConsumer(redis, stream, GROUP, "c1", handler, dedupe_window=0, **FAST)
    async with running(consumer):
        await wait_for(lambda: consumer.stats.acked == 4, what="4 acks")
    assert handler.seqs == [1, 2, 1, 2]


async def test_the_seen_hook_lets_the_store_answer_for_ids_outside_the_window(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    batch = events("r1", 3)
    store = {batch[0].id}  # loaded by an earlier run: the window never saw it

    async def seen(item: StreamEvent) -> bool:
        return item.id in store

    handler = Recorder()
    await write(redis, redis_settings, batch)
    consumer = StreamConsumer(redis, stream, GROUP, "c1", handler, seen=seen, **FAST)
    async with running(consumer):
        await wait_for(lambda: consumer.stats.acked == 3, what="3 acks")
    assert handler.seqs == [2, 3]
    assert consumer.stats.duplicates == 1


def test_the_dedupe_window_forgets_the_oldest_id_first() -> None:
    recent = RecentIds(2)
    for event_id in ("a", "b", "c"):
        recent.add(event_id)
    assert "a" not in recent
    assert "b" in recent and "c" in recent
    assert "b" in recent  # a repeat refreshes b: c is now the oldest
    recent.add("d")
    assert "c" not in recent and "b" in recent
    assert len(recent) == 2


async def test_bad_entries_are_reported_acknowledged_and_the_loop_goes_on(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    await write(redis, redis_settings, [event("r1", 1)])
    for fields in (
        {"kind": "x"},
        {"event": "{not json"},
        {"event": "[1, 2]"},
        {"event": '{"seq": 1}'},
        {"event": '{"id": "ev_1", "seq": "7"}'},
        {"event": b"\xff\xfe"},
    ):
        await redis.xadd(stream, fields)  # type: ignore[arg-type]
    await write(redis, redis_settings, [event("r1", 2)])
    bad: list[BadEntry] = []
    handler = Recorder()
    consumer = StreamConsumer(redis, stream, GROUP, "c1", handler, on_bad_entry=bad.append, **FAST)
    async with running(consumer):
        await wait_for(lambda: handler.seqs == [1, 2], what="both good events")
    reasons = [b.reason for b in bad]
    assert reasons == [
        "missing_event",
        "invalid_json",
        "not_an_object",
        "invalid_id",
        "invalid_seq",
        "invalid_json",
    ]
    assert await pending_count(redis, stream, GROUP) == 0


async def test_a_pending_entry_trimmed_away_is_reported_as_deleted(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    await write(redis, redis_settings, events("r1", 2))
    await StreamConsumer(redis, stream, GROUP, "c1", Recorder()).ensure_group()
    delivered: Any = await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=10)
    first_id = delivered[0][1][0][0]
    await redis.xdel(stream, first_id)  # what MAXLEN does to an old entry
    bad: list[BadEntry] = []
    handler = Recorder()
    consumer = StreamConsumer(redis, stream, GROUP, "c1", handler, on_bad_entry=bad.append, **FAST)
    async with running(consumer):
        await wait_for(lambda: handler.seqs == [2], what="seq 2")
    assert [(b.entry_id, b.reason) for b in bad] == [(first_id.decode(), "deleted")]
    assert await pending_count(redis, stream, GROUP) == 0


async def test_after_a_restart_its_own_pending_entries_come_first(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    await write(redis, redis_settings, events("r1", 3))
    await StreamConsumer(redis, stream, GROUP, "c1", Recorder()).ensure_group()
    # c1 was given 1..3 and died before acknowledging; 4..5 arrived since.
    await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=10)
    await write(redis, redis_settings, events("r1", 2, first_seq=4))
    handler = Recorder()
    consumer = StreamConsumer(redis, stream, GROUP, "c1", handler, **FAST)
    async with running(consumer):
        await wait_for(lambda: len(handler.seqs) == 5, what="5 events")
    assert handler.seqs == [1, 2, 3, 4, 5]
    assert consumer.stats.claimed == 0
    assert await pending_count(redis, stream, GROUP) == 0


async def test_entries_a_dead_consumer_left_pending_are_claimed_once_idle(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    await write(redis, redis_settings, events("r1", 3))
    await StreamConsumer(redis, stream, GROUP, "dead", Recorder()).ensure_group()
    await redis.xreadgroup(GROUP, "dead", {stream: ">"}, count=10)  # then it died
    await write(redis, redis_settings, events("r1", 1, first_seq=4))
    handler = Recorder()
    consumer = StreamConsumer(
        redis, stream, GROUP, "alive", handler, claim_idle_ms=800, claim_every_s=0.05, **FAST
    )
    async with running(consumer):
        await wait_for(lambda: consumer.stats.acked == 1, what="the new event")
        # Not idle long enough yet: still the dead consumer's.
        assert await pending_count(redis, stream, GROUP) == 3
        await wait_for(lambda: len(handler.seqs) == 4, what="the claimed events")
    assert handler.seqs == [4, 1, 2, 3]
    assert consumer.stats.claimed == 3
    assert await pending_count(redis, stream, GROUP) == 0


async def test_a_deleted_stream_gets_its_group_again(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    handler = Recorder()
    consumer = StreamConsumer(redis, stream, GROUP, "c1", handler, **FAST)
    async with running(consumer):
        await write(redis, redis_settings, [event("r1", 1)])
        await wait_for(lambda: handler.seqs == [1], what="seq 1")
        await redis.delete(stream)  # NOGROUP on the next read
        await asyncio.sleep(0.2)
        await write(redis, redis_settings, [event("r1", 2)])
        await wait_for(lambda: handler.seqs == [1, 2], what="seq 2 in the new stream")


async def test_a_redis_outage_is_waited_out(private_redis: RedisServer) -> None:
    settings = RedisSettings(url=SecretStr(private_redis.url), prefix="outage")
    redis = create_redis(settings)
    stream = keys.events_key(settings)
    handler = Recorder()
    consumer = StreamConsumer(redis, stream, GROUP, "c1", handler, **FAST)
    try:
        async with running(consumer):
            await write(redis, settings, [event("r1", 1)])
            await wait_for(lambda: handler.seqs == [1], what="seq 1")
            private_redis.stop()
            await asyncio.sleep(0.3)  # reads fail meanwhile
            private_redis.start()
            await write(redis, settings, [event("r1", 2)])
            await wait_for(lambda: handler.seqs == [1, 2], what="seq 2 after the outage")
        assert await pending_count(redis, stream, GROUP) == 0
    finally:
        await redis.aclose()


async def test_a_failed_batch_commit_acknowledges_nothing_and_delivers_the_batch_again(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    await write(redis, redis_settings, events("r1", 3))
    staged: list[int] = []  # written in the open transaction
    committed: list[int] = []
    commits_to_fail = [1]
    pending_at_commit: list[int] = []

    async def handler(item: StreamEvent) -> None:
        staged.append(item.seq)

    async def commit() -> None:
        pending_at_commit.append(await pending_count(redis, stream, GROUP))
        if commits_to_fail:
            commits_to_fail.pop()
            staged.clear()  # the transaction rolled back
            raise RuntimeError("disk full")
        committed.extend(staged)
        staged.clear()

    consumer = StreamConsumer(redis, stream, GROUP, "c1", handler, before_ack=commit, **FAST)
    async with running(consumer):
        await wait_for(lambda: consumer.stats.acked == 3, what="3 acks")
    assert committed == [1, 2, 3]  # delivered again after the failed commit, stored once
    assert pending_at_commit == [3, 3]  # nothing was acknowledged before a commit
    assert consumer.stats.handled == 3
    assert await pending_count(redis, stream, GROUP) == 0


async def test_stop_ends_a_waiting_read_at_once(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    stream = keys.events_key(redis_settings)
    consumer = StreamConsumer(redis, stream, GROUP, "c1", Recorder(), block_ms=30_000)
    task = asyncio.create_task(consumer.run())
    await asyncio.sleep(0.3)  # blocked in XREADGROUP by now
    consumer.stop()
    await asyncio.wait_for(task, 1.0)  # well before block_ms
    # The client is still usable: the cancelled read's connection was dropped, not reused.
    assert await redis.xlen(stream) == 0
