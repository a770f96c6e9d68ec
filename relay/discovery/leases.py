"""Room leases in Redis: SET NX PX to take, a Lua check-and-extend to renew, a Lua
check-and-delete to release. Only the owner (its worker id in the value) can renew or
release.

Each acquisition also takes, in the same script:
- a fencing epoch: INCR of the room's epoch key, stamped into every event the owner
  writes (`epoch`), so a consumer can tell an old owner's late writes;
- a block of seq numbers: INCRBY of the room's seq key by SEQ_BLOCK. The owner stamps
  seqs inside its block only, and every later owner's block starts above it, so a room's
  seq never goes back across owners (it may skip numbers at a takeover). Renewal reserves
  the next block when the owner has used half of its own.

An acquire by the lease's own holder succeeds again with the same epoch and a new block
(a lost reply leaves no room unowned for a TTL): see `_ACQUIRE`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from relay import keys
from relay.config import RedisSettings
from relay.redis_client import many_values

SEQ_BLOCK = 1_000_000
RENEW_BATCH = 200  # renewals per round trip

# KEYS: lease, epoch, seq, seen, found. ARGV: owner, ttl ms, block, now ms.
# -> {epoch, last seq of the block, when an owner last acquired or renewed it (ms; 0)}
#
# Idempotent: if the lease already holds our own id (an acquire of ours whose reply was
# lost, a release that failed, a fenced room whose lease had not expired yet), it is ours
# again at once with the same epoch. That is safe: the epoch is INCRed only by the script
# that just won SET NX, and the seq INCRBY only by the lease's holder (here and in renew),
# so while the key holds our id nobody else can have moved either. The repeat still takes
# a new seq block: we may have stamped seqs in the last one before we forgot the room, and
# a room's seq must never go back. It reports what the first acquire found (`found`, kept
# one TTL), so a lost takeover reply still announces the previous owner's gap.
_ACQUIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
  if epoch == 0 then
    epoch = redis.call('INCR', KEYS[2])
  end
  local high = redis.call('INCRBY', KEYS[3], ARGV[3])
  local found = tonumber(redis.call('GET', KEYS[5]) or '0')
  redis.call('SET', KEYS[4], ARGV[4], 'EX', 86400)
  return {epoch, high, found}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
  local high = redis.call('INCRBY', KEYS[3], ARGV[3])
  local seen = tonumber(redis.call('GET', KEYS[4]) or '0')
  redis.call('SET', KEYS[4], ARGV[4], 'EX', 86400)
  redis.call('SET', KEYS[5], seen, 'PX', ARGV[2])
  return {epoch, high, seen}
end
return false
"""
# KEYS: lease, seq, seen. ARGV: owner, ttl ms, block (0: none), now ms. -> last seq of
# the new block, or 0 (renewed, no new block); false if not the owner.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[3], ARGV[4], 'EX', 86400)
  if tonumber(ARGV[3]) > 0 then
    return redis.call('INCRBY', KEYS[2], ARGV[3])
  end
  return 0
end
return false
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Acquired:
    epoch: int
    seq_high: int  # the last seq of the reserved block
    gap_ms: int | None  # since the previous owner last renewed; None: first owner


@dataclass
class Lease:
    room: str
    epoch: int
    seq_high: int  # the last seq of the newest block reserved
    valid_until: float  # loop time: when the lease may expire (measured from the request)


class LeaseStore:
    def __init__(
        self, redis: aioredis.Redis, settings: RedisSettings, owner: str, kind: str = ""
    ) -> None:
        """`kind`: a prefix of the lease keys, so another user of leases (the analytics,
        `keys.ANALYTICS_LEASES`) shares rooms apart from the relay's own."""
        self._redis = redis
        self._settings = settings
        self.owner = owner
        self.kind = kind
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    def _keys(self, room: str) -> list[str]:
        s, k = self._settings, self.kind
        return [
            keys.lease_key(s, room, k),
            keys.epoch_key(s, room, k),
            keys.seq_key(s, room, k),
            keys.seen_key(s, room, k),
            keys.found_key(s, room, k),
        ]

    async def acquire(self, room: str, ttl_s: float) -> Acquired | None:
        """The epoch, seq block and the previous owner's last renewal if won (or already
        ours: the same epoch, a new block); None if another owner holds it."""
        now_ms = int(time.time() * 1000)
        reply = await self._acquire(
            keys=self._keys(room), args=[self.owner, int(ttl_s * 1000), SEQ_BLOCK, now_ms]
        )
        if not reply:
            return None
        seen_ms = int(reply[2])
        gap_ms = max(0, now_ms - seen_ms) if seen_ms else None
        return Acquired(int(reply[0]), int(reply[1]), gap_ms)

    async def renew(self, room: str, ttl_s: float, *, new_block: bool) -> int | None:
        """None if the lease is no longer ours; else the new block's last seq, or 0."""
        (reply,) = await self.renew_many([(room, new_block)], ttl_s)
        return reply

    async def renew_many(
        self, renewals: Sequence[tuple[str, bool]], ttl_s: float
    ) -> list[int | None]:
        """`renew` for each (room, new_block), one round trip per RENEW_BATCH rooms: a
        pipeline of EVALs (on a Cluster, each goes to its room's slot; EVAL rather than
        EVALSHA, so a node that never saw the script runs it all the same)."""
        replies: list[int | None] = []
        ttl_ms, now_ms = int(ttl_s * 1000), int(time.time() * 1000)
        for first in range(0, len(renewals), RENEW_BATCH):
            async with self._redis.pipeline(transaction=False) as pipe:
                for room, new_block in renewals[first : first + RENEW_BATCH]:
                    lease, _, seq, seen, _ = self._keys(room)
                    block = SEQ_BLOCK if new_block else 0
                    pipe.eval(_RENEW, 3, lease, seq, seen, self.owner, ttl_ms, block, now_ms)
                batch = await pipe.execute()
            replies.extend(None if r is None or r is False else int(r) for r in batch)
        return replies

    async def release(self, room: str) -> bool:
        return bool(
            await self._release(
                keys=[keys.lease_key(self._settings, room, self.kind)], args=[self.owner]
            )
        )

    async def holders(self, rooms: list[str]) -> list[bytes | None]:
        if not rooms:
            return []
        return await many_values(
            self._redis, [keys.lease_key(self._settings, room, self.kind) for room in rooms]
        )

    async def release_key(self, key: str) -> bool:
        """Check-and-delete of another lease of ours (the reconcile lease)."""
        return bool(await self._release(keys=[key], args=[self.owner]))
