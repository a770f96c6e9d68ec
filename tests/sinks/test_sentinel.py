"""Redis Sentinel: the sink finds the master through the sentinel, and the master's crash
during writes loses no accepted event: with WAIT 1 a batch is acknowledged once a replica
has it, the sentinel promotes the replica that has the most, and the writes that failed
meanwhile are retried on the new master."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from relay.config import RedisSettings
from tests.fixtures.redis_server import SENTINEL_SERVICE, SentinelSet
from tests.pipeline.support import wait_until
from tests.sinks.test_outage import QUICK_RETRY, ROOMS, Harness, dedupe_in_order
from tests.support import metric


def sentinel_settings(servers: SentinelSet) -> RedisSettings:
    return RedisSettings(
        url=SecretStr("redis://sentinel-decides/0"),  # the host comes from the sentinel
        prefix="sentinel",
        sentinels=(servers.sentinel_address,),
        sentinel_service=SENTINEL_SERVICE,
        wait_replicas=1,
        wait_timeout_s=0.5,
        socket_timeout_s=1,
    )


async def test_the_master_failing_during_writes_loses_no_accepted_event(
    sentinel_redis: SentinelSet,
) -> None:
    harness = Harness(sentinel_settings(sentinel_redis), QUICK_RETRY)
    try:
        await _write_through_a_failover(harness, sentinel_redis)
    finally:
        await harness.aclose()


async def _write_through_a_failover(harness: Harness, sentinel_redis: SentinelSet) -> None:
    failures = metric("relay_sink_write_failures_total", sink="redis")
    async with harness.traffic():
        await wait_until(lambda: harness.submitted["gamma"] >= 50, what="traffic before")
        new_master = await asyncio.to_thread(sentinel_redis.fail_master)
        assert new_master in [replica.port for replica in sentinel_redis.replicas]
        during = harness.submitted["gamma"]
        await wait_until(lambda: harness.submitted["gamma"] >= during + 50, what="traffic after")
        await wait_until(lambda: harness.pipeline.healthy, what="writes on the new master")
    assert await harness.pipeline.drain(10.0) == 0
    # The failover was seen by the sink (writes failed and were retried), not slept through.
    assert metric("relay_sink_write_failures_total", sink="redis") > failures
    for room in ROOMS:  # read from the new master (the reader follows the sentinel too)
        seqs, _ = dedupe_in_order(await harness.room_events(room))
        assert seqs == list(range(1, harness.submitted[room] + 1)), room
