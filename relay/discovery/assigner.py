"""The assigner: which wanted rooms this process observes, by leases.

Every `lease_ttl_s / 3` (a tick) it:
1. registers the process as live (`{prefix}:workers`, expiring after a TTL);
2. renews its leases (a new seq block when half the old one is used); a lease another
   owner holds is left at once (`taken`);
3. leaves rooms no longer wanted, or whose observation ended (`unwanted`, `room_ended`);
4. picks up unowned wanted rooms, after a random wait of up to `pickup_jitter_s`, in
   random order, up to its share: min(max_rooms, ceil(wanted / live workers)).

The fair-spread rule: no process takes more than ceil(wanted / live workers) rooms while
others are live; rooms are not taken away from a process that holds more (after workers
joined), they move only when it dies, drains or the rooms end.

Fencing: each lease has a deadline, (when its last successful acquire/renew was sent)
+ ttl - margin. A timer fires at the deadline, independent of Redis calls in flight: the
pipeline refuses the room's entries from then on (`lease_lost`) and the room is left
(`renew_failed`). It is taken up again only by winning a new lease.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
import uuid
from collections.abc import Sequence

import structlog

from relay import keys
from relay.config import DiscoverySettings, RedisSettings
from relay.discovery import metrics as m
from relay.discovery.leases import SEQ_BLOCK, Lease, LeaseStore
from relay.discovery.shared import SharedRoomManager
from relay.observer import RoomTarget
from relay.pipeline import Pipeline
from relay.rooms import RoomCapacityError, ShuttingDownError

log = structlog.get_logger(__name__)


class Assigner:
    def __init__(
        self,
        store: LeaseStore,
        rooms: SharedRoomManager,
        pipeline: Pipeline,
        settings: DiscoverySettings,
        redis_settings: RedisSettings,
        *,
        static: Sequence[RoomTarget] = (),
    ) -> None:
        self._static = list(static)  # written to the wanted set by the first tick that can
        self._store = store
        self._redis = store._redis
        self._rooms = rooms
        self._pipeline = pipeline
        self._settings = settings
        self._redis_settings = redis_settings
        self.held: dict[str, Lease] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._leaving: set[asyncio.Task[bool]] = set()
        self._stopping = False

    @property
    def tick_s(self) -> float:
        return self._settings.lease_ttl_s / 3

    async def run(self, until: asyncio.Event) -> None:
        while not until.is_set():
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.tick_s):
                    await self.tick()
            except Exception as exc:  # Redis away or slow: the fence timers protect us
                log.warning("assigner_tick_failed", error=repr(exc) or type(exc).__name__)
            wait = max(0.0, self.tick_s - (time.monotonic() - started))
            try:
                async with asyncio.timeout(wait):
                    await until.wait()
            except TimeoutError:
                pass

    async def tick(self) -> None:
        live = await self._register()
        while self._static:
            await self._rooms.shared.add(self._static[0], "static")
            self._static.pop(0)
        await self._renew_all()
        entries = await self._rooms.shared.entries()
        self._rooms.known_wanted = set(entries)
        m.DEPLOYMENT_ROOMS_WANTED.set(len(entries))
        for room in list(self.held):
            if room not in entries:
                await self._give_up(room, "unwanted")
            elif room not in self._rooms.wanted:  # its observation ended or failed
                reason: m.LeaseLossReason = "room_ended"
                if room in self._rooms.ended:
                    self._rooms.ended.discard(room)
                    await self._rooms.shared.remove(room)
                await self._give_up(room, reason)
        share = min(self._rooms.capacity, math.ceil(len(entries) / max(1, live)))
        if len(self.held) < share and not self._stopping:
            await self._pick_up(entries, share)

    async def _register(self) -> int:
        key = keys.workers_key(self._redis_settings)
        now_ms = int(time.time() * 1000)
        ttl_ms = int(self._settings.lease_ttl_s * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {self._store.owner: now_ms + ttl_ms})
            pipe.zremrangebyscore(key, "-inf", now_ms)
            pipe.zcard(key)
            replies = await pipe.execute()
        return int(replies[2])

    async def _renew_all(self) -> None:
        ttl = self._settings.lease_ttl_s
        for room, lease in list(self.held.items()):
            sent = asyncio.get_running_loop().time()
            used = self._pipeline.last_seq(room)
            new_block = used > lease.seq_high - SEQ_BLOCK // 2
            reply = await self._store.renew(room, ttl, new_block=new_block)
            if room not in self.held:
                continue  # fenced meanwhile
            if reply is None:
                await self._give_up(room, "taken", release=False)
                continue
            if reply:
                lease.seq_high = reply
                self._pipeline.extend_room(room, reply)
            self._arm(lease, sent + ttl)

    async def _pick_up(self, entries: dict[str, dict[str, object]], share: int) -> None:
        candidates = [r for r in entries if r not in self.held and r not in self._rooms.wanted]
        holders = await self._store.holders(candidates)
        free = [room for room, holder in zip(candidates, holders, strict=True) if holder is None]
        if not free:
            return
        random.shuffle(free)
        await asyncio.sleep(random.uniform(0, self._settings.pickup_jitter_s))
        for room in free:
            if len(self.held) >= share or self._stopping:
                return
            target = await self._rooms.shared.target(room, entries[room])
            if target is None:
                continue  # a url+token room whose token expired
            sent = asyncio.get_running_loop().time()
            won = await self._store.acquire(room, self._settings.lease_ttl_s)
            if won is None:
                continue
            epoch, high = won.epoch, won.seq_high
            if self._stopping:  # shutdown began while the acquire was in flight
                await self._store.release(room)
                return
            lease = Lease(room, epoch, high, 0.0)
            self.held[room] = lease
            self._arm(lease, sent + self._settings.lease_ttl_s)
            self._pipeline.own_room(room, epoch, high - SEQ_BLOCK + 1, high)
            m.LEASE_ACQUIRED.labels(kind="takeover" if epoch > 1 else "first").inc()
            m.LEASES_HELD.set(len(self.held))
            log.info("lease_acquired", room=room, epoch=epoch)
            if won.gap_ms is not None:  # announced by observer.joined {reason, gap_ms}
                target = dataclasses.replace(
                    target, joined_reason="takeover", joined_gap_ms=won.gap_ms
                )
            try:
                self._rooms.observe(target)
            except (ShuttingDownError, RoomCapacityError):
                await self._give_up(room, "unwanted")
                return

    def _arm(self, lease: Lease, expires_at: float) -> None:
        lease.valid_until = expires_at
        if (old := self._timers.pop(lease.room, None)) is not None:
            old.cancel()
        deadline = expires_at - self._settings.lease_margin_s
        loop = asyncio.get_running_loop()
        self._timers[lease.room] = loop.call_at(deadline, self._expired, lease.room)

    def _expired(self, room: str) -> None:
        """The lease may expire soon and could not be renewed: stop writing the room."""
        self._timers.pop(room, None)
        if self.held.pop(room, None) is None:
            return
        self._pipeline.fence_room(room)
        m.lease_lost("renew_failed")
        m.LEASES_HELD.set(len(self.held))
        log.warning("lease_lost", room=room, reason="renew_failed")
        task = asyncio.create_task(self._rooms.leave(room))
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def _give_up(self, room: str, reason: m.LeaseLossReason, *, release: bool = True) -> None:
        if self.held.pop(room, None) is None:
            return
        if (timer := self._timers.pop(room, None)) is not None:
            timer.cancel()
        m.LEASES_HELD.set(len(self.held))
        m.lease_lost(reason)
        log.info("lease_released", room=room, reason=reason)
        if reason == "taken":
            self._pipeline.fence_room(room)  # another owner writes it now
        await self._rooms.leave(room)
        if release:
            await self._store.release(room)

    async def release_all(self, timeout_s: float) -> None:
        """Shutdown: after the rooms were left, hand every lease back at once."""
        self._stopping = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        rooms = list(self.held)
        self.held.clear()
        m.LEASES_HELD.set(0)
        try:
            async with asyncio.timeout(timeout_s):
                for room in rooms:
                    await self._store.release(room)
                await self._redis.zrem(keys.workers_key(self._redis_settings), self._store.owner)
        except Exception as exc:
            log.warning("lease_release_failed", error=repr(exc), rooms=len(rooms))
        log.info("leases_released", rooms=len(rooms))


def new_worker_id() -> str:
    return uuid.uuid4().hex
