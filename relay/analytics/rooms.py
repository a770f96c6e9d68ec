"""Which analytics process assembles which room: the relay's leases (relay.discovery.leases,
their own kind of key, `keys.ANALYTICS_LEASES`), shared by count like the relay's
assigner: each live process takes up to ceil(rooms / processes) and hands back what is
above its share, so scaling the Deployment moves rooms without a restart.

Registries, all in Redis: the rooms with events (`analytics:rooms`, scored by their last
event, ms), the live processes (`analytics:workers`, scored by when their registration
expires), and per process the rooms another process saw new events of
(`analytics:dirty:<owner>`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import redis.asyncio as aioredis

from relay import keys
from relay.analytics.assemble import Doc, State
from relay.config import RedisSettings
from relay.discovery.leases import LeaseStore
from relay.redis_client import awaited

# KEYS: rooms. ARGV: room, cutoff ms. Forget a room only if no event came since the cutoff.
_FORGET = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


@dataclasses.dataclass(slots=True)
class Owned:
    """A room this process holds the analytics lease of, with its state as last written."""

    room: str
    epoch: int
    state: State | None
    pos: str
    outbox: Doc | None  # written, not yet known to be delivered
    stale: bool = False  # a write's reply was lost: Redis may hold more than this copy


class Rooms:
    def __init__(
        self, redis: aioredis.Redis, settings: RedisSettings, owner: str, ttl_s: float
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.owner = owner
        self.ttl_s = ttl_s
        self.leases = LeaseStore(redis, settings, owner, keys.ANALYTICS_LEASES)
        self.share = 0  # from the last survey
        self._forget = redis.register_script(_FORGET)

    async def seen(self, last_ms: dict[str, int]) -> None:
        """Rooms with events, from the group's entries (their ids' times)."""
        await self.redis.zadd(keys.analytics_rooms_key(self.settings), last_ms, gt=True)

    async def survey(self) -> tuple[list[str], int]:
        """Register this process; every room known, and the share of each process."""
        s = self.settings
        now_ms = int(time.time() * 1000)
        pipe: Any
        async with self.redis.pipeline(transaction=False) as pipe:
            workers = keys.analytics_workers_key(s)
            pipe.zadd(workers, {self.owner: now_ms + int(self.ttl_s * 1000)})
            pipe.zremrangebyscore(workers, "-inf", now_ms)
            pipe.zcard(workers)
            pipe.zrange(keys.analytics_rooms_key(s), 0, -1)
            _, _, live, rooms = await pipe.execute()
        names = [room.decode() for room in rooms]
        self.share = math.ceil(len(names) / max(1, int(live)))
        return names, self.share

    async def leave(self) -> None:
        await self.redis.zrem(keys.analytics_workers_key(self.settings), self.owner)

    async def forget(self, room: str, idle_s: float) -> bool:
        """Drop `room` from the registry if its last event is older than `idle_s`."""
        cutoff = int((time.time() - idle_s) * 1000)
        key = keys.analytics_rooms_key(self.settings)
        return bool(await self._forget(keys=[key], args=[room, cutoff]))

    async def notify(self, by_owner: dict[str, set[str]]) -> None:
        """Tell each owner which of its rooms have new events."""
        if not by_owner:
            return
        pipe: Any
        async with self.redis.pipeline(transaction=False) as pipe:
            for owner, rooms in by_owner.items():
                key = keys.analytics_dirty_key(self.settings, owner)
                pipe.sadd(key, *rooms)
                pipe.expire(key, max(60, int(self.ttl_s * 6)))
            await pipe.execute()

    async def notified(self) -> set[str]:
        """Rooms of ours another process saw new events of (taken: each is read once)."""
        key = keys.analytics_dirty_key(self.settings, self.owner)
        found: Any = await awaited(self.redis.spop(key, 10_000))
        return {room.decode() for room in found or []}
