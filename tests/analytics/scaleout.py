"""The golden scripts of every protocol through N analytics processes at once, and what
they wrote read back as bytes: two runs compare byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from relay import keys
from relay.analytics.service import AnalyticsService
from relay.config import Settings
from relay.contract.event import Event
from relay.redis_client import awaited
from tests.analytics.support import T0_MS, Script
from tests.analytics.test_golden_agents import agents
from tests.analytics.test_golden_liveavatar import liveavatar_script
from tests.analytics.test_golden_livelayer import livelayer
from tests.analytics.test_golden_streaming_avatar import streaming_avatar
from tests.consumer.support import wait_for, write

SWEEP_AT_MS = 40_000  # the Streaming Avatar session ends by the clock (its golden test)
CHUNK = 7  # events written per batch, the rooms interleaved
PAUSE_S = 0.3  # between batches: longer than a survey (lease_ttl_s / 4), so rooms move


def scripts() -> list[Script]:
    return [liveavatar_script(), agents(), livelayer(), streaming_avatar()]


def interleaved(all_scripts: list[Script]) -> list[Event]:
    """Each room's events in order, the rooms taking turns."""
    out: list[Event] = []
    longest = max(len(s.events) for s in all_scripts)
    for i in range(longest):
        out.extend(s.events[i] for s in all_scripts if i < len(s.events))
    return out


@dataclasses.dataclass(frozen=True)
class Outputs:
    summaries: list[bytes]  # the sessions stream's summaries, by session id
    hashes: list[dict[bytes, bytes]]  # the session hashes, same order
    room_transcripts: dict[str, list[bytes]]  # each room's stream, in its order
    transcripts: list[bytes]  # the all-rooms stream (rooms interleave freely): sorted


async def read_outputs(redis: aioredis.Redis, settings: Settings, rooms: list[str]) -> Outputs:
    s = settings.redis
    sessions: Any = await redis.xrange(keys.sessions_key(s))
    by_id = sorted((f[b"session_id"], f[b"summary"]) for _, f in sessions)
    hashes = [await awaited(redis.hgetall(keys.session_key(s, sid.decode()))) for sid, _ in by_id]
    per_room: dict[str, list[bytes]] = {}
    for room in rooms:
        entries: Any = await redis.xrange(keys.room_transcripts_key(s, room))
        per_room[room] = [_fields(f) for _, f in entries]
    everything: Any = await redis.xrange(keys.transcripts_key(s))
    return Outputs(
        [raw for _, raw in by_id], hashes, per_room, sorted(_fields(f) for _, f in everything)
    )


def _fields(fields: dict[bytes, bytes]) -> bytes:
    return b"|".join(k + b"=" + v for k, v in fields.items())


async def caught_up(redis: aioredis.Redis, settings: Settings, rooms: list[str]) -> bool:
    """Every room's position at its stream's last entry."""
    for room in rooms:
        last: Any = await redis.xrevrange(keys.room_key(settings.redis, room), count=1)
        pos = await redis.get(keys.analytics_pos_key(settings.redis, room))
        if not last or pos != last[0][0]:
            return False
    return True


@contextlib.asynccontextmanager
async def consumers(
    redis: aioredis.Redis, settings: Settings, clock: list[int], names: list[str]
) -> AsyncIterator[dict[str, tuple[AnalyticsService, asyncio.Task[None]]]]:
    """Services started by `start(name)`, all stopped (SIGTERM's way) at the end."""
    running: dict[str, tuple[AnalyticsService, asyncio.Task[None]]] = {}
    try:
        yield running
    finally:
        for service, _ in running.values():
            service.stop()
        for _, task in running.values():
            await asyncio.wait_for(task, 10)


def start(
    running: dict[str, tuple[AnalyticsService, asyncio.Task[None]]],
    redis: aioredis.Redis,
    settings: Settings,
    clock: list[int],
    name: str,
) -> AnalyticsService:
    service = AnalyticsService(
        redis,
        settings,
        consumer_name=name,
        clock_ms=lambda: clock[0],
        block_ms=50,
        lease_ttl_s=1.0,
        poll_s=0.02,
    )
    running[name] = (service, asyncio.create_task(service.run()))
    return service


async def assemble(
    redis: aioredis.Redis,
    settings: Settings,
    count: int,
    during: Callable[[], Awaitable[None]] | None = None,
    *,
    scale_down: bool = False,
) -> Outputs:
    """The scripts written in chunks while `count` processes run (the first alone at the
    start, the others joining after the first chunks: rooms move to them), `during` run
    half-way (and with `scale_down` the first process stopped there, as SIGTERM stops
    it: its rooms go to the others); then the clock moved for the sweep; what they
    wrote."""
    all_scripts = scripts()
    rooms = [s.room for s in all_scripts]
    events = interleaved(all_scripts)
    clock = [T0_MS]
    names = [f"a{i}" for i in range(count)]
    async with consumers(redis, settings, clock, names) as running:
        start(running, redis, settings, clock, names[0])
        chunks = [events[i : i + CHUNK] for i in range(0, len(events), CHUNK)]
        for n, chunk in enumerate(chunks):
            await write(redis, settings.redis, chunk)
            if 0 < n < count:
                start(running, redis, settings, clock, names[n])
            if during is not None and n == len(chunks) // 2:
                await during()
            if scale_down and n == len(chunks) // 2:
                service, task = running.pop(names[0])
                service.stop()
                await asyncio.wait_for(task, 10)
                assert not service.owned  # every lease handed back
            await asyncio.sleep(PAUSE_S)
        await wait_for(lambda: caught_up(redis, settings, rooms), 20, "every room applied")
        clock[0] = T0_MS + SWEEP_AT_MS
        await wait_for(lambda: sessions_written(redis, settings, len(rooms)), 20, "the sweep")
        moved = sum(service.taken_over for service, _ in running.values())
    assert len(running) == count - scale_down
    assert moved >= 1 or count == 1  # rooms moved mid-session to the processes that joined
    return await read_outputs(redis, settings, rooms)


async def sessions_written(redis: aioredis.Redis, settings: Settings, n: int) -> bool:
    return int(await redis.xlen(keys.sessions_key(settings.redis))) >= n
