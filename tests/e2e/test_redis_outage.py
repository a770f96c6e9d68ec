"""Redis shut down for five seconds while a relay observes six rooms at 300 events/s in
all through the dev server: the relay buffers what it accepts, writes it when Redis is
back, and every event sent is in its room's stream once, in seq order."""

from __future__ import annotations

import asyncio

import pytest

from relay.dev.launch import DevServer, RedisServer
from relay.dev.netns import NetNS
from tests.e2e.support import StartRelay, Streams, actor, unique
from tests.e2e.test_failover_gaps import lost_once_each

pytestmark = pytest.mark.e2e


async def test_a_redis_outage_at_300_events_per_s_loses_nothing(
    e2e_ns: NetNS,
    e2e_devserver: DevServer,
    e2e_redis: RedisServer,
    streams: Streams,
    start_relay: StartRelay,
) -> None:
    tag = unique("outage")
    rooms = [f"{tag}-{n}" for n in range(6)]
    relay = start_relay(rooms, RELAY_REDIS__SOCKET_TIMEOUT_S="1", RELAY_PIPELINE__RETRY_MAX_S="1")
    for room in rooms:
        await streams.wait_room(room, lambda events: bool(events), what="observer.joined")
    args = ["--room", ",".join(rooms), "--interval-s", "0.02"]  # 50 events/s a room
    async with actor(e2e_ns, e2e_devserver, "conversations", *args) as talk:
        assert await talk.next_line(30) == {"ready": True}
        await asyncio.sleep(2.0)
        await asyncio.to_thread(e2e_redis.stop)  # SHUTDOWN SAVE: what was written stays
        await asyncio.sleep(5.0)
        await asyncio.to_thread(e2e_redis.start)
        await asyncio.sleep(3.0)
    sent: dict[str, list[tuple[str, int]]] = (await talk.result())["sent"]
    assert sum(len(events) for events in sent.values()) >= 6 * 50 * 8
    assert relay.log_events("sink_write_failed")  # the outage was felt
    assert await lost_once_each(streams, rooms, sent, [], "") == 0
    for room in rooms:
        seqs = [e["seq"] for e in await streams.room_events(room)]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), room
