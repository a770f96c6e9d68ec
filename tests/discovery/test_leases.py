"""Leases on a real Redis: one owner at a time, epochs and seq blocks that only go up, and
the pipeline's fencing of a room whose lease could not be renewed."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import orjson
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.crc import key_slot

from relay import keys
from relay.config import PipelineSettings, RedisSettings
from relay.contract.event import Event, Participant
from relay.discovery.leases import RENEW_BATCH, SEQ_BLOCK, LeaseStore
from relay.discovery.wanted import WantedSet, token_ttl_s
from relay.observer import RoomTarget
from relay.pipeline import Pipeline
from relay.redis_client import create_redis
from relay.sinks import StdoutSink
from tests.fixtures.redis_server import ClusterSet
from tests.support import dropped


async def test_one_owner_at_a_time_and_epochs_and_seq_blocks_go_up(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    a = LeaseStore(redis, redis_settings, "worker-a")
    b = LeaseStore(redis, redis_settings, "worker-b")
    first = await a.acquire("r", 5.0)
    assert first is not None and (first.epoch, first.seq_high, first.gap_ms) == (1, SEQ_BLOCK, None)
    assert await b.acquire("r", 5.0) is None
    assert await b.renew("r", 5.0, new_block=False) is None  # not b's
    assert await b.release("r") is False
    assert await a.renew("r", 5.0, new_block=False) == 0
    assert await a.renew("r", 5.0, new_block=True) == 2 * SEQ_BLOCK
    assert await a.release("r") is True
    second = await b.acquire("r", 0.2)
    assert second is not None and (second.epoch, second.seq_high) == (2, 3 * SEQ_BLOCK)
    assert second.gap_ms is not None and 0 <= second.gap_ms < 1000  # a renewed just now
    await asyncio.sleep(0.3)  # b's lease expired: a takes it without b releasing
    third = await a.acquire("r", 5.0)
    assert third is not None and (third.epoch, third.seq_high) == (3, 4 * SEQ_BLOCK)
    assert third.gap_ms is not None and third.gap_ms >= 250
    assert await b.renew("r", 5.0, new_block=False) is None


async def test_renew_many_renews_ours_over_several_batches_and_names_the_lost(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    a = LeaseStore(redis, redis_settings, "worker-a")
    b = LeaseStore(redis, redis_settings, "worker-b")
    rooms = [f"many-{n}" for n in range(2 * RENEW_BATCH + 50)]
    for n, room in enumerate(rooms):
        assert await (b if n % 7 == 0 else a).acquire(room, 0.5 if n % 7 else 30) is not None
    replies = await a.renew_many([(room, n == 1) for n, room in enumerate(rooms)], 30)
    expected = [None if n % 7 == 0 else 2 * SEQ_BLOCK if n == 1 else 0 for n in range(len(rooms))]
    assert replies == expected
    await asyncio.sleep(0.6)  # past the first TTL: only the renewed leases are left
    holders = await a.holders(rooms)
    assert holders == [b"worker-b" if n % 7 == 0 else b"worker-a" for n in range(len(rooms))]
    assert await a.renew_many([], 30) == []


async def test_the_pipeline_stamps_the_epoch_and_refuses_a_fenced_room() -> None:
    pipeline = Pipeline(PipelineSettings(), [StdoutSink(io.StringIO())])

    def event(n: int) -> Event:
        return Event("r", "relay", "event", {"n": n}, 1_700_000_000.0, Participant("p"))

    await pipeline.submit(event(1))
    plain = pipeline._pending[-1]
    pipeline.forget_room("r")
    pipeline.own_room("r", epoch=3, first_seq=2 * SEQ_BLOCK + 1, last_seq=3 * SEQ_BLOCK)
    await pipeline.submit(event(1))
    owned = pipeline._pending[-1]
    assert isinstance(plain, Event) and isinstance(owned, Event)
    assert owned.id == plain.id  # the epoch is not part of the id
    assert (owned.seq, owned.epoch) == (2 * SEQ_BLOCK + 1, 3)
    assert orjson.loads(owned.json_bytes())["epoch"] == 3
    assert "epoch" not in orjson.loads(plain.json_bytes())
    before = dropped("lease_lost")
    pipeline.fence_room("r")
    await pipeline.submit(event(2))
    assert dropped("lease_lost") == before + 1
    assert pipeline.last_seq("r") == 2 * SEQ_BLOCK + 1
    pipeline.own_room("r", epoch=4, first_seq=1, last_seq=SEQ_BLOCK * 4)
    await pipeline.submit(event(3))
    assert pipeline.last_seq("r") == 2 * SEQ_BLOCK + 2  # never back


async def test_wanted_tokens_expire_with_the_token(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"exp": time.time() + 1}).encode()).decode()
    token = f"x.{claims.rstrip('=')}.y"
    assert 0 < token_ttl_s(token) <= 1
    wanted = WantedSet(redis, redis_settings)
    assert await wanted.add(RoomTarget("t", url="ws://x", token=token), "control")
    assert not await wanted.add(RoomTarget("t"), "admin")
    entries = await wanted.entries()
    assert entries["t"]["source"] == "control" and "token" in entries["t"]
    assert token not in str(entries)
    assert await wanted.target("t", entries["t"]) == RoomTarget("t", url="ws://x", token=token)
    ttl_ms = await redis.pttl(f"{redis_settings.prefix}:token:{{t}}")
    assert 0 < ttl_ms <= 1000
    await asyncio.sleep(1.1)
    assert await wanted.target("t", entries["t"]) is None  # expired: cannot be joined


async def test_leases_on_a_redis_cluster_span_its_slots(cluster_redis: ClusterSet) -> None:
    """Each room's keys share a hash tag (one slot: the scripts' keys), different rooms live
    on different nodes: holders() reads them all (a plain MGET across slots is refused)."""
    settings = RedisSettings(url=SecretStr(cluster_redis.url), prefix="c", cluster=True)
    client = create_redis(settings)
    try:
        rooms = [f"room-{n}" for n in range(12)]
        slots = {key_slot(keys.lease_key(settings, room).encode()) for room in rooms}
        assert len({cluster_redis.owner(slot).port for slot in slots}) == 3
        a = LeaseStore(client, settings, "worker-a")
        b = LeaseStore(client, settings, "worker-b")
        for room in rooms[::2]:
            assert (await a.acquire(room, 30)) is not None
        assert await b.acquire(rooms[0], 30) is None
        assert await a.renew(rooms[0], 30, new_block=True) == 2 * SEQ_BLOCK
        renewed = await a.renew_many([(room, room == rooms[4]) for room in rooms], 30)
        assert renewed == [
            2 * SEQ_BLOCK if n == 4 else 0 if n % 2 == 0 else None for n in range(12)
        ]
        assert await a.release(rooms[2])
        holders = await b.holders(rooms)
        expected = [b"worker-a" if n % 2 == 0 and n != 2 else None for n in range(len(rooms))]
        assert holders == expected
    finally:
        await client.aclose()
