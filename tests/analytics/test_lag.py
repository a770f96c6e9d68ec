"""The analytics group's lag gauges on the real Redis (and a Redis Cluster): entries the
stopped consumer has not read, a batch delivered and not yet acknowledged, a lag Redis
cannot count (XDEL), no group yet, Redis gone; caught up, all of them 0."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from pydantic import SecretStr

from relay import keys
from relay.analytics.lag import GroupLag, read_lag
from relay.analytics.service import AnalyticsService
from relay.config import RedisSettings, Settings
from relay.consumer import StreamConsumer, StreamEvent
from relay.contract.event import Event
from relay.dev.ports import free_port
from relay.redis_client import create_redis
from tests.analytics.support import analytics, consumed
from tests.analytics.test_golden_agents import agents
from tests.analytics.test_golden_liveavatar import liveavatar_script
from tests.consumer.support import wait_for, write
from tests.fixtures.redis_server import ClusterSet

GROUP = "analytics"
OLDEST_S = 90.0  # the age of the first entry written
SLACK_S = 5.0  # what a slow machine may add between writing and reading


def gauge(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


def gauges() -> tuple[float, float, float]:
    return (
        gauge("relay_analytics_stream_lag_entries"),
        gauge("relay_analytics_pending_entries"),
        gauge("relay_analytics_behind_seconds"),
    )


async def write_aged(
    redis: aioredis.Redis, settings: Settings, events: Sequence[Event], step_s: float = 1.0
) -> None:
    """The events as the sink writes them, re-added with ids OLDEST_S, OLDEST_S - step_s,
    ... seconds in the past (an id is the ms time Redis stamped it with)."""
    stream = keys.events_key(settings.redis)
    await write(redis, settings.redis, events)
    entries: Any = await redis.xrange(stream)
    await redis.delete(stream)
    now_ms = round(time.time() * 1000)
    for n, (_id, fields) in enumerate(entries):
        age_ms = round((OLDEST_S - n * step_s) * 1000)
        await redis.xadd(stream, fields, id=f"{now_ms - age_ms}-0")


def service_of(redis: aioredis.Redis, settings: Settings, name: str = "a1") -> AnalyticsService:
    return AnalyticsService(redis, settings, consumer_name=name, block_ms=50)


async def test_what_the_stopped_consumer_has_not_read_is_its_lag_until_it_catches_up(
    redis: aioredis.Redis, settings: Settings
) -> None:
    events = liveavatar_script().events
    await write_aged(redis, settings, events)
    stopped = service_of(redis, settings)
    await stopped.consumer.ensure_group()  # the group where a stopped consumer left it
    figures = await stopped.refresh_lag()
    assert figures is not None and (figures.lag, figures.pending) == (len(events), 0)
    assert OLDEST_S <= figures.behind_s < OLDEST_S + SLACK_S
    assert gauges() == (len(events), 0, figures.behind_s)
    # Started: the service's own loop sets the gauges once it has caught up.
    async with analytics(redis, settings, lag_refresh_s=0.02) as service:
        await wait_for(lambda: consumed(service) >= len(events), 10, "the events")
        await wait_for(lambda: gauges() == (0, 0, 0), 10, "the gauges at 0")


class MeasureFirstBatch:
    """The rooms' registration of a group batch, reading the lag inside the first batch:
    read, handled, its XACK not sent yet."""

    def __init__(self, service: AnalyticsService) -> None:
        self.service = service
        self.seen = service.rooms.seen
        self.inside: list[GroupLag | None] = []

    async def __call__(self, last_ms: dict[str, int]) -> None:
        if not self.inside:
            self.inside.append(await self.service.refresh_lag())
        await self.seen(last_ms)


async def test_a_batch_delivered_and_not_yet_acknowledged_is_pending(
    redis: aioredis.Redis, settings: Settings
) -> None:
    events = liveavatar_script().events
    await write_aged(redis, settings, events)
    async with analytics(redis, settings, batch=10, lag_refresh_s=60) as service:
        measured = MeasureFirstBatch(service)
        service.rooms.seen = measured  # type: ignore[method-assign]
        await wait_for(lambda: consumed(service) >= len(events), 10, "the events")
    [figures] = measured.inside
    assert figures is not None and (figures.lag, figures.pending) == (len(events) - 10, 10)
    # The oldest entry not yet delivered is the 11th, 10 s younger than the first.
    assert OLDEST_S - 10 <= figures.behind_s < OLDEST_S - 10 + SLACK_S
    assert gauges()[:2] == (len(events) - 10, 10)


async def test_a_lag_redis_cannot_count_is_nan_and_behind_still_holds(
    redis: aioredis.Redis, settings: Settings
) -> None:
    events = liveavatar_script().events
    await write_aged(redis, settings, events)
    service = service_of(redis, settings)
    await service.consumer.ensure_group()
    stream = keys.events_key(settings.redis)
    entries: Any = await redis.xrange(stream, count=3)
    await redis.xdel(stream, entries[2][0])  # a hole after the group's position
    [info] = await redis.xinfo_groups(stream)
    assert info["lag"] is None  # what Redis 7 answers then
    figures = await service.refresh_lag()
    assert figures is not None and figures.lag is None and figures.pending == 0
    assert OLDEST_S <= figures.behind_s < OLDEST_S + SLACK_S
    lag, pending, behind = gauges()
    assert math.isnan(lag) and (pending, behind) == (0, figures.behind_s)
    # Nothing left to deliver is a lag of 0, whatever Redis can count.
    async with analytics(redis, settings, lag_refresh_s=0.02) as started:
        await wait_for(lambda: consumed(started) >= len(events) - 1, 10, "the events")
        await wait_for(lambda: gauges() == (0, 0, 0), 10, "the gauges at 0")


async def test_entries_trimmed_past_the_group_are_lost_not_waiting(
    redis: aioredis.Redis, settings: Settings
) -> None:
    events = liveavatar_script().events
    await write_aged(redis, settings, events)
    service = service_of(redis, settings)
    await service.consumer.ensure_group()
    stream = keys.events_key(settings.redis)
    await redis.xreadgroup(GROUP, "a1", {stream: ">"}, count=2)
    await redis.xtrim(stream, maxlen=5, approximate=False)  # all but 5, undelivered ones too
    [info] = await redis.xinfo_groups(stream)
    assert info["lag"] == len(events) - 2  # Redis counts them still
    figures = await service.refresh_lag()
    assert figures is not None and (figures.lag, figures.pending) == (5, 2)
    # The oldest that waits is the first of the 5 left.
    aged = OLDEST_S - (len(events) - 5)
    assert aged <= figures.behind_s < aged + SLACK_S


async def test_no_group_yet_or_no_redis_shows_no_figures(
    redis: aioredis.Redis, settings: Settings
) -> None:
    service = service_of(redis, settings)
    assert await service.refresh_lag() is None  # no stream yet
    assert all(math.isnan(value) for value in gauges())
    await write(redis, settings.redis, liveavatar_script().events[:3])
    assert await read_lag(redis, keys.events_key(settings.redis), GROUP) is None  # no group
    assert await read_lag(redis, keys.events_key(settings.redis), "other") is None
    await service.consumer.ensure_group()
    figures = await service.refresh_lag()
    assert figures is not None and (figures.lag, figures.pending) == (3, 0)
    assert 0 <= figures.behind_s < SLACK_S  # written just now
    assert gauge("relay_analytics_stream_lag_entries") == 3
    # Redis does not answer: NaN, not the last figures (stale ones would look fine).
    gone = RedisSettings(url=SecretStr(f"redis://127.0.0.1:{free_port('127.0.0.1')}"))
    client = create_redis(gone)
    try:
        assert await service_of(client, Settings(redis=gone)).refresh_lag() is None
    finally:
        await client.aclose()
    assert all(math.isnan(value) for value in gauges())


@pytest.fixture
async def cluster_client(
    cluster_redis: ClusterSet,
) -> AsyncIterator[tuple[aioredis.Redis, Settings]]:
    settings = Settings(
        redis=RedisSettings(
            url=SecretStr(cluster_redis.url), prefix="c", cluster=True, socket_timeout_s=2
        )
    )
    client = create_redis(settings.redis)
    yield client, settings
    await client.aclose()


async def test_on_a_cluster_the_figures_come_from_the_stream_keys_node(
    cluster_client: tuple[aioredis.Redis, Settings],
) -> None:
    # The analytics store cannot run on a Cluster (docs/analytics.md, its transaction spans
    # slots): a plain consumer of the group stands in, the figures are the same commands.
    redis, settings = cluster_client
    events = liveavatar_script().events
    await write_aged(redis, settings, events)
    stream = keys.events_key(settings.redis)
    inside: list[GroupLag | None] = []

    async def measure() -> None:
        if not inside:  # the first batch: read, handled, its XACK not sent yet
            inside.append(await read_lag(redis, stream, GROUP))

    async def handle(item: StreamEvent) -> None:
        handled.append(item)

    handled: list[StreamEvent] = []
    consumer = StreamConsumer(
        redis, stream, GROUP, "c1", handle, batch=10, block_ms=50, before_ack=measure
    )
    task = asyncio.create_task(consumer.run())
    try:
        await wait_for(lambda: consumer.stats.acked >= len(events), 10, "the events")
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 5)
    [figures] = inside
    assert figures is not None and (figures.lag, figures.pending) == (len(events) - 10, 10)
    assert OLDEST_S - 10 <= figures.behind_s < OLDEST_S - 10 + SLACK_S
    assert await read_lag(redis, stream, GROUP) == GroupLag(lag=0, pending=0, behind_s=0.0)


async def age_room_stream(
    redis: aioredis.Redis, settings: Settings, room: str, age_s: float
) -> None:
    """The room's stream re-added with ids `age_s`, `age_s` - 1, ... seconds in the past."""
    stream = keys.room_key(settings.redis, room)
    entries: Any = await redis.xrange(stream)
    await redis.delete(stream)
    now_ms = round(time.time() * 1000)
    for n, (_id, fields) in enumerate(entries):
        await redis.xadd(stream, fields, id=f"{now_ms - round((age_s - n) * 1000)}-0")


async def test_each_of_several_processes_is_behind_by_the_rooms_it_owns(
    redis: aioredis.Redis, settings: Settings
) -> None:
    scripts = {"la-1": liveavatar_script(), "ag-1": agents()}
    for script in scripts.values():
        await write(redis, settings.redis, script.events)
    await age_room_stream(redis, settings, "la-1", OLDEST_S)
    await age_room_stream(redis, settings, "ag-1", OLDEST_S / 2)
    services = [service_of(redis, settings, f"p{i}") for i in range(2)]
    for service in services:
        await service.rooms.survey()  # both counted: a share of one room each
    await services[0].rooms.seen(dict.fromkeys(scripts, round(time.time() * 1000)))
    for service in services:
        await service._survey()
        await service._pick_up()
    owners = {room: s.name for s in services for room in s.owned}
    assert sorted(owners) == sorted(scripts) and len(set(owners.values())) == 2
    for service in services:
        [room] = service.owned
        age = OLDEST_S if room == "la-1" else OLDEST_S / 2
        assert age <= await service.own_behind_s() < age + SLACK_S, room
        await service._advance(room)  # caught up: nothing of its rooms waits
        assert await service.own_behind_s() == 0.0
