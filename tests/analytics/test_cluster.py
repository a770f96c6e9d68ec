"""The analytics on the 3-master Redis Cluster: a room's state, position, outbox, lease
and transcripts share its slot (the room's hash tag), every write outside it is guarded
by a key in the slot of the stream it goes to. Two processes, a room's slot resharded
while they run: byte for byte what one process writes."""

from __future__ import annotations

import asyncio

from redis.crc import key_slot

from relay import keys
from relay.config import RedisSettings, Settings
from relay.redis_client import create_redis
from tests.analytics.scaleout import assemble
from tests.fixtures.redis_server import ClusterSet
from tests.sinks.test_cluster import cluster_settings


def settings_of(servers: ClusterSet, prefix: str) -> Settings:
    redis = cluster_settings(servers).model_copy(update={"prefix": prefix})
    return Settings(redis=redis)


def test_a_rooms_keys_share_its_slot() -> None:
    s = RedisSettings(prefix="c")
    room = "la-1"
    slot = key_slot(keys.room_key(s, room).encode())
    for key in (
        keys.analytics_state_key(s, room),
        keys.analytics_pos_key(s, room),
        keys.analytics_outbox_key(s, room),
        keys.room_transcripts_key(s, room),
        keys.lease_key(s, room, keys.ANALYTICS_LEASES),
        keys.epoch_key(s, room, keys.ANALYTICS_LEASES),
    ):
        assert key_slot(key.encode()) == slot, key
    guard = keys.session_written_key(s, "s1")
    assert key_slot(guard.encode()) == key_slot(keys.sessions_key(s).encode())
    guard = keys.utterance_written_key(s, "ut_1")
    assert key_slot(guard.encode()) == key_slot(keys.transcripts_key(s).encode())


async def test_two_consumers_on_a_resharded_cluster_write_what_one_writes(
    cluster_redis: ClusterSet,
) -> None:
    one_settings = settings_of(cluster_redis, "c1")
    redis = create_redis(one_settings.redis)
    moved: list[int] = []

    async def reshard() -> None:
        slot = key_slot(keys.room_key(one_settings.redis, "la-1").encode())
        before = cluster_redis.owner(slot).port
        target = await asyncio.to_thread(cluster_redis.move_slot, slot)
        assert target.port != before
        moved.append(slot)

    try:
        one = await assemble(redis, one_settings, 1)
        assert len(one.summaries) == 4
        two = await assemble(redis, settings_of(cluster_redis, "c2"), 2, during=reshard)
    finally:
        await redis.aclose()
    assert moved  # resharded while the two ran
    assert two == one
