"""Pipeline: stamping, batching, retries, backpressure, drops with reasons, drain, cancel."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from relay.backoff import backoff_s
from relay.config import PipelineSettings
from relay.contract.event import DeadLetter
from relay.pipeline import Pipeline
from relay.sinks import StdoutSink
from tests.pipeline.support import MemorySink, make_event, seqs_by_room, wait_until
from tests.support import metric

FAST: dict[str, Any] = {"retry_initial_s": 0.001, "retry_max_s": 0.005, "flush_interval_s": 0.001}

PipelineFactory = Callable[..., tuple[Pipeline, MemorySink]]


@pytest.fixture
async def start() -> AsyncIterator[PipelineFactory]:
    """Pipelines with a MemorySink and a running run() task, drained after the test."""
    made: list[tuple[Pipeline, asyncio.Task[None]]] = []

    def factory(**settings: float) -> tuple[Pipeline, MemorySink]:
        sink = MemorySink()
        pipeline = Pipeline(PipelineSettings(**{**FAST, **settings}), [sink])
        made.append((pipeline, asyncio.create_task(pipeline.run())))
        return pipeline, sink

    yield factory
    for pipeline, task in made:
        await pipeline.drain(0.5)
        await task


async def test_ids_and_per_room_seqs_are_stamped_in_order(start: PipelineFactory) -> None:
    pipeline, sink = start()
    for n in range(3):
        await pipeline.submit(make_event("a", n))
        await pipeline.submit(make_event("b", n))
    await pipeline.submit(make_event("a", 3))
    assert await pipeline.drain(1.0) == 0
    assert seqs_by_room(sink.events) == {"a": [1, 2, 3, 4], "b": [1, 2, 3]}
    assert [e.data["text"] for e in sink.events if e.room == "a"][-1] == "utterance 3"
    ids = [e.id for e in sink.events]
    assert len(set(ids)) == 7
    assert all(i.startswith("ev_") for i in ids)


async def test_batches_are_capped_and_keep_order(start: PipelineFactory) -> None:
    pipeline, sink = start(batch_max_events=4)
    for n in range(10):
        await pipeline.submit(make_event("a", n))  # no await suspends: all buffered first
    await pipeline.drain(1.0)
    assert [len(b) for b in sink.batches] == [4, 4, 2]
    assert [e.seq for e in sink.events] == list(range(1, 11))


async def test_without_a_flush_interval_what_arrives_during_a_write_goes_in_the_next(
    start: PipelineFactory,
) -> None:
    pipeline, sink = start(batch_max_events=10, flush_interval_s=0)
    sink.gate.clear()  # the first write is in flight until the gate opens
    await pipeline.submit(make_event("a", 0))
    await wait_until(lambda: len(sink.attempts) == 1, what="the lone event's write")
    for n in range(1, 4):
        await pipeline.submit(make_event("a", n))
    await asyncio.sleep(0.01)
    assert len(sink.attempts) == 1  # one write at a time
    sink.gate.set()
    await wait_until(lambda: len(sink.events) == 4, what="both batches")
    assert [len(b) for b in sink.batches] == [1, 3]  # coalesced, with no wait


async def test_a_partial_batch_waits_for_the_flush_interval(start: PipelineFactory) -> None:
    pipeline, sink = start(batch_max_events=10, flush_interval_s=0.05)
    started = time.monotonic()
    await pipeline.submit(make_event("a", 0))
    await wait_until(lambda: len(sink.events) == 1, what="the lone event")
    assert time.monotonic() - started >= 0.045


async def test_a_full_batch_is_written_without_waiting(start: PipelineFactory) -> None:
    pipeline, sink = start(batch_max_events=2, flush_interval_s=30)
    await pipeline.submit(make_event("a", 0))
    await asyncio.sleep(0)  # the flusher takes the first event and lingers
    await pipeline.submit(make_event("a", 1))
    await wait_until(lambda: len(sink.events) == 2, timeout_s=2, what="a full batch")


async def test_a_failed_batch_is_retried_whole_until_acknowledged(start: PipelineFactory) -> None:
    failures = metric("relay_sink_write_failures_total", sink="memory")
    written = metric("relay_events_written_total", sink="memory")
    latency = metric("relay_event_latency_seconds_count")
    pipeline, sink = start(batch_max_events=3)
    buffered = metric("relay_buffer_events")
    sink.fail_next = 3
    for n in range(3):
        await pipeline.submit(make_event("a", n))
    await wait_until(lambda: len(sink.attempts) >= 2, what="a retry")
    assert not pipeline.healthy
    assert pipeline.last_error == "memory: down"
    assert pipeline.buffered == 3
    assert metric("relay_buffer_events") - buffered == 3  # counted until acknowledged
    await wait_until(lambda: len(sink.batches) == 1, what="the acknowledgement")
    assert len(sink.attempts) == 4
    assert all(attempt == sink.attempts[0] for attempt in sink.attempts)
    assert pipeline.healthy and pipeline.last_error is None
    assert pipeline.buffered == 0
    assert metric("relay_buffer_events") == buffered
    assert metric("relay_sink_write_failures_total", sink="memory") - failures == 3
    assert metric("relay_events_written_total", sink="memory") - written == 3
    assert metric("relay_event_latency_seconds_count") - latency == 3


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (10, 5.0), (10_000, 5.0)]:
        delays = [backoff_s(attempt, 0.1, 5.0) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


async def test_a_full_buffer_makes_submit_wait(start: PipelineFactory) -> None:
    pipeline, sink = start(buffer_max_events=3, batch_max_events=2)
    sink.gate.clear()
    for n in range(3):
        await pipeline.submit(make_event("a", n))
    fourth = asyncio.create_task(pipeline.submit(make_event("a", 3)))
    await wait_until(lambda: len(sink.attempts) == 1, what="a write in flight")
    for _ in range(20):
        await asyncio.sleep(0)
    assert not fourth.done()
    assert pipeline.buffered == 3  # two in flight, one pending: in flight still counts
    sink.gate.set()
    await fourth
    await pipeline.drain(1.0)
    assert [e.seq for e in sink.events] == [1, 2, 3, 4]


async def test_a_cancelled_wait_for_room_burns_no_seq(start: PipelineFactory) -> None:
    pipeline, sink = start(buffer_max_events=1)
    sink.gate.clear()
    await pipeline.submit(make_event("a", 0))
    waiting = asyncio.create_task(pipeline.submit(make_event("a", 1)))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    sink.gate.set()
    await pipeline.submit(make_event("a", 2))
    await pipeline.drain(1.0)
    assert [(e.seq, e.data["text"]) for e in sink.events] == [
        (1, "utterance 0"),
        (2, "utterance 2"),
    ]


async def test_dead_letters_wait_for_room_like_events_and_keep_their_order(
    start: PipelineFactory,
) -> None:
    dead = metric("relay_dead_letters_total", reason="oversized")
    pipeline, sink = start(buffer_max_events=2)
    sink.gate.clear()
    letter = DeadLetter(room="a", reason="oversized", received_at=time.time(), detail={"size": 1})
    await pipeline.submit(letter)
    await pipeline.submit(make_event("a", 0))
    waiting = asyncio.create_task(pipeline.submit(letter))  # the buffer is full: it waits
    await asyncio.sleep(0.05)
    assert not waiting.done()
    sink.gate.set()
    await waiting
    await pipeline.drain(1.0)
    assert sink.entries == [letter, sink.events[0], letter]
    assert metric("relay_dead_letters_total", reason="oversized") - dead == 2


async def test_drain_returns_what_it_could_not_write(start: PipelineFactory) -> None:
    timeouts = metric("relay_events_dropped_total", reason="shutdown_timeout")
    pipeline, sink = start(batch_max_events=2)
    sink.down = True
    for n in range(5):
        await pipeline.submit(make_event("a", n))
    await wait_until(lambda: len(sink.attempts) >= 2, what="failing writes")
    started = time.monotonic()
    assert await pipeline.drain(0.1) == 5
    assert time.monotonic() - started < 0.5
    assert metric("relay_events_dropped_total", reason="shutdown_timeout") - timeouts == 5
    assert pipeline.buffered == 0
    assert await pipeline.drain(0.1) == 5  # idempotent


async def test_drain_cuts_a_hanging_write_at_the_deadline() -> None:
    sink = MemorySink()
    sink.gate.clear()  # the write never returns
    pipeline = Pipeline(PipelineSettings(**FAST), [sink])
    task = asyncio.create_task(pipeline.run())
    await pipeline.submit(make_event("a", 0))
    await wait_until(lambda: len(sink.attempts) == 1, what="the hanging write")
    started = time.monotonic()
    assert await pipeline.drain(0.05) == 1
    assert 0.04 <= time.monotonic() - started < 0.5
    await task  # run() returns normally after the drain


async def test_intake_closes_when_drain_begins(start: PipelineFactory) -> None:
    shutdown = metric("relay_events_dropped_total", reason="shutdown")
    pipeline, sink = start(buffer_max_events=1)
    sink.gate.clear()
    await pipeline.submit(make_event("a", 0))
    waiting = asyncio.create_task(pipeline.submit(make_event("a", 1)))
    await asyncio.sleep(0)
    draining = asyncio.create_task(pipeline.drain(1.0))
    await waiting  # woken and refused, not left hanging
    assert not pipeline.accepting
    await pipeline.submit(make_event("a", 2))
    await pipeline.submit(DeadLetter("a", "oversized", time.time(), {}))
    sink.gate.set()
    assert await draining == 0
    assert [e.seq for e in sink.events] == [1]
    assert metric("relay_events_dropped_total", reason="shutdown") - shutdown == 3


async def test_drain_without_a_running_loop_flushes_itself() -> None:
    sink = MemorySink()
    pipeline = Pipeline(PipelineSettings(**FAST), [sink])
    await pipeline.submit(make_event("a", 0))
    assert await pipeline.drain(1.0) == 0
    assert len(sink.events) == 1
    await pipeline.run()  # a run() started late returns at once


async def test_cancelling_run_keeps_the_batch_for_the_next_run() -> None:
    sink = MemorySink()
    sink.gate.clear()
    pipeline = Pipeline(PipelineSettings(**FAST), [sink])
    task = asyncio.create_task(pipeline.run())
    await pipeline.submit(make_event("a", 0))
    await wait_until(lambda: len(sink.attempts) == 1, what="the write")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pipeline.buffered == 1
    sink.gate.set()
    await pipeline.submit(make_event("a", 1))
    assert await pipeline.drain(1.0) == 0
    assert [e.seq for e in sink.events] == [1, 2]


async def test_run_twice_at_once_is_an_error(start: PipelineFactory) -> None:
    pipeline, _ = start()
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await pipeline.run()


async def test_sinks_are_written_in_order_and_an_acked_sink_is_not_rewritten() -> None:
    first, second = MemorySink("first"), MemorySink("second")
    second.fail_next = 2
    pipeline = Pipeline(PipelineSettings(**FAST), [first, second])
    for n in range(3):
        await pipeline.submit(make_event("a", n))
    assert await pipeline.drain(1.0) == 0
    assert len(first.attempts) == 1
    assert len(second.attempts) == 3
    assert first.batches == second.batches


async def test_a_sink_bug_is_logged_and_retried(start: PipelineFactory) -> None:
    pipeline, sink = start()
    sink.error = KeyError("bug")
    sink.fail_next = 1
    with capture_logs() as logs:
        await pipeline.submit(make_event("a", 0))
        await wait_until(lambda: len(sink.events) == 1, what="the retried write")
    names = [entry["event"] for entry in logs]
    assert "sink_write_bug" in names
    assert "sink_write_recovered" in names


async def test_forget_room_restarts_its_seq(start: PipelineFactory) -> None:
    pipeline, sink = start()
    await pipeline.submit(make_event("a", 0))
    pipeline.forget_room("a")
    await pipeline.submit(make_event("a", 1))
    await pipeline.drain(1.0)
    assert [e.seq for e in sink.events] == [1, 1]


async def test_stdout_sink_writes_one_json_object_per_line() -> None:
    out = io.StringIO()
    pipeline = Pipeline(PipelineSettings(**FAST), [StdoutSink(out)])
    await pipeline.submit(make_event("a", 0))
    await pipeline.submit(DeadLetter("a", "oversized", time.time(), {"size": 9}))
    await pipeline.drain(1.0)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line.get("seq") for line in lines] == [1, None]
    assert lines[1]["reason"] == "oversized"


async def test_flushed_waits_until_what_was_accepted_is_written(start: PipelineFactory) -> None:
    pipeline, sink = start(batch_max_events=2)
    sink.gate.clear()  # the sink hangs
    for n in range(3):
        await pipeline.submit(make_event("a", n))
    assert not await pipeline.flushed(0.05)  # not written yet: times out
    waiting = asyncio.create_task(pipeline.flushed(5.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    sink.gate.set()
    assert await waiting
    assert len(sink.events) == 3
    assert await pipeline.flushed(0.01)  # nothing pending: at once


async def test_flushed_is_false_when_the_drain_gave_up(start: PipelineFactory) -> None:
    pipeline, sink = start()
    sink.down = True
    await pipeline.submit(make_event("a", 0))
    waiting = asyncio.create_task(pipeline.flushed(5.0))
    assert await pipeline.drain(0.05) == 1
    assert not await waiting
