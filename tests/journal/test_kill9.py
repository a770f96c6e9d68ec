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


async def accepting(load: Load, until: asyncio.Event, items: int) -> None:
    await wait_until(lambda: len(load.accepted) >= items, 20, f"{items} accepted")


async def test_kill9_with_writes_stalled_then_restart_loses_nothing(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    prefix = f"kill9-{uuid.uuid4().hex[:6]}"
    port = free_port()
    relay = IngestRelay(private_redis.url, prefix, port, tmp_path / "journal")
    relay.start(tmp_path / "relay-1.log")
    load = Load(f"http://127.0.0.1:{port}/v1/ingest", rooms=5, rate=500)
    stop = asyncio.Event()
    redis = aioredis.Redis.from_url(private_redis.url)
    sender = asyncio.create_task(load.run(stop))
    try:
        await asyncio.wait_for(accepting(load, stop, 500), 20)
        # Redis stops taking writes: the relay's buffer (and journal) holds what comes now.
        await redis.client_pause(4000, all=False)  # writes only
        before = len(load.accepted)
        await asyncio.wait_for(accepting(load, stop, before + 500), 20)
        relay.kill()
        stop.set()
        await sender
        await redis.client_unpause()
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
        stop.set()
        await asyncio.gather(sender, return_exceptions=True)
        relay.stop()
        await redis.aclose()


async def test_without_the_journal_the_same_kill_loses_the_buffer(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    """The control: what the journal is for."""
    prefix = f"kill9-{uuid.uuid4().hex[:6]}"
    port = free_port()
    relay = IngestRelay(private_redis.url, prefix, port, None)
    relay.start(tmp_path / "relay.log")
    load = Load(f"http://127.0.0.1:{port}/v1/ingest", rooms=5, rate=500)
    stop = asyncio.Event()
    redis = aioredis.Redis.from_url(private_redis.url)
    sender = asyncio.create_task(load.run(stop))
    try:
        await asyncio.wait_for(accepting(load, stop, 200), 20)
        await redis.client_pause(3000, all=False)
        before = len(load.accepted)
        await asyncio.wait_for(accepting(load, stop, before + 200), 20)
        relay.kill()
        stop.set()
        await sender
        await redis.client_unpause()
        relay.start(tmp_path / "relay-2.log")
        await asyncio.sleep(1.0)
        assert (await count(redis, prefix, load.accepted)).lost >= 200
    finally:
        stop.set()
        await asyncio.gather(sender, return_exceptions=True)
        relay.stop()
        await redis.aclose()
