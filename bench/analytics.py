"""Benchmark: what the conversation analytics costs per event.

Conversations of `--rooms` rooms (LiveAvatar turns: speech start/end, three cumulative
partials, a final, each way; a session.stopped every `--session-events` events) as the
consumer reads them (entry bytes), applied in two ways in one run:

- assembly: parse, and per batch and room the state decoded, stepped, encoded again
  (the analytics' own work, Redis excluded): events per CPU second;
- consumers: the events in the events stream and the rooms' streams (as the relay writes
  them, the rooms already registered as the group's routing does), then N `relay
  analytics` services, each in a process of its own, sharing the rooms by their leases
  (`relay analytics`'s path: per room and step of 100 entries an XRANGE, the fenced
  room script, the outbox's guarded writes): events per wall second from the start until
  every room's position is at its stream's end (`analytics_eps`), for each N of
  `--consumers` in one run, and the CPU per event of all the processes together.

    .venv/bin/python bench/analytics.py [--events 20000] [--rooms 10] [--consumers 1,2]

Run beside bench/pipeline.py (`relay_eps`) to compare with the relay's own cost. The last
lines are machine-readable, one per count:
    consumers=N analytics_eps=N
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
from pydantic import SecretStr

from relay import keys
from relay.analytics.model import AnalyticsConfig
from relay.analytics.service import AnalyticsService
from relay.analytics.step import on_events
from relay.config import RedisSettings, Settings
from relay.contract.event import format_ts
from relay.redis_client import create_redis

T0 = 1_763_732_700.0
AGENT = {"identity": "liveavatar-agent-x", "sid": "PA_a", "kind": "agent", "role": "agent"}


def conversation(rooms: int, count: int, session_events: int) -> list[bytes]:
    """`count` events (as entry bytes), rooms interleaved, 50 ms apart within a room."""
    out: list[bytes] = []
    seq = dict.fromkeys(range(rooms), 0)
    while len(out) < count:
        for r in range(rooms):
            seq[r] += 1
            out.append(orjson.dumps(_event(r, seq[r], session_events)))
    return out[:count]


def _event(room: int, seq: int, session_events: int) -> dict[str, Any]:
    n = seq % session_events
    session = seq // session_events
    step = n % 14
    role = "user" if step < 7 else "avatar"
    segment = f"seg-{session}-{n // 7}"
    kinds = ["speech.started"] + ["transcript.partial"] * 3 + ["speech.ended"]
    kinds += ["transcript.final", "agent.state"]
    kind = "session.stopped" if n == session_events - 1 else kinds[step % 7]
    data: dict[str, Any] = {"role": role}
    if kind.startswith("transcript"):
        words = ["one", "two", "three", "four", "five", "six", "seven"][: (step % 7) + 2]
        data |= {"text": " ".join(words), "segment_id": segment, "mode": "cumulative"}
    elif kind == "agent.state":
        data = {"state": "listening", "previous": "speaking"}
    return {
        "v": 1,
        "id": f"ev_{uuid.uuid4().hex[:20]}",
        "seq": seq,
        "ts": format_ts(T0 + seq * 0.05 + 0.0004),
        "room": f"bench-{room}",
        "session_id": f"s-{room}-{session}",
        "participant": AGENT,
        "protocol": "liveavatar",
        "kind": kind,
        "data": data,
        "source": {"topic": "agent-response"},
    }


def bench_assembly(entries: list[bytes], batch: int) -> float:
    """Events per CPU second of the assembly alone, grouped as the service groups them:
    per consumer batch, per room, the state decoded once, stepped, encoded once."""
    config = AnalyticsConfig()
    states: dict[str, bytes] = {}
    started = time.process_time()
    for first in range(0, len(entries), batch):
        rooms: dict[str, list[dict[str, Any]]] = {}
        for raw in entries[first : first + batch]:
            event = json.loads(raw)
            rooms.setdefault(event["room"], []).append(event)
        for room, events in rooms.items():
            held = states.get(room)
            step = on_events(json.loads(held) if held else None, events, config)
            if step.state is not None:
                states[room] = orjson.dumps(step.state)
    return len(entries) / (time.process_time() - started)


def load_streams(entries: list[bytes], url: str, prefix: str) -> list[str]:
    """The entries in the events stream and their rooms' streams, as the relay writes
    them, and the rooms registered (as the group's routing does); the rooms."""
    settings = RedisSettings(url=SecretStr(url), prefix=prefix)

    async def load() -> list[str]:
        redis = create_redis(settings)
        rooms: dict[str, int] = {}
        try:
            stream = keys.events_key(settings)
            for first in range(0, len(entries), 1000):
                pipe = redis.pipeline(transaction=False)
                for raw in entries[first : first + 1000]:
                    room = orjson.loads(raw)["room"]
                    rooms[room] = int(time.time() * 1000)
                    pipe.xadd(stream, {"event": raw})
                    pipe.xadd(keys.room_key(settings, room), {"event": raw})
                await pipe.execute()
            await redis.zadd(keys.analytics_rooms_key(settings), rooms)
        finally:
            await redis.aclose()
        return list(rooms)

    return asyncio.run(load())


def consumer_process(url: str, prefix: str, name: str, go: Any, done: Any, out: Any) -> None:
    """One `relay analytics` (the service, in a process of its own) until `done`; its
    CPU seconds and events applied go to `out`."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    async def run() -> None:
        settings = Settings(redis=RedisSettings(url=SecretStr(url), prefix=prefix))
        redis = create_redis(settings.redis)
        service = AnalyticsService(redis, settings, consumer_name=name, lease_ttl_s=2.0)
        await service.rooms.survey()  # counted before the start: the shares are right at once
        await asyncio.to_thread(go.wait)
        cpu = time.process_time()
        task = asyncio.create_task(service.run())
        await asyncio.to_thread(done.wait)
        cpu = time.process_time() - cpu
        service.stop()
        await task
        await redis.aclose()
        out.put((name, cpu, service.applied))

    asyncio.run(run())


def bench_consumers(entries: list[bytes], url: str, count: int) -> tuple[float, float]:
    """`count` analytics processes over the same streams: events per wall second until
    every room is applied, and the CPU microseconds per event (all processes)."""
    prefix = f"bench-analytics-{uuid.uuid4().hex[:6]}"
    rooms = load_streams(entries, url, prefix)
    ctx = multiprocessing.get_context("spawn")
    go, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=consumer_process, args=(url, prefix, f"c{i}", go, done, out))
        for i in range(count)
    ]
    for proc in procs:
        proc.start()
    settings = RedisSettings(url=SecretStr(url), prefix=prefix)

    async def wait_registered() -> None:
        redis = create_redis(settings)
        for _ in range(100_000):  # polled: the processes announce themselves in Redis
            if int(await redis.zcard(keys.analytics_workers_key(settings))) >= count:
                break
            await asyncio.sleep(0.01)
        await redis.aclose()

    async def wait_applied() -> float:
        redis = create_redis(settings)
        last = {}
        for room in rooms:
            found: Any = await redis.xrevrange(keys.room_key(settings, room), count=1)
            last[room] = found[0][0]
        started = time.perf_counter()
        go.set()
        for _ in range(10_000_000):  # polled: the positions are in Redis
            positions = await redis.mget([keys.analytics_pos_key(settings, r) for r in rooms])
            if all(pos == last[r] for pos, r in zip(positions, rooms, strict=True)):
                break
            await asyncio.sleep(0.005)
        wall = time.perf_counter() - started
        await redis.aclose()
        return wall

    asyncio.run(wait_registered())
    wall = asyncio.run(wait_applied())
    done.set()
    results = [out.get(timeout=30) for _ in procs]
    for proc in procs:  # the processes we started
        proc.join(30)
    asyncio.run(_clean(url, prefix))
    cpu = sum(r[1] for r in results)
    assert sum(r[2] for r in results) == len(entries), results
    return len(entries) / wall, 1e6 * cpu / len(entries)


async def _clean(url: str, prefix: str) -> None:
    redis = create_redis(RedisSettings(url=SecretStr(url), prefix=prefix))
    async for key in redis.scan_iter(match=f"{prefix}:*"):
        await redis.delete(key)
    await redis.aclose()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.2f}, CPUs: {os.cpu_count()}")
    entries = conversation(args.rooms, args.events, args.session_events)
    assembly = max(bench_assembly(entries, args.batch) for _ in range(args.repeat))
    print(f"{'events, rooms':<44}{args.events:>10} {args.rooms}")
    print(f"{'assembly only, events per CPU second':<44}{assembly:>10.0f}")
    lines = []
    for count in args.consumers:
        runs = [bench_consumers(entries, args.redis_url, count) for _ in range(args.repeat)]
        eps, cpu_us = max(runs)
        print(f"{f'{count} consumers, events per wall second':<44}{eps:>10.0f}")
        print(f"{f'{count} consumers, CPU per event, all (us)':<44}{cpu_us:>10.1f}")
        lines.append(f"consumers={count} analytics_eps={eps:.0f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print()
    print("\n".join(lines))
    print(f"assembly_eps={assembly:.0f}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--session-events", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="a room's entries per step")
    parser.add_argument(
        "--consumers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2],
        help="analytics processes per run, comma separated (1,2)",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    # One info line per session summary would flood the table (and cost CPU here).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    main()
