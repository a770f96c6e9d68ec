"""`relay run` killed with SIGKILL at load, started again on its journal: every event it
accepted reaches the streams, once (the write guard skips what was written already)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from relay.dev.ingest_rig import IngestRelay, Load, count
from relay.dev.launch import RedisServer
from tests.fixtures.sockets import free_port
from tests.pipeline.support import wait_until


async def accepting(load: Load, items: int) -> None:
    await wait_until(lambda: len(load.accepted) >= items, 20, f"{items} accepted")


async def kill_with_writes_stalled(
    relay: IngestRelay, redis: aioredis.Redis, items: int, pause_ms: int
) -> Load:
    """Load the relay until `items` are accepted, pause Redis's writes (the buffer and the
    journal hold what comes now), go on for `items` more, SIGKILL it; the load it took."""
    load = Load(f"http://127.0.0.1:{relay.port}/v1/ingest", rooms=5, rate=500)
    stop = asyncio.Event()
    sender = asyncio.create_task(load.run(stop))
    try:
        await accepting(load, items)
        await redis.client_pause(pause_ms, all=False)  # writes only
        before = len(load.accepted)
        await accepting(load, before + items)
        relay.kill()
    finally:
        stop.set()
        await asyncio.gather(sender, return_exceptions=True)
        await redis.client_unpause()
    return load


async def test_kill9_with_writes_stalled_then_restart_loses_nothing(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    prefix = f"kill9-{uuid.uuid4().hex[:6]}"
    relay = IngestRelay(private_redis.url, prefix, free_port(), tmp_path / "journal")
    relay.start(tmp_path / "relay-1.log")
    redis = aioredis.Redis.from_url(private_redis.url)
    try:
        load = await kill_with_writes_stalled(relay, redis, 500, 4000)
        written_before = await count(redis, prefix, load.accepted)
        assert written_before.lost >= 500  # what was buffered when the relay died

        relay.start(tmp_path / "relay-2.log")  # the same journal
        (started,) = relay.log_events("relay_started")
        assert started["journal_replayed"] >= written_before.lost
        for _ in range(200):
            result = await count(redis, prefix, load.accepted)
            if result.lost == 0:
                break
            await asyncio.sleep(0.05)
        assert (result.lost, result.duplicates) == (0, 0), result
        assert result.in_stream == len(load.accepted) >= 1000
        assert relay.stop() == 0
        assert not list((tmp_path / "journal" / "worker-0").glob("*.seg"))  # drained empty
    finally:
        relay.stop()
        await redis.aclose()


async def test_without_the_journal_the_same_kill_loses_the_buffer(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    """The control: what the journal is for."""
    prefix = f"kill9-{uuid.uuid4().hex[:6]}"
    relay = IngestRelay(private_redis.url, prefix, free_port(), None)
    relay.start(tmp_path / "relay.log")
    redis = aioredis.Redis.from_url(private_redis.url)
    try:
        load = await kill_with_writes_stalled(relay, redis, 200, 3000)
        relay.start(tmp_path / "relay-2.log")
        await asyncio.sleep(1.0)
        assert (await count(redis, prefix, load.accepted)).lost >= 200
    finally:
        relay.stop()
        await redis.aclose()
