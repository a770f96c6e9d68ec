"""Benchmark: what a fault does to accepted events, counted from the streams.

    .venv/bin/python bench/faults.py [--rate 1000] [--rooms 10] [--outage-s 30]

`redis_down`: events submitted to the pipeline (RedisStreamsSink into a private
redis-server on loopback) at `--rate`/s over `--rooms` rooms; ten seconds in, Redis is shut
down for `--outage-s` and started again (on its saved data); the submissions go on
throughout and ten seconds after, then the pipeline drains. Run with the write guard's
script and with the guard off. One line per run:

    fault=redis_down guard=script accepted=N in_stream=N lost=N duplicates=N

lost = accepted, but no entry with its id in the all-events stream; duplicates = entries
beyond the first for one id. The other faults of the reliability issue (relay_kill9,
disk_full, sfu_restart, takeover_kill9) need the on-disk journal, not built yet: see
README.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from pydantic import SecretStr

from relay.config import PipelineSettings, RedisSettings
from relay.contract.event import Event
from relay.dev.launch import RedisServer
from relay.pipeline import Pipeline
from relay.redis_client import create_redis
from relay.sinks import RedisStreamsSink

WARM_S = 10.0  # traffic before the outage, and after it


def event(room: str, n: int) -> Event:
    data = {"role": "avatar", "text": f"utterance {n}", "segment_id": f"{room}-{n}"}
    return Event(room, "liveavatar", "transcript.final", data, time.time(), dedupe_key=f"{n}")


async def redis_down(args: argparse.Namespace, server: RedisServer, guard: str) -> str:
    prefix = f"faults-{uuid.uuid4().hex[:6]}"
    settings = RedisSettings(url=SecretStr(server.url), prefix=prefix, socket_timeout_s=1)
    settings = settings.model_copy(update={"write_guard": guard})
    limits = PipelineSettings(retry_max_s=1.0, buffer_max_events=200_000)
    pipeline = Pipeline(limits, [RedisStreamsSink(create_redis(settings), settings)])
    flusher = asyncio.create_task(pipeline.run())
    rooms = [f"room-{n}" for n in range(args.rooms)]
    accepted = 0
    outage = asyncio.create_task(take_redis_down(server, args.outage_s))
    started = time.monotonic()
    while time.monotonic() - started < 2 * WARM_S + args.outage_s:
        for room in rooms:  # one event per room a round: rate / rooms rounds a second
            await pipeline.submit(event(room, accepted))
            accepted += 1
        await asyncio.sleep(max(0.0, started + accepted / args.rate - time.monotonic()))
    await outage
    unwritten = await pipeline.drain(60)
    await flusher
    reader = create_redis(settings)
    ids = Counter[bytes]()
    last = "-"
    while entries := await reader.xrange(f"{prefix}:events", min=last, count=10_000):
        ids.update(fields[b"id"] for _, fields in entries)
        last = "(" + entries[-1][0].decode()
    await reader.aclose()
    in_stream = len(ids)
    duplicates = sum(ids.values()) - in_stream
    return (
        f"fault=redis_down guard={guard} accepted={accepted} in_stream={in_stream} "
        f"lost={accepted - in_stream} duplicates={duplicates} unwritten={unwritten}"
    )


async def take_redis_down(server: RedisServer, outage_s: float) -> None:
    await asyncio.sleep(WARM_S)
    await asyncio.to_thread(server.stop)  # SHUTDOWN SAVE: the written entries survive
    await asyncio.sleep(outage_s)
    await asyncio.to_thread(server.start)


async def main(args: argparse.Namespace) -> int:
    server = RedisServer(Path(args.workdir) if args.workdir else None)
    server.start()
    try:
        for guard in ("script", "off"):
            print(await redis_down(args, server, guard), flush=True)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s in all")
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--workdir", default="", help="redis-server's directory")
    sys.exit(asyncio.run(main(parser.parse_args())))
