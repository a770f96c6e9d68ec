"""Redis Cluster: 3 masters made with `redis-cli --cluster create`. The sink groups each
batch by the node that owns each key's slot; a slot resharded during writes answers
MOVED (or ASK while it migrates), followed at once; no accepted event is lost."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr
from redis.crc import key_slot

from relay.config import RedisSettings
from tests.fixtures.redis_server import ClusterSet
from tests.pipeline.support import wait_until
from tests.sinks.test_outage import QUICK_RETRY, ROOMS, Harness, dedupe_in_order

PREFIX = "c"


def cluster_settings(servers: ClusterSet) -> RedisSettings:
    return RedisSettings(
        url=SecretStr(servers.url), prefix=PREFIX, cluster=True, socket_timeout_s=2
    )


def room_slot(room: str) -> int:
    return key_slot(f"{PREFIX}:room:{{{room}}}".encode())


async def test_writes_spread_over_nodes_and_follow_a_resharded_slot(
    cluster_redis: ClusterSet,
) -> None:
    keys = [f"{PREFIX}:events", *(f"{PREFIX}:room:{{{room}}}" for room in ROOMS)]
    owners = {cluster_redis.owner(key_slot(key.encode())).port for key in keys}
    assert len(owners) >= 2  # the batch's commands go to more than one node
    harness = Harness(cluster_settings(cluster_redis), QUICK_RETRY)
    try:
        await _write_through_a_reshard(harness, cluster_redis)
    finally:
        await harness.aclose()


async def _write_through_a_reshard(harness: Harness, servers: ClusterSet) -> None:
    async with harness.traffic():
        await wait_until(lambda: harness.submitted["alpha"] >= 50, what="traffic before")
        slot = room_slot("alpha")
        before = servers.owner(slot).port
        target = await asyncio.to_thread(servers.move_slot, slot)
        assert servers.owner(slot).port == target.port != before
        during = harness.submitted["alpha"]
        await wait_until(lambda: harness.submitted["alpha"] >= during + 50, what="traffic after")
    assert await harness.pipeline.drain(10.0) == 0
    writer = harness.sink._cluster
    assert writer is not None and writer.redirects > 0  # MOVED (or ASK) seen and followed
    for room in ROOMS:
        seqs, duplicates = dedupe_in_order(await harness.room_events(room))
        assert seqs == list(range(1, harness.submitted[room] + 1)), room
        assert duplicates == 0, room  # the write guard, its keys in the stream's slot
    everything = await harness.reader.xrange(f"{PREFIX}:events")
    assert len({fields[b"id"] for _, fields in everything}) == sum(harness.submitted.values())
    assert len(everything) == sum(harness.submitted.values())
    assert harness.sink.guard == "script"
