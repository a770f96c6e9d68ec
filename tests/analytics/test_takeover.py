"""A session that spans a restart of the analytics process, a takeover of a dead
consumer's pending entries by another one, and a replay: one summary, the golden one."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from relay import keys
from relay.analytics.assemble import Doc
from relay.analytics.service import AnalyticsService
from relay.analytics.step import Step
from relay.config import Settings
from tests.analytics.support import T0_MS, analytics, consumed, summaries, utterances
from tests.analytics.test_golden_liveavatar import check_summary, liveavatar_script
from tests.consumer.support import pending_count, wait_for, write

GROUP = "analytics"


async def test_a_restart_in_the_middle_of_a_session(
    redis: aioredis.Redis, settings: Settings
) -> None:
    events = liveavatar_script().events
    await write(redis, settings.redis, events[:20])
    async with analytics(redis, settings, name="a1") as first:
        await wait_for(lambda: consumed(first) >= 20, 10, "the first half")
    assert await summaries(redis, settings) == []
    await write(redis, settings.redis, events[20:])
    async with analytics(redis, settings, name="a1") as second:  # the process again
        await wait_for(lambda: consumed(second) >= len(events) - 20, 10, "the rest")
    [summary] = await summaries(redis, settings)
    check_summary(summary)
    assert len(await utterances(redis, keys.transcripts_key(settings.redis))) == 6


class CrashAfterWriting:
    """The store's room write, then death before its outbox (the summary) is delivered."""

    def __init__(self, service: AnalyticsService) -> None:
        self.write = service.store.write
        self.crashes = 0

    async def __call__(
        self, room: str, owner: str, epoch: int, step: Step, pos: str | None
    ) -> Doc | None:
        outbox = await self.write(room, owner, epoch, step, pos)
        if step.summaries:
            self.crashes += 1
            raise RuntimeError("killed between the room's write and its outbox")
        return outbox


async def test_another_consumer_takes_over_what_a_dead_one_left(
    redis: aioredis.Redis, settings: Settings
) -> None:
    events = liveavatar_script().events
    await write(redis, settings.redis, events)
    dying = AnalyticsService(
        redis,
        settings,
        consumer_name="dying",
        clock_ms=lambda: T0_MS,
        block_ms=50,
        lease_ttl_s=0.5,
    )
    crash = CrashAfterWriting(dying)
    dying.store.write = crash  # type: ignore[method-assign]

    async def killed() -> None:  # no SIGTERM: the lease is left to expire
        return

    dying._leave = killed  # type: ignore[method-assign]
    with pytest.raises(ExceptionGroup):
        await asyncio.wait_for(dying.run(), 10)
    dying.consumer.stop()
    assert crash.crashes == 1
    assert await summaries(redis, settings) == []
    assert await redis.exists(keys.analytics_outbox_key(settings.redis, "la-1"))
    async with analytics(redis, settings, name="heir", lease_ttl_s=0.5) as heir:
        await wait_for(lambda: "la-1" in heir.owned, 10, "the takeover")
        await wait_for(lambda: summaries_out(redis, settings), 10, "the summary")
    [summary] = await summaries(redis, settings)
    check_summary(summary)  # the outbox delivered by the heir, once
    assert len(await utterances(redis, keys.transcripts_key(settings.redis))) == 6
    assert len(await utterances(redis, keys.room_transcripts_key(settings.redis, "la-1"))) == 6


async def test_a_replay_of_the_whole_stream_writes_no_second_summary(
    redis: aioredis.Redis, settings: Settings
) -> None:
    events = liveavatar_script().events
    await write(redis, settings.redis, events)
    stream = keys.events_key(settings.redis)
    async with analytics(redis, settings) as service:
        await wait_for(lambda: consumed(service) >= len(events), 10, "the events")
    transcripts = await utterances(redis, keys.transcripts_key(settings.redis))
    # The tombstone remembers the ids: a replay of the room's stream changes nothing.
    await redis.delete(keys.analytics_pos_key(settings.redis, "la-1"))
    await redis.xgroup_setid(stream, GROUP, "0")
    async with analytics(redis, settings, name="a2") as again:
        await wait_for(lambda: consumed(again) >= len(events), 10, "the replay")
    assert await utterances(redis, keys.transcripts_key(settings.redis)) == transcripts
    # Without the state (lost, expired): assembled anew, but the SET NX guard holds.
    await redis.delete(keys.analytics_state_key(settings.redis, "la-1"))
    await redis.delete(keys.analytics_pos_key(settings.redis, "la-1"))
    await redis.xgroup_setid(stream, GROUP, "0")
    async with analytics(redis, settings, name="a3") as third:
        await wait_for(lambda: consumed(third) >= len(events), 10, "the second replay")
    [summary] = await summaries(redis, settings)
    check_summary(summary)
    assert await utterances(redis, keys.transcripts_key(settings.redis)) == transcripts


async def summaries_out(redis: aioredis.Redis, settings: Settings) -> bool:
    return bool(await redis.xlen(keys.sessions_key(settings.redis)))


async def no_pending(redis: aioredis.Redis, stream: str) -> bool:
    return await pending_count(redis, stream, GROUP) == 0


class ReplyLost:
    """The store's room write applied, then its reply lost (a connection error), once."""

    def __init__(self, service: AnalyticsService) -> None:
        self.write = service.store.write
        self.lost = 0

    async def __call__(
        self, room: str, owner: str, epoch: int, step: Step, pos: str | None
    ) -> Doc | None:
        outbox = await self.write(room, owner, epoch, step, pos)
        if not self.lost and step.utterances:
            self.lost += 1
            raise RedisConnectionError("the reply was lost")
        return outbox


async def test_a_write_whose_reply_was_lost_is_not_stepped_again(
    redis: aioredis.Redis, settings: Settings
) -> None:
    events = liveavatar_script().events
    await write(redis, settings.redis, events)
    async with analytics(redis, settings) as service:
        lost = ReplyLost(service)
        service.store.write = lost  # type: ignore[method-assign]
        await wait_for(lambda: summaries_out(redis, settings), 10, "the summary")
    assert lost.lost == 1
    [summary] = await summaries(redis, settings)
    check_summary(summary)
    room_stream = keys.room_transcripts_key(settings.redis, "la-1")
    assert len(await utterances(redis, room_stream)) == 6  # not one twice
    assert len(await utterances(redis, keys.transcripts_key(settings.redis))) == 6
