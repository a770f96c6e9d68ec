"""Benchmark: what one `GET /v1/rooms` with discovery on costs as the wanted set grows.

Fills a private key prefix of a Redis with `--rooms` wanted rooms (each count in turn),
two thirds of them leased to three workers, and times the deployment view
(relay/discovery/deployment.py) for the first page of `--limit` rooms: wall time and
the answer's size as JSON. The keys are deleted at the end.

    .venv/bin/python bench/rooms_view.py [--rooms 1000,10000,50000] [--limit 1000]

Needs a Redis (`--redis-url`, default `redis://127.0.0.1:6379`). Ends with one
`rooms=N limit=L p50_ms=X max_ms=Y body_kb=Z` per count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid

import orjson
import redis.asyncio as aioredis
from pydantic import SecretStr

from relay import keys
from relay.config import RedisSettings
from relay.discovery.deployment import DeploymentView
from relay.discovery.wanted import WantedSet

WORKERS = ("worker-a", "worker-b", "worker-c")
TRIALS = 5


async def fill(redis: aioredis.Redis, settings: RedisSettings, rooms: int) -> None:
    entry = orjson.dumps({"source": "reconcile", "since": time.time()}).decode()
    names = [f"room-{n:06d}" for n in range(rooms)]
    for first in range(0, rooms, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for n, room in enumerate(names[first : first + 1000], start=first):
                pipe.hset(keys.wanted_key(settings), room, entry)
                if n % 3:
                    pipe.set(keys.lease_key(settings, room), WORKERS[n % 3], px=600_000)
                    pipe.set(keys.epoch_key(settings, room), 1 + n % 5)
            await pipe.execute()
    expiry = (time.time() + 600) * 1000
    await redis.zadd(keys.workers_key(settings), dict.fromkeys(WORKERS, expiry))


async def clean(redis: aioredis.Redis, prefix: str) -> None:
    stale = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    for first in range(0, len(stale), 1000):
        await redis.delete(*stale[first : first + 1000])


async def measure(url: str, counts: list[int], limit: int) -> None:
    redis = aioredis.Redis.from_url(url)
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    print(f"{'rooms':>8} {'limit':>6} {'p50 ms':>8} {'max ms':>8} {'body kB':>8}")
    lines = []
    try:
        for count in counts:
            prefix = f"bench-view-{uuid.uuid4().hex[:8]}"
            settings = RedisSettings(url=SecretStr(url), prefix=prefix)
            try:
                await fill(redis, settings, count)
                view = DeploymentView(redis, settings, WantedSet(redis, settings), WORKERS[0])
                took, size = [], 0
                for _ in range(TRIALS):
                    started = time.perf_counter()
                    body = await view.describe([], limit=limit, cursor=None)
                    took.append((time.perf_counter() - started) * 1000)
                    size = len(json.dumps(body))
                p50, worst = statistics.median(took), max(took)
                print(f"{count:>8} {limit:>6} {p50:>8.1f} {worst:>8.1f} {size / 1024:>8.0f}")
                lines.append(
                    f"rooms={count} limit={limit} p50_ms={p50:.1f} max_ms={worst:.1f} "
                    f"body_kb={size / 1024:.0f}"
                )
            finally:
                await clean(redis, prefix)
    finally:
        await redis.aclose()
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", default="1000,10000,50000")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    args = parser.parse_args()
    counts = [int(count) for count in args.rooms.split(",")]
    asyncio.run(measure(args.redis_url, counts, args.limit))


if __name__ == "__main__":
    main()
