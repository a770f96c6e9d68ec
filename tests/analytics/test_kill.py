"""`relay analytics` processes at load, one killed with SIGKILL in the middle: the other
takes its rooms once their leases expire and resumes each where it stopped; every
summary and transcript is written exactly once, byte for byte what one process writes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from typing import Any

import redis.asyncio as aioredis

from relay import keys
from relay.config import Settings
from relay.contract.event import Event
from tests.analytics.scaleout import Outputs, caught_up, consumers, read_outputs, start
from tests.analytics.support import T0_MS, Script
from tests.analytics.test_golden_agents import agents
from tests.analytics.test_golden_livelayer import livelayer
from tests.analytics.test_scaleout import prefixed
from tests.consumer.support import wait_for, write

ROOMS_PER_SCRIPT = 15
CHUNK = 40
PAUSE_S = 0.1


def renamed(script: Script, room: str) -> Script:
    """The same conversation in another room (its session id is the room's own, its ids
    too, as the relay's are)."""
    copy = Script(room)
    copy.events = [
        dataclasses.replace(event, room=room).stamped(
            event.id.replace(script.room, room), event.seq
        )
        for event in script.events
    ]
    return copy


def load() -> tuple[list[str], list[Event]]:
    scripts = [renamed(agents(), f"ag-{i}") for i in range(ROOMS_PER_SCRIPT)]
    scripts += [renamed(livelayer(), f"ll-{i}") for i in range(ROOMS_PER_SCRIPT)]
    events: list[Event] = []
    for i in range(max(len(s.events) for s in scripts)):
        events.extend(s.events[i] for s in scripts if i < len(s.events))
    return [s.room for s in scripts], events


async def spawn(settings: Settings, name: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env |= {
        "RELAY_REDIS__URL": settings.redis.url.get_secret_value(),
        "RELAY_REDIS__PREFIX": settings.redis.prefix,
        "RELAY_ANALYTICS__CONSUMER": name,
        "RELAY_ANALYTICS__LEASE_TTL_S": "1",
        "RELAY_ANALYTICS__CLAIM_IDLE_MS": "500",
        "RELAY_ANALYTICS__METRICS_PORT": "0",
        # No sweep: the clock would be today's, the scripts' times are of 2025.
        "RELAY_ANALYTICS__SWEEP_INTERVAL_S": "3600",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "analytics",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def holds(redis: aioredis.Redis, settings: Settings, rooms: list[str], name: str) -> bool:
    names = [keys.lease_key(settings.redis, room, keys.ANALYTICS_LEASES) for room in rooms]
    values: Any = await redis.mget(names)
    return name.encode() in values


async def reference(
    redis: aioredis.Redis, settings: Settings, rooms: list[str], events: list[Event]
) -> Outputs:
    """One in-process consumer over the same events."""
    clock = [T0_MS]
    async with consumers(redis, settings, clock, ["ref"]) as running:
        start(running, redis, settings, clock, "ref")
        await write(redis, settings.redis, events)
        await wait_for(lambda: caught_up(redis, settings, rooms), 30, "the reference")
    return await read_outputs(redis, settings, rooms)


async def test_a_consumer_killed_at_load_loses_nothing_and_doubles_nothing(
    redis: aioredis.Redis, settings: Settings
) -> None:
    rooms, events = load()
    expected = await reference(redis, prefixed(settings, "ref"), rooms, events)
    assert len(expected.summaries) == len(rooms)
    run = prefixed(settings, "run")
    victim, survivor = await spawn(run, "victim"), await spawn(run, "survivor")
    try:
        chunks = [events[i : i + CHUNK] for i in range(0, len(events), CHUNK)]
        killed_at = None
        await wait_for(lambda: registered(redis, run, 2), 30, "both processes up")
        for n, chunk in enumerate(chunks):
            await write(redis, run.redis, chunk)
            if n == len(chunks) // 2:
                # Both share the rooms (a survey each lease_ttl_s / 4): the victim holds some.
                await wait_for(lambda: holds(redis, run, rooms, "victim"), 15, "victim's rooms")
                victim.send_signal(signal.SIGKILL)  # the process we started, by its PID
                await victim.wait()
                killed_at = n
            await asyncio.sleep(PAUSE_S)
        assert killed_at is not None and killed_at < len(chunks) - 1  # killed mid-run
        await wait_for(lambda: caught_up(redis, run, rooms), 60, "every room applied")
        await wait_for(lambda: summaries_in(redis, run, len(rooms)), 30, "every summary")
        assert not await holds(redis, run, rooms, "victim")
        moved = await moved_mid_session(redis, run, rooms)
        assert moved, "no room changed hands with a session open"
    finally:
        for process in (victim, survivor):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 20)
    assert survivor.returncode == 0
    assert await read_outputs(redis, run, rooms) == expected


async def moved_mid_session(redis: aioredis.Redis, settings: Settings, rooms: list[str]) -> int:
    """Rooms whose lease was taken again (epoch 2 or more): by the survivor, from the
    victim or in a rebalance, each resumed from its position."""
    epochs: Any = await redis.mget(
        [keys.epoch_key(settings.redis, room, keys.ANALYTICS_LEASES) for room in rooms]
    )
    return sum(int(epoch) >= 2 for epoch in epochs)


async def registered(redis: aioredis.Redis, settings: Settings, n: int) -> bool:
    return int(await redis.zcard(keys.analytics_workers_key(settings.redis))) >= n


async def summaries_in(redis: aioredis.Redis, settings: Settings, n: int) -> bool:
    return int(await redis.xlen(keys.sessions_key(settings.redis))) >= n
