"""Benchmark: what the conversation analytics costs per event.

Conversations of `--rooms` rooms (LiveAvatar turns: speech start/end, three cumulative
partials, a final, each way; a session.stopped every `--session-events` events) as the
consumer reads them (entry bytes), applied in two ways in one run:

- assembly: parse, and per batch and room the state decoded, stepped, encoded again
  (the analytics' own work, Redis excluded): events per CPU second;
- service: the events in the events stream, `AnalyticsService`'s consumer group reading
  them (`relay analytics`'s path: XREADGROUP, per batch one WATCH/GET/MULTI/SET/XADDs/EXEC
  per room, XACK): events per CPU second of this process (`analytics_eps`), and per wall
  second (Redis's own CPU and the round trips included there).

    .venv/bin/python bench/analytics.py [--events 20000] [--rooms 10]

Run beside bench/pipeline.py (`relay_eps`) to compare with the relay's own cost. The last
line is machine-readable:
    analytics_eps=N assembly_eps=N service_wall_eps=N
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
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


async def bench_service(entries: list[bytes], url: str, batch: int) -> tuple[float, float]:
    """`relay analytics`'s path: the entries in the events stream, the service's consumer
    group reading, batching per room, one transaction per room and batch, the XACKs."""
    prefix = f"bench-analytics-{uuid.uuid4().hex[:6]}"
    settings = Settings(redis=RedisSettings(url=SecretStr(url), prefix=prefix))
    redis = create_redis(settings.redis)
    try:
        stream = keys.events_key(settings.redis)
        for first in range(0, len(entries), 1000):
            pipe = redis.pipeline(transaction=False)
            for raw in entries[first : first + 1000]:
                pipe.xadd(stream, {"event": raw})
            await pipe.execute()
        service = AnalyticsService(redis, settings, consumer_name="bench", batch=batch)
        cpu, wall = time.process_time(), time.perf_counter()
        task = asyncio.create_task(service.consumer.run())
        stats = service.consumer.stats
        for _ in range(1_000_000):  # polled: the consumer has no completion event
            if stats.handled + stats.duplicates >= len(entries):
                break
            await asyncio.sleep(0.005)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        service.stop()
        await task
        async for key in redis.scan_iter(match=f"{prefix}:*"):
            await redis.delete(key)
    finally:
        await redis.aclose()
    return len(entries) / cpu, len(entries) / wall


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    entries = conversation(args.rooms, args.events, args.session_events)
    assembly = max(bench_assembly(entries, args.batch) for _ in range(args.repeat))
    service_runs = [
        asyncio.run(bench_service(entries, args.redis_url, args.batch)) for _ in range(args.repeat)
    ]
    service_cpu = max(run[0] for run in service_runs)
    service_wall = max(run[1] for run in service_runs)
    print(f"{'events':<44}{args.events:>10}")
    print(f"{'assembly only, events per CPU second':<44}{assembly:>10.0f}")
    print(f"{'service, events per CPU second':<44}{service_cpu:>10.0f}")
    print(f"{'service, events per wall second':<44}{service_wall:>10.0f}")
    print(f"{'service, CPU per event (us)':<44}{1e6 / service_cpu:>10.1f}")
    print(
        f"\nanalytics_eps={service_cpu:.0f} assembly_eps={assembly:.0f} "
        f"service_wall_eps={service_wall:.0f}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--session-events", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="consumer batch (XREADGROUP)")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    # One info line per session summary would flood the table (and cost CPU here).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    main()
