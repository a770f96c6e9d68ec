"""Redis goes away and comes back: nothing accepted is lost, room order holds, duplicates
carry the same id, a full buffer pushes back, and drain() gives up at its deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from pydantic import SecretStr

from relay.config import PipelineSettings, RedisSettings
from relay.contract.event import Entry
from relay.contract.sink import Rejected
from relay.errors import SinkError
from relay.pipeline import Pipeline
from relay.redis_client import create_redis
from relay.sinks import RedisStreamsSink, Sink
from tests.fixtures.redis_server import RedisServer
from tests.pipeline.support import make_event, wait_until
from tests.support import metric

ROOMS = ("alpha", "beta {b}", "gamma")
QUICK_RETRY = PipelineSettings(
    batch_max_events=20, flush_interval_s=0.002, retry_initial_s=0.01, retry_max_s=0.1
)


class Harness:
    """A pipeline writing to Redis through RedisStreamsSink, with its run() task."""

    def __init__(self, settings: RedisSettings, pipeline: PipelineSettings) -> None:
        self.settings = settings
        self.reader = create_redis(settings)
        self.sink = RedisStreamsSink(create_redis(settings), settings)
        self.pipeline = Pipeline(pipeline, [self.sink])
        self.task = asyncio.create_task(self.pipeline.run())
        self.submitted: dict[str, int] = dict.fromkeys(ROOMS, 0)

    async def submit(self, room: str) -> None:
        await self.pipeline.submit(make_event(room, self.submitted[room]))
        self.submitted[room] += 1

    @contextlib.asynccontextmanager
    async def traffic(self) -> AsyncIterator[None]:
        """Every room submitting an event each millisecond or so, until the block ends."""
        producing = True

        async def produce() -> None:
            while producing:
                for room in ROOMS:
                    await self.submit(room)
                await asyncio.sleep(0.001)

        producer = asyncio.create_task(produce())
        try:
            yield
        finally:
            producing = False
            await producer

    async def room_events(self, room: str) -> list[dict[str, Any]]:
        entries = await self.reader.xrange(f"{self.settings.prefix}:room:{{{room}}}")
        return [json.loads(fields[b"event"]) for _, fields in entries]

    async def aclose(self) -> None:
        await self.pipeline.drain(1.0)
        await self.task
        await self.sink.aclose()
        await self.reader.aclose()


@pytest.fixture
async def outage(private_redis: RedisServer) -> AsyncIterator[Harness]:
    settings = RedisSettings(url=SecretStr(private_redis.url), prefix="t", socket_timeout_s=1)
    harness = Harness(settings, QUICK_RETRY)
    yield harness
    await harness.aclose()


def dedupe_in_order(events: Sequence[dict[str, Any]]) -> tuple[list[int], int]:
    """Seqs in first-seen order and the number of duplicates; a duplicate must be the
    same event byte for byte (same id, same seq, same everything)."""
    first: dict[str, dict[str, Any]] = {}
    for event in events:
        assert first.setdefault(event["id"], event) == event
    return [event["seq"] for event in first.values()], len(events) - len(first)


async def test_every_accepted_event_arrives_in_room_order_across_an_outage(
    outage: Harness, private_redis: RedisServer
) -> None:
    failures = metric("relay_sink_write_failures_total", sink="redis")
    async with outage.traffic():
        await wait_until(lambda: outage.submitted["gamma"] >= 20, what="traffic before the outage")
        await asyncio.to_thread(private_redis.stop)
        await wait_until(
            lambda: metric("relay_sink_write_failures_total", sink="redis") - failures >= 2,
            what="failed writes",
        )
        during = outage.submitted["gamma"]
        await wait_until(lambda: outage.submitted["gamma"] >= during + 20, what="traffic in outage")
        assert not outage.pipeline.healthy
        assert outage.pipeline.buffered >= 20 * len(ROOMS)  # accepted, waiting for Redis
        await asyncio.to_thread(private_redis.start)
        await wait_until(lambda: outage.pipeline.healthy, what="recovery")
    assert await outage.pipeline.drain(5.0) == 0

    for room in ROOMS:
        seqs, _ = dedupe_in_order(await outage.room_events(room))
        assert seqs == list(range(1, outage.submitted[room] + 1)), room


class LostAcknowledgement(Sink):
    """Writes, then reports a failure once: the reply of a written batch was lost."""

    def __init__(self, inner: Sink) -> None:
        self.name = "lost-ack"
        self.inner = inner
        self.lose = 1

    async def write(self, batch: Sequence[Entry]) -> list[Rejected]:
        rejected = await self.inner.write(batch)
        if self.lose:
            self.lose -= 1
            raise SinkError("connection reset before the reply")
        return rejected


@pytest.mark.parametrize(("guard", "repeats"), [("script", 0), ("off", 4)])
async def test_a_rewritten_batch_is_written_once_unless_the_guard_is_off(
    redis_settings: RedisSettings, guard: str, repeats: int
) -> None:
    settings = redis_settings.model_copy(update={"write_guard": guard})
    client = create_redis(settings)
    inner = RedisStreamsSink(client, settings)
    pipeline = Pipeline(
        QUICK_RETRY.model_copy(update={"batch_max_events": 4}), [LostAcknowledgement(inner)]
    )
    for n in range(5):
        for room in ("a", "b"):
            await pipeline.submit(make_event(room, n))
    assert await pipeline.drain(2.0) == 0
    raw = await client.xrange(f"{settings.prefix}:events")
    events = [json.loads(fields[b"event"]) for _, fields in raw]
    assert len(events) == 10 + repeats  # the first batch of 4 twice, unless guarded
    for room in ("a", "b"):
        seqs, duplicates = dedupe_in_order([e for e in events if e["room"] == room])
        assert (seqs, duplicates) == ([1, 2, 3, 4, 5], repeats // 2)
        assert await client.xlen(f"{settings.prefix}:room:{{{room}}}") == 5 + repeats // 2
    assert inner.duplicates_skipped == (8 if guard == "script" else 0)  # 4 events x 2 streams
    await client.aclose()


async def test_a_full_buffer_holds_producers_back_while_redis_is_down(
    private_redis: RedisServer,
) -> None:
    settings = RedisSettings(url=SecretStr(private_redis.url), prefix="t", socket_timeout_s=1)
    small = QUICK_RETRY.model_copy(update={"buffer_max_events": 5, "batch_max_events": 2})
    harness = Harness(settings, small)
    await asyncio.to_thread(private_redis.stop)

    async def produce() -> None:
        for _ in range(6):
            for room in ROOMS[:2]:
                await harness.submit(room)

    producer = asyncio.create_task(produce())
    await wait_until(lambda: harness.pipeline.buffered == 5, what="a full buffer")
    await wait_until(lambda: not harness.pipeline.healthy, what="failed writes")
    assert sum(harness.submitted.values()) == 5
    assert not producer.done()  # waiting for room: the backpressure, nothing dropped

    await asyncio.to_thread(private_redis.start)
    await asyncio.wait_for(producer, timeout=5)
    assert await harness.pipeline.drain(5.0) == 0
    for room in ROOMS[:2]:
        seqs, _ = dedupe_in_order(await harness.room_events(room))
        assert seqs == [1, 2, 3, 4, 5, 6]
    await harness.aclose()


async def test_drain_with_redis_down_gives_up_at_the_deadline(
    outage: Harness, private_redis: RedisServer
) -> None:
    timeouts = metric("relay_events_dropped_total", reason="shutdown_timeout")
    await asyncio.to_thread(private_redis.stop)
    for _ in range(7):
        await outage.submit("alpha")
    await wait_until(lambda: not outage.pipeline.healthy, what="failed writes")
    started = time.monotonic()
    assert await outage.pipeline.drain(0.3) == 7
    assert 0.25 <= time.monotonic() - started < 1.0
    assert metric("relay_events_dropped_total", reason="shutdown_timeout") - timeouts == 7
    await asyncio.wait_for(outage.task, timeout=1)  # run() ended cleanly
    assert outage.task.exception() is None
