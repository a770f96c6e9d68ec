"""The hand-over protocol in Redis: a planned move is make-before-break.

1. The owner (giver) offers the room: `{prefix}:handover:{<room>}` = its id.
2. A process below its share claims the room's shadow (`{prefix}:shadow:{<room>}` = its
   id, SET NX: one taker), joins the room with its entries held back (ShadowIntake), and
   once joined says so (`{prefix}:shadow:joined:{<room>}` = its id).
3. The giver, seeing its taker joined, leaves the room, writes what it received, and
   releases the lease; the taker wins the lease and writes what it held (the overlap is
   skipped by the write guard) and then the room as its owner.

Every key expires (a process that dies mid-way leaves nothing behind for long), and only
its holder renews or deletes it. If no taker joins within `handover_timeout_s` the giver
leaves anyway (the old break-before-make: the gap is reported at the taker's join).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from relay import keys
from relay.config import RedisSettings
from relay.redis_client import many_values

# KEYS: shadow, joined. ARGV: owner, ttl ms, joined (0/1). -> 1 if the shadow is ours.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] == '1' then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
return 1
"""
# KEYS: the keys to delete if they hold ARGV[1].
_RELEASE = """
local deleted = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then deleted = deleted + redis.call('DEL', key) end
end
return deleted
"""


class HandoverStore:
    def __init__(self, redis: aioredis.Redis, settings: RedisSettings, owner: str) -> None:
        self._redis = redis
        self._settings = settings
        self.owner = owner
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    async def offer(self, room: str, ttl_s: float) -> None:
        await self._redis.set(
            keys.handover_key(self._settings, room), self.owner, px=int(ttl_s * 1000)
        )

    async def withdraw(self, room: str) -> None:
        await self._release(keys=[keys.handover_key(self._settings, room)], args=[self.owner])

    async def offers(self, rooms: list[str]) -> dict[str, str]:
        """The rooms among `rooms` offered by their owner, and who offers each."""
        names = [keys.handover_key(self._settings, room) for room in rooms]
        values = await many_values(self._redis, names) if names else []
        return {room: v.decode() for room, v in zip(rooms, values, strict=True) if v}

    async def claim(self, room: str, ttl_s: float, *, joined: bool = False) -> bool:
        """Claim (or renew) the room's shadow; `joined`: say the taker is in the room."""
        s = self._settings
        reply = await self._claim(
            keys=[keys.shadow_key(s, room), keys.shadow_joined_key(s, room)],
            args=[self.owner, int(ttl_s * 1000), int(joined)],
        )
        return bool(reply)

    async def unclaim(self, room: str) -> None:
        s = self._settings
        names = [keys.shadow_key(s, room), keys.shadow_joined_key(s, room)]
        await self._release(keys=names, args=[self.owner])

    async def shadowed(self, rooms: list[str]) -> set[str]:
        """The rooms among `rooms` another process observes as their taker or standby."""
        values = await many_values(self._redis, [keys.shadow_key(self._settings, r) for r in rooms])
        return {
            room for room, v in zip(rooms, values, strict=True) if v and v.decode() != self.owner
        }

    async def taker_joined(self, room: str) -> str | None:
        """The taker that claimed the room's shadow, once it joined the room."""
        s = self._settings
        holder, joined = await many_values(
            self._redis, [keys.shadow_key(s, room), keys.shadow_joined_key(s, room)]
        )
        if holder and holder == joined and holder.decode() != self.owner:
            return holder.decode()
        return None
