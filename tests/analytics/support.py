"""A scripted conversation as contract Events at known times, written to the real Redis
with the relay's own sink; the analytics service run over it; its outputs read back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from relay import keys
from relay.analytics.service import AnalyticsService
from relay.config import Settings
from relay.contract.event import Event, Participant, format_ts
from relay.contract.kinds import EventKind, Protocol
from tests.consumer.support import wait_for, write

T0_MS = 1_763_732_700_000  # 2025-11-21T13:45:00.000Z
OBSERVER = Participant("", None, "unknown", "observer")
SFU = Participant("", None, "unknown", "unknown")


def at(ms: int) -> str:
    """The RFC 3339 time of script offset `ms`."""
    return format_ts((T0_MS + ms) / 1000 + 0.0004)


class Script:
    """Events of one room in seq order; `ms` is the offset from T0."""

    def __init__(self, room: str, session_id: str | None = None) -> None:
        self.room = room
        self.session_id = session_id
        self.events: list[Event] = []

    def add(
        self,
        ms: int,
        kind: EventKind,
        who: Participant,
        data: dict[str, Any] | None = None,
        *,
        protocol: Protocol = "liveavatar",
        session: bool = True,
        event_id: str = "",
    ) -> Event:
        seq = len(self.events) + 1
        if kind.startswith("observer."):
            protocol = "relay"
        unstamped = Event(
            room=self.room,
            protocol=protocol,
            kind=kind,
            data=data or {},
            received_at=(T0_MS + ms) / 1000 + 0.0004,  # + 0.4 ms: no float rounding to 999
            participant=who,
            session_id=self.session_id if session else None,
        )
        event = unstamped.stamped(event_id or f"ev_{self.room}_{seq:04d}", seq)
        self.events.append(event)
        return event

    def repeat(self, event: Event) -> None:
        """The same event again (same id): a retried batch or a replay."""
        self.events.append(event)


@contextlib.asynccontextmanager
async def analytics(
    redis: aioredis.Redis, settings: Settings, name: str = "a1", now_ms: int = T0_MS, **kw: Any
) -> AsyncIterator[AnalyticsService]:
    service = AnalyticsService(
        redis, settings, consumer_name=name, clock_ms=lambda: now_ms, block_ms=50, **kw
    )
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 5)


async def run_script(
    redis: aioredis.Redis, settings: Settings, script: Script, sweep_at_ms: int | None = None
) -> dict[str, Any]:
    """Write the script, run the analytics over all of it (then one sweep at script time
    `sweep_at_ms`, when given), return the one summary written."""
    await write(redis, settings.redis, script.events)
    clock = T0_MS + (sweep_at_ms or 0)
    async with analytics(redis, settings, now_ms=clock) as service:
        await wait_for(lambda: consumed(service) >= len(script.events), 10, "the events")
        if sweep_at_ms is not None:
            await service.sweep_once()
        await wait_for(lambda: summaries_count(redis, settings), 10, "a session summary")
    found = await summaries(redis, settings)
    assert len(found) == 1, found
    return found[0]


def consumed(service: AnalyticsService) -> int:
    """Entries of the rooms' streams the service applied (its duplicates too)."""
    return service.applied


async def summaries_count(redis: aioredis.Redis, settings: Settings) -> bool:
    return bool(await redis.xlen(keys.sessions_key(settings.redis)))


async def summaries(redis: aioredis.Redis, settings: Settings) -> list[dict[str, Any]]:
    entries: Any = await redis.xrange(keys.sessions_key(settings.redis))
    return [json.loads(fields[b"summary"]) for _id, fields in entries]


async def utterances(redis: aioredis.Redis, key: str) -> list[dict[str, Any]]:
    entries: Any = await redis.xrange(key)
    return [json.loads(fields[b"utterance"]) for _id, fields in entries]


def without_ids(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Utterances minus `utterance_id` (a hash, checked on its own)."""
    return [{k: v for k, v in doc.items() if k != "utterance_id"} for doc in docs]


def now() -> float:
    return time.time()
