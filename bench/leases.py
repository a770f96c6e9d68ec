"""Benchmark: renewing a process's room leases, one round trip per room against one per
batch (`LeaseStore.renew` in a loop against `LeaseStore.renew_many`, what the assigner
and the analytics survey call once a renewal period).

For each R in `--rooms`: one LeaseStore acquires R leases on the Redis at `--redis-url`
(a private prefix, deleted afterwards), then renews them all `--rounds` times each way,
alternating; the median wall time of a round is reported. `--cluster` with a Cluster
node's URL measures the same on a Cluster (a pipeline per node).

    .venv/bin/python bench/leases.py [--rooms 100,1000] [--rounds 7] [--redis-url URL]

One line per R:
    leases rooms=R one_by_one_ms=X renew_many_ms=Y ratio=Z
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import SecretStr

from relay.config import RedisSettings
from relay.discovery.leases import LeaseStore
from relay.redis_client import create_redis

TTL_S = 60.0


async def timed(round_: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await round_()
    return (time.perf_counter() - started) * 1000


async def measure(store: LeaseStore, rooms: list[str], rounds: int) -> tuple[float, float]:
    """Median ms of a round renewing every room one by one, and in one renew_many."""

    async def one_by_one() -> None:
        for room in rooms:
            assert await store.renew(room, TTL_S, new_block=False) == 0

    async def batched() -> None:
        assert await store.renew_many([(room, False) for room in rooms], TTL_S) == [0] * len(rooms)

    singles, batches = [], []
    for _ in range(rounds):
        singles.append(await timed(one_by_one))
        batches.append(await timed(batched))
    return statistics.median(singles), statistics.median(batches)


async def main(args: argparse.Namespace) -> None:
    prefix = f"bench-leases-{uuid.uuid4().hex[:6]}"
    settings = RedisSettings(url=SecretStr(args.redis_url), prefix=prefix, cluster=args.cluster)
    redis = create_redis(settings)
    try:
        for count in args.rooms:
            store = LeaseStore(redis, settings, f"bench-{count}")
            rooms = [f"room-{count}-{n}" for n in range(count)]
            for room in rooms:
                assert await store.acquire(room, TTL_S) is not None
            single_ms, many_ms = await measure(store, rooms, args.rounds)
            print(
                f"leases rooms={count} one_by_one_ms={single_ms:.1f} "
                f"renew_many_ms={many_ms:.1f} ratio={single_ms / many_ms:.1f}",
                flush=True,
            )
    finally:
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--rooms", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000]
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--cluster", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
