"""Helpers for the consumer tests: events written by the relay's own sink, polling."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from relay.config import RedisSettings
from relay.contract.event import Event, Participant
from relay.contract.kinds import EventKind
from relay.sinks import RedisStreamsSink

AGENT = Participant(identity="liveavatar-agent-s1", sid="PA_1", kind="agent", role="agent")


def event(
    room: str, seq: int, *, kind: EventKind = "transcript.final", event_id: str = ""
) -> Event:
    """A stamped event as the pipeline hands it to the sink: a fresh id unless given."""
    data: dict[str, Any] = {"role": "user", "text": f"utterance {seq}", "segment_id": f"s{seq}"}
    protocol: Any = "liveavatar"
    if kind.startswith("observer."):
        data, protocol = {}, "relay"
    unstamped = Event(
        room=room,
        protocol=protocol,
        kind=kind,
        data=data,
        received_at=time.time(),
        participant=AGENT,
        source={"topic": "agent-response"},
    )
    return unstamped.stamped(event_id or f"ev_{uuid.uuid4().hex[:20]}", seq)


def events(room: str, count: int, first_seq: int = 1) -> list[Event]:
    return [event(room, seq) for seq in range(first_seq, first_seq + count)]


async def write(redis: aioredis.Redis, settings: RedisSettings, batch: Sequence[Event]) -> None:
    """Write with RedisStreamsSink: the entries consumers really read. Unguarded: a
    script's repeats reach the stream, as with `redis.write_guard=off` or after the dedupe
    window, so the consumers' own dedupe is what the tests see."""
    unguarded = settings.model_copy(update={"write_guard": "off"})
    sink = RedisStreamsSink(redis, unguarded, close_client=False)
    rejected = await sink.write(batch)
    await sink.aclose()  # gives its connection back to the pool
    assert not rejected


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


async def pending_count(redis: aioredis.Redis, stream: str, group: str) -> int:
    summary: Any = await redis.xpending(stream, group)
    return int(summary["pending"])
