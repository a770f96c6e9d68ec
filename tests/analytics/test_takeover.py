"""A session that spans a restart of the analytics process, a takeover of a dead
consumer's pending entries by another one, and a replay: one summary, the golden one."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from relay import keys
from relay.analytics.assemble import Doc
from relay.analytics.service import AnalyticsService
from relay.analytics.store import Outcome
from relay.config import Settings
from tests.analytics.support import analytics, consumed, summaries, utterances
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


class CrashAfterApplying:
    """A consumer that applies event `seq` to the store, then dies before the XACK."""

    def __init__(self, service: AnalyticsService, seq: int) -> None:
        self.apply = service.store.apply_events
        self.seq = seq
        self.crashes = 0

    async def __call__(self, room: str, events: list[Doc]) -> Outcome:
        outcome = await self.apply(room, events)
        if any(event["seq"] >= self.seq for event in events):
            self.crashes += 1
            raise RuntimeError("killed between the store and the XACK")
        return outcome


async def test_another_consumer_takes_over_what_a_dead_one_left(
    redis: aioredis.Redis, settings: Settings
) -> None:
    events = liveavatar_script().events
    await write(redis, settings.redis, events)
    fast: dict[str, Any] = {"claim_idle_ms": 50, "claim_every_s": 0.05}
    # Batches of 10: 1-20 acknowledged, 21-30 applied and never acknowledged.
    async with analytics(redis, settings, name="dying", retry_max_s=0.05, batch=10) as dying:
        crash = CrashAfterApplying(dying, 25)
        dying.store.apply_events = crash  # type: ignore[method-assign]
        await wait_for(lambda: crash.crashes >= 2, 10, "the crash")
    stream = keys.events_key(settings.redis)
    assert await pending_count(redis, stream, GROUP) == 10
    assert await summaries(redis, settings) == []
    async with analytics(redis, settings, name="heir", **fast) as heir:
        await wait_for(lambda: heir.consumer.stats.claimed > 0, 10, "the takeover")
        await wait_for(lambda: summaries_out(redis, settings), 10, "the summary")
        await wait_for(lambda: no_pending(redis, stream), 10, "all acknowledged")
    [summary] = await summaries(redis, settings)
    check_summary(summary)  # event 25 applied twice (crash, takeover) counts once


async def test_a_replay_of_the_whole_stream_writes_no_second_summary(
    redis: aioredis.Redis, settings: Settings
) -> None:
    events = liveavatar_script().events
    await write(redis, settings.redis, events)
    stream = keys.events_key(settings.redis)
    async with analytics(redis, settings) as service:
        await wait_for(lambda: consumed(service) >= len(events), 10, "the events")
    transcripts = await utterances(redis, keys.transcripts_key(settings.redis))
    # The tombstone remembers the ids: a replay changes nothing.
    await redis.xgroup_setid(stream, GROUP, "0")
    async with analytics(redis, settings, name="a2") as again:
        await wait_for(lambda: consumed(again) >= len(events), 10, "the replay")
    assert await utterances(redis, keys.transcripts_key(settings.redis)) == transcripts
    # Without the state (lost, expired): assembled anew, but the SET NX guard holds.
    await redis.delete(keys.analytics_state_key(settings.redis, "la-1"))
    await redis.xgroup_setid(stream, GROUP, "0")
    async with analytics(redis, settings, name="a3") as third:
        await wait_for(lambda: consumed(third) >= len(events), 10, "the second replay")
    [summary] = await summaries(redis, settings)
    check_summary(summary)


async def summaries_out(redis: aioredis.Redis, settings: Settings) -> bool:
    return bool(await redis.xlen(keys.sessions_key(settings.redis)))


async def no_pending(redis: aioredis.Redis, stream: str) -> bool:
    return await pending_count(redis, stream, GROUP) == 0
