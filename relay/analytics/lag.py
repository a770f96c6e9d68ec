"""How far the analytics consumer group is behind the events stream: read from Redis by
the service's loop every `REFRESH_S` and set on gauges, so a scrape reads the last
figures and never waits on Redis.

- `lag`: entries not yet delivered to the group, as `XINFO GROUPS` reports it (Redis 7+),
  at most the stream's length (trimmed past the group, Redis counts what was trimmed).
  Redis answers nil when it cannot count: entries deleted (XDEL) after the group's
  position, or a Redis before 7.0. Then it is 0 if no entry waits (that much is sure),
  else None (the gauge shows NaN); `behind_s` does not depend on it.
- `pending`: delivered to a consumer of the group and not yet acknowledged.
- `behind_s`: the age of the oldest entry not yet delivered, from its id (the
  millisecond time Redis stamped it with) to Redis' own clock (TIME, on the node holding
  the stream: the clock that stamped the id); 0 when none waits. Unlike the gap between
  the newest id and the group's last-delivered id, it keeps growing while a stopped
  consumer leaves an entry waiting, with or without new writes.

All of it is two to four short commands on the one node of the stream key (on a Cluster too:
XINFO GROUPS and XRANGE route by key, TIME is sent to that key's node).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from relay.redis_client import awaited

REFRESH_S = 5.0  # the service reads the figures this often (scrapes come every 15-30 s)


@dataclasses.dataclass(frozen=True)
class GroupLag:
    lag: int | None  # not yet delivered; None: Redis cannot count them (see above)
    pending: int  # delivered, not acknowledged
    behind_s: float  # age of the oldest entry not yet delivered; 0 when none


async def read_lag(redis: aioredis.Redis, stream: str, group: str) -> GroupLag | None:
    """The group's figures; None when the stream or the group does not exist (yet)."""
    try:
        groups: list[dict[str, Any]] = await awaited(redis.xinfo_groups(stream))
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    name = group.encode()
    info = next((g for g in groups if g["name"] == name), None)
    if info is None:
        return None
    last_delivered = info["last-delivered-id"].decode()
    waiting: list[tuple[bytes, Any]] = await awaited(
        redis.xrange(stream, min=f"({last_delivered}", max="+", count=1)
    )
    pending = int(info["pending"])
    if not waiting:
        return GroupLag(lag=0, pending=pending, behind_s=0.0)
    oldest_ms = int(waiting[0][0].split(b"-")[0])
    now_ms = await _server_ms(redis, stream)
    lag: int | None = None if info.get("lag") is None else int(info["lag"])
    if lag is not None:
        # Trimmed past the group's position, Redis still counts the entries trimmed
        # away (lost, not waiting): no more can wait than the stream holds.
        lag = min(lag, int(await awaited(redis.xlen(stream))))
    return GroupLag(lag=lag, pending=pending, behind_s=max(0, now_ms - oldest_ms) / 1000)


async def _server_ms(redis: aioredis.Redis, key: str) -> int:
    """Redis' clock in ms, on the node that holds `key` (TIME has no key: a Cluster client
    would send it to any node)."""
    if isinstance(redis, RedisCluster):
        node = redis.get_node_from_key(key)
        seconds, micros = await redis.time(target_nodes=node)
    else:
        seconds, micros = await awaited(redis.time())
    return int(seconds) * 1000 + int(micros) // 1000
