"""Benchmark: decoded events to Redis acknowledgement, relay vs raw redis-py.

Three ways to write the same entries (each event to two streams, `<prefix>:events` and
`<prefix>:room:{<room>}`, `XADD ... MAXLEN ~ n * kind room id event`), in one run, on the
same Redis:

- relay:        Pipeline + RedisStreamsSink, from decoded `Event`s (stamping, buffering,
                serialization, batching, metrics included);
- raw pipeline: redis-py `pipeline(transaction=False)` of the prebuilt entries, batches
                of the same size, no relay code (the JSON is serialized beforehand);
- awaited:      one awaited XADD per entry (two per event).

Then the CPU the relay's own code spends per event on the event-loop thread, Redis I/O
excluded: the same pipeline against a sink that builds the commands and sends nothing,
plus the decode of a LiveAvatar `agent-response` packet. Best of `--repeat` runs each.

    .venv/bin/python bench/pipeline.py [--events 20000] [--rooms 10] [--batch 500]
    .venv/bin/python bench/pipeline.py --cluster --redis-url redis://NODE:PORT

With `--cluster` the URL is a node of a Redis Cluster (`redis.cluster = true`): the sink
groups each batch by node, and the raw baseline is redis-py's cluster pipeline.

The relay writes with its write guard's script (`redis.write_guard=script`, what `auto`
picks on a Redis without XADD IDMP) and, interleaved, with the guard off; Redis's own CPU
(INFO cpu) is read around each run, and the guard keys' memory (MEMORY USAGE, sampled)
after it.

Last, the relay writer with the on-disk journal off, with fsync every 100 ms
(`journal.fsync=interval`, the default) and with fsync before submit() returns
(`always`): events/s and the process's CPU per event (all threads), interleaved.

Two machine-readable lines:
    relay_eps=N raw_pipeline_eps=N awaited_eps=N ratio=R   (R = raw / relay)
    guard_off_eps=N redis_us_script=X redis_us_off=X guard_bytes_per_event=N
    journal_off_eps=N journal_off_cpu_us=X journal_interval_eps=N ... journal_always_...
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gc
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog
from pydantic import SecretStr

from relay.config import JournalSettings, PipelineSettings, RedisSettings
from relay.contract.event import Entry, Event, Participant
from relay.contract.raw import DataItem, RoomContext
from relay.contract.sink import Rejected
from relay.decode import RoomDecoder
from relay.journal import Journal
from relay.pipeline import IdMinter, Pipeline
from relay.redis_client import create_redis, ping
from relay.sinks import RedisStreamsSink

Command = tuple[Any, ...]
AVATAR = Participant(identity="liveavatar-agent", sid="PA_avatar", kind="agent", role="avatar")
SENTENCE = "Sure, I can help with that. Your order shipped this morning and should arrive"


def agent_response(room: str, n: int, at: float) -> DataItem:
    """A LiveAvatar FULL-mode `avatar.transcription` packet, as the SDK delivers it."""
    payload = {
        "event_type": "avatar.transcription",
        "event_id": str(uuid.UUID(int=n)),
        "session_id": f"sess-{room}",
        "source_event_id": f"cmd-{n // 4}",
        "text": f"{SENTENCE} by Thursday ({n}).",
    }
    return DataItem(
        ctx=RoomContext(room=room, room_sid=f"RM_{room}"),
        sender=AVATAR,
        topic="agent-response",
        payload=json.dumps(payload).encode(),
        reliable=True,
        received_at=at,
    )


def make_items(count: int, rooms: int) -> list[DataItem]:
    now = time.time()
    return [agent_response(f"room-{n % rooms}", n, now + n * 1e-5) for n in range(count)]


def decode(items: Sequence[DataItem]) -> list[Event]:
    decoders: dict[str, RoomDecoder] = {}
    out: list[Event] = []
    for item in items:
        decoder = decoders.setdefault(item.ctx.room, RoomDecoder())
        out.extend(decoder.decode(item))
    return out


class NoNetworkSink(RedisStreamsSink):
    """Everything RedisStreamsSink does for a batch except the round trip."""

    async def write(self, batch: Sequence[Entry]) -> list[Rejected]:
        self.encode(batch)
        return []


def prebuilt_commands(events: Sequence[Event], settings: RedisSettings) -> list[list[Command]]:
    """The relay's XADDs per event, stamped and serialized ahead of time (the baselines)."""
    minter, seqs, sink = IdMinter(), dict[str, int](), NoNetworkSink(None, settings)  # type: ignore[arg-type]
    out = []
    for event in events:
        seqs[event.room] = seqs.get(event.room, 0) + 1
        stamped = event.stamped(minter.mint(event, *event.encoded_parts()), seqs[event.room])
        out.append(sink.commands([stamped]))
    return out


# -- the three writers ---------------------------------------------------------------


async def run_relay(
    events: Sequence[Event],
    redis: aioredis.Redis,
    settings: RedisSettings,
    batch: int,
    journal: JournalSettings | None = None,
) -> float:
    sink = RedisStreamsSink(redis, settings, close_client=False)
    return await _through_pipeline(events, sink, batch, journal)


async def _through_pipeline(
    events: Sequence[Event],
    sink: RedisStreamsSink,
    batch: int,
    journal_settings: JournalSettings | None = None,
) -> float:
    limits = PipelineSettings(batch_max_events=batch, buffer_max_events=max(len(events), 1))
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as directory:
        journal = None
        if journal_settings is not None:
            journal = Journal(journal_settings, Path(directory))
        pipeline = Pipeline(limits, [sink], journal=journal)
        flusher = asyncio.create_task(pipeline.run())
        started = time.perf_counter()
        for event in events:
            await pipeline.submit(event)
        unwritten = await pipeline.drain(120)
        elapsed = time.perf_counter() - started
        await flusher
        if journal is not None:
            await journal.close()
    assert unwritten == 0, f"{unwritten} events not written"
    return elapsed


JOURNAL_MODES: dict[str, JournalSettings | None] = {
    "off": None,
    "interval": JournalSettings(path="bench", fsync="interval"),
    "always": JournalSettings(path="bench", fsync="always"),
}


async def measure_journal(
    args: argparse.Namespace, events: Sequence[Event], settings: RedisSettings
) -> dict[str, tuple[float, float]]:
    """The relay writer (guard script) with the journal off, fsync interval, fsync always:
    events/s and process CPU per event (all threads: the fsyncs run in one), best of
    `--repeat`, interleaved."""
    redis = create_redis(settings)
    out: dict[str, tuple[float, float]] = {}
    try:
        for _ in range(args.repeat):
            for mode, journal in JOURNAL_MODES.items():
                cpu = time.process_time()
                elapsed = await run_relay(events, redis, settings, args.batch, journal)
                cpu_us = (time.process_time() - cpu) / len(events) * 1e6
                await delete_prefix(redis, settings.prefix)
                eps, best_cpu = out.get(mode, (0.0, float("inf")))
                out[mode] = (max(eps, len(events) / elapsed), min(best_cpu, cpu_us))
    finally:
        await redis.aclose()
    return out


async def run_raw_pipeline(
    commands: Sequence[Sequence[Command]], redis: aioredis.Redis, batch: int
) -> float:
    started = time.perf_counter()
    for start in range(0, len(commands), batch):
        pipe = redis.pipeline(transaction=False)
        for per_event in commands[start : start + batch]:
            for command in per_event:
                pipe.execute_command(*command)
        await pipe.execute()
    return time.perf_counter() - started


async def run_awaited(commands: Sequence[Sequence[Command]], redis: aioredis.Redis) -> float:
    execute: Callable[..., Awaitable[Any]] = redis.execute_command
    started = time.perf_counter()
    for per_event in commands:
        for command in per_event:
            await execute(*command)
    return time.perf_counter() - started


# -- CPU on the loop thread ------------------------------------------------------------


async def relay_cpu_per_event_us(
    events: Sequence[Event], settings: RedisSettings, batch: int
) -> float:
    started = time.thread_time()
    await _through_pipeline(events, NoNetworkSink(None, settings), batch)  # type: ignore[arg-type]
    return (time.thread_time() - started) / len(events) * 1e6


def decode_cpu_per_event_us(items: Sequence[DataItem]) -> float:
    started = time.thread_time()
    events = decode(items)
    return (time.thread_time() - started) / len(events) * 1e6


def breakdown_us(events: Sequence[Event], settings: RedisSettings) -> dict[str, float]:
    """Per-event CPU of the relay's steps, one at a time (a guide to where time goes)."""
    minter, sink = IdMinter(), NoNetworkSink(None, settings)  # type: ignore[arg-type]
    stamped = [e.stamped(minter.mint(e, *e.encoded_parts()), 1) for e in events]
    content = [e.stamped("", 0) for e in events]  # dedupe_key kept: see the hash line below
    hashed = [
        Event(e.room, e.protocol, e.kind, e.data, e.received_at, e.participant, e.source)
        for e in events
    ]
    steps: dict[str, Callable[[], object]] = {
        "id: dedupe_key hash": lambda: [minter.mint(e, *e.encoded_parts()) for e in content],
        "id: content hash (no dedupe_key)": lambda: [
            IdMinter().mint(e, *e.encoded_parts()) for e in hashed
        ],
        "stamp (Event.stamped)": lambda: [e.stamped("x", 1) for e in events],
        "serialize (Event.to_json)": lambda: [e.to_json() for e in stamped],
        "sink: 2 XADDs encoded (RESP)": lambda: sink.encode(stamped),
    }
    out = {}
    for name, step in steps.items():
        runs = []
        for _ in range(5):
            started = time.thread_time()
            step()
            runs.append(time.thread_time() - started)
        out[name] = min(runs) / len(events) * 1e6
    return out


# -- the run -----------------------------------------------------------------------


async def delete_prefix(redis: aioredis.Redis, prefix: str) -> None:
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        await redis.unlink(key)


async def redis_cpu_s(redis: aioredis.Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


@dataclasses.dataclass
class GuardCost:
    """The relay writer with the write guard's script and without: its speed, and what
    it costs Redis (CPU per event, memory per event while the guards live)."""

    off_s: float = float("inf")
    redis_us: dict[str, float] = dataclasses.field(default_factory=dict)
    guard_bytes: float = 0.0  # the guard keys' memory per event, while they live


async def run_relay_measured(
    events: Sequence[Event], redis: aioredis.Redis, settings: RedisSettings, batch: int,
    cost: GuardCost,
) -> float:  # fmt: skip
    cpu = await redis_cpu_s(redis)
    elapsed = await run_relay(events, redis, settings, batch)
    used_us = (await redis_cpu_s(redis) - cpu) / len(events) * 1e6
    mode = settings.write_guard
    cost.redis_us[mode] = min(cost.redis_us.get(mode, float("inf")), used_us)
    if mode == "script":
        cost.guard_bytes = await guard_bytes_per_event(redis, settings.prefix, len(events))
    return elapsed


async def guard_bytes_per_event(redis: aioredis.Redis, prefix: str, events: int) -> float:
    """MEMORY USAGE of the guard keys (sampled), per event (two guards an event)."""
    sample: list[int] = []
    count = 0
    async for key in redis.scan_iter(match=f"{prefix}:dedupe:*", count=1000):
        count += 1
        if len(sample) < 500:
            sample.append(int(await redis.memory_usage(key, samples=0) or 0))
    return sum(sample) / max(1, len(sample)) * count / events


async def measure_writes(
    args: argparse.Namespace, events: Sequence[Event], settings: RedisSettings, cost: GuardCost
) -> tuple[float, float, float, int]:
    """Seconds for the relay, the raw pipeline and the awaited XADDs (and the latter's N);
    the relay without its write guard into `cost`."""
    commands = prebuilt_commands(events, settings)
    if settings.cluster:  # redis-py's cluster client looks the name up as a str
        commands = [[(c[0].decode(), *c[1:]) for c in per_event] for per_event in commands]
    awaited = commands[: args.awaited_events]
    redis = create_redis(settings)
    await ping(redis)
    cleanup = functools.partial(delete_prefix, redis, settings.prefix)
    relay_s = raw_s = float("inf")
    try:
        # Interleaved, best of each: load from other processes hits both alike.
        unguarded = settings.model_copy(update={"write_guard": "off"})
        for _ in range(args.repeat):
            run = await run_relay_measured(events, redis, settings, args.batch, cost)
            relay_s = min(relay_s, run)
            await cleanup()
            raw_s = min(raw_s, await run_raw_pipeline(commands, redis, args.batch))
            await cleanup()
            run = await run_relay_measured(events, redis, unguarded, args.batch, cost)
            cost.off_s = min(cost.off_s, run)
            await cleanup()
        awaited_s = await run_awaited(awaited, redis)
    finally:
        await cleanup()
        await redis.aclose()
    return relay_s, raw_s, awaited_s, len(awaited)


async def main(args: argparse.Namespace) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings = RedisSettings(
        url=SecretStr(args.redis_url), prefix=prefix, cluster=args.cluster, write_guard="script"
    )
    items = make_items(args.events, args.rooms)
    events = decode(items)
    assert len(events) == args.events and all(e.dedupe_key for e in events)
    # The inputs live for the whole run: keep the collector from rescanning them in every
    # writer's measurement (a process that relays does not hold 20,000 events at once).
    gc.collect()
    gc.freeze()
    cost = GuardCost()
    relay_s, raw_s, awaited_s, awaited_n = await measure_writes(args, events, settings, cost)
    cpu_us = min(
        [await relay_cpu_per_event_us(events, settings, args.batch) for _ in range(args.repeat)]
    )
    decode_us = min(decode_cpu_per_event_us(items) for _ in range(args.repeat))
    steps = breakdown_us(events, settings)
    report(args, relay_s, raw_s, awaited_s, awaited_n, cpu_us, decode_us, steps, cost)
    journal = await measure_journal(args, events, settings)
    print(f"\n{'relay with the journal (guard script)':<44}{'events/s':>12}{'CPU us/ev':>11}")
    for mode, (eps, cpu_us_mode) in journal.items():
        print(f"{'  journal ' + mode:<44}{eps:>12,.0f}{cpu_us_mode:>11.1f}")
    print(" ".join(f"journal_{m}_eps={eps:.0f} journal_{m}_cpu_us={c:.1f}"
                   for m, (eps, c) in journal.items()))  # fmt: skip


def report(
    args: argparse.Namespace,
    relay_s: float,
    raw_s: float,
    awaited_s: float,
    awaited_n: int,
    cpu_us: float,
    decode_us: float,
    steps: dict[str, float],
    cost: GuardCost,
) -> None:
    relay_eps, raw_eps, awaited_eps = (
        args.events / relay_s,
        args.events / raw_s,
        awaited_n / awaited_s,
    )
    print(
        f"{args.events} events over {args.rooms} rooms, batches of {args.batch}, "
        f"2 stream entries per event, best of {args.repeat}; Redis {redact(args.redis_url)}"
        + (" (Cluster)" if args.cluster else "")
    )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    print(f"{'writer':<44}{'events/s':>12}{'us/event':>11}")
    guard_off_eps = args.events / cost.off_s
    rows = [
        ("relay: Pipeline + RedisStreamsSink", relay_eps),
        ("relay, write guard off", guard_off_eps),
        ("raw redis-py pipeline, same batches", raw_eps),
        (f"one awaited XADD per entry ({awaited_n} events)", awaited_eps),
    ]
    for name, eps in rows:
        print(f"{name:<44}{eps:>12,.0f}{1e6 / eps:>11.1f}")
    print(f"\n{'relay CPU on the loop thread, no Redis I/O':<44}{'us/event':>23}")
    print(f"{'  pipeline + sink commands (all of it)':<44}{cpu_us:>23.1f}")
    print(f"{'  decode: LiveAvatar agent-response packet':<44}{decode_us:>23.1f}")
    print(f"{'  total: decoded packet to commands queued':<44}{cpu_us + decode_us:>23.1f}")
    print("  of which, measured one step at a time:")
    for name, us in steps.items():
        print(f"    {name:<40}{us:>23.1f}")
    print(f"\n{'Redis CPU per event (INFO cpu)':<44}{'us/event':>23}")
    for mode in ("script", "off"):
        print(f"{'  write guard ' + mode:<44}{cost.redis_us[mode]:>23.1f}")
    print(f"{'guard keys per event (MEMORY USAGE), bytes':<44}{cost.guard_bytes:>23.0f}")
    print(
        f"\nrelay_eps={relay_eps:.0f} raw_pipeline_eps={raw_eps:.0f} "
        f"awaited_eps={awaited_eps:.0f} ratio={raw_eps / relay_eps:.2f} "
        f"guard_off_eps={guard_off_eps:.0f} "
        f"redis_us_script={cost.redis_us['script']:.1f} redis_us_off={cost.redis_us['off']:.1f} "
        f"guard_bytes_per_event={cost.guard_bytes:.0f}"
    )


def redact(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--batch", type=int, default=500, help="events per batch")
    parser.add_argument("--repeat", type=int, default=5, help="runs per writer, best kept")
    parser.add_argument(
        "--awaited-events", type=int, default=20_000, help="events for the awaited baseline"
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    )
    parser.add_argument("--cluster", action="store_true", help="--redis-url is a Cluster node")
    return parser.parse_args(argv)


if __name__ == "__main__":
    # The pipeline logs each drain at info; the table is the output here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main(parse_args()))
