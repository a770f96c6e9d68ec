"""The assigner: which wanted rooms this process observes, by leases.

Every `lease_ttl_s / 3` (a tick) it:
1. registers the process as live (`{prefix}:workers`, expiring after a TTL);
2. renews its leases (a new seq block when half the old one is used); a lease another
   owner holds is left at once (`taken`);
3. leaves rooms no longer wanted, or whose observation ended (`unwanted`, `room_ended`);
4. below its share, picks up unowned wanted rooms (and any whose lease already holds its
   own id: an acquire whose reply was lost), after a random wait of up to
   `pickup_jitter_s`, in random order, up to the share;
5. above its share, hands rooms back (`rebalanced`), see below.
Between ticks it polls `{prefix}:leases:released` every RELEASE_POLL_S: a process that
hands leases back (a drain, a rebalance) increments it, and a process not above its
share (nor at `max_rooms`) then ticks at once, so handed-back rooms move within a poll +
the pick-up jitter + a connect, not a tick (5 s with the default TTL).

The fair-spread rule: a process's share is min(max_rooms, ceil(wanted / live workers)).
Nobody picks up more than its share while others are live, and a process that holds more
(a replica started after the others, so the share went down) hands the excess back
gradually: at most `rebalance_per_tick` rooms a tick (0: never), the most recently
acquired first, and only when
- the worker registry has shown the same live count for a full tick (by the clock, early
  ticks included: a registration that flaps moves no room);
- every wanted room has a live owner (rooms unowned, or leased by a process no longer
  live, are picked up first; a url+token room is not waited for: its token may have
  expired). So if the taker never comes (a process that registers but cannot pick up),
  at most what was handed back in one tick is left unowned;
- the other live processes below the share can take that many (counted from the lease
  holders; like the pick-up rule, this assumes one `max_rooms` for every process).
Quiet rooms first (no event accepted since the last tick: no conversation in progress
that the relay can see), each group newest first: the newest is simple and stable (the
same rooms stay put tick after tick). A room is handed
back as the SIGTERM drain hands it: left, so everything it received is accepted, then,
once the pipeline wrote all it accepted (`Pipeline.flushed`), its lease is released
(renewed meanwhile); a process below its share picks it up after its jitter, and its
`observer.joined` says `reason: "takeover"` and `gap_ms`. While the write does not finish
(the sink away) the lease stays this process's; if it cannot be renewed either, the fence
timer ends it (`renew_failed`) and what is left of the room is refused.

Why it does not flap: a process hands back at most `held - share` rooms, so it still holds
at least its share and picks none up again; and since the held rooms are at most the
wanted ones, a process above ceil(wanted / live) means some live process is below it,
and only such a process picks the room up (one at its share picks up nothing). The share
changes only when the wanted set or the live count does (the latter must hold for a
tick), so rooms only move toward balance and stop once no process is above its share:
the moves are exactly the excess. Why it is never two writers: the old owner releases the
lease only after it left the room and its events are written, and the new owner's acquire
increments the epoch, so its events carry a higher epoch than any the old owner wrote.

Fencing: each lease has a deadline, (when its last successful acquire/renew was sent)
+ ttl - margin. A timer fires at the deadline, independent of Redis calls in flight: the
pipeline refuses the room's entries from then on (`lease_lost`) and the room is left
(`renew_failed`). It is taken up again only by winning a new lease (or by the acquire
script finding the lease still ours: the same epoch, a new seq block).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence

import structlog

from relay import keys
from relay.config import DiscoverySettings, RedisSettings
from relay.discovery import metrics as m
from relay.discovery import overlap
from relay.discovery.handover import HandoverStore
from relay.discovery.leases import SEQ_BLOCK, Acquired, Lease, LeaseStore
from relay.discovery.shadow import ShadowIntake
from relay.discovery.shared import SharedRoomManager
from relay.observer import RoomTarget
from relay.pipeline import Pipeline
from relay.rooms import RoomCapacityError, ShuttingDownError

log = structlog.get_logger(__name__)

RELEASE_POLL_S = 0.5  # one GET of one key: cheap even with many processes
HANDOVER_POLL_S = 0.1  # a hand-over's giver and taker: a few keys of one room


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
        clock: Callable[[], float] = time.monotonic,
        handover: HandoverStore | None = None,
        shadow: ShadowIntake | None = None,
    ) -> None:
        self.clock = clock  # for the live count's stability (tests step their own)
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
        self._handing: dict[str, asyncio.Task[None]] = {}  # rooms being handed back
        self._live: int | None = None  # the live count last read, and since when
        self._live_since = 0.0
        self._share: int | None = None  # this process's share at the last tick
        self._releases_seen: bytes | None = None  # the releases counter, last read
        self._releases_read = False
        self._seqs_seen: dict[str, int] = {}  # held rooms' last seq at the last tick
        self._stopping = False
        # Make-before-break hand-overs (relay/discovery/handover.py), when both are given:
        # the rooms this process observes as a taker, before their lease is won.
        self._handover = handover if shadow is not None else None
        self._shadow = shadow
        self._shadows: dict[str, asyncio.Task[None]] = {}
        # Hot standby (discovery.standby): rooms other processes own, observed here too.
        self._standby: set[str] = set()

    @property
    def handing(self) -> frozenset[str]:
        """Rooms being handed back: left, their lease released once their events are
        written."""
        return frozenset(self._handing)

    @property
    def standing_by(self) -> frozenset[str]:
        """Rooms this process stands by for: observed, owned by another process."""
        return frozenset(self._standby)

    @property
    def shadows(self) -> frozenset[str]:
        """Rooms being taken over: joined, their lease not won yet."""
        return frozenset(self._shadows)

    def _holding(self) -> int:
        """Rooms held or being taken over, not being handed back (a hand-back that
        released its lease is out of `held` before it is out of `_handing`)."""
        return len((self.held.keys() | self._shadows.keys()) - self._handing.keys())

    @property
    def tick_s(self) -> float:
        return self._settings.lease_ttl_s / 3

    async def run(self, until: asyncio.Event) -> None:
        await self._settle(until)
        while not until.is_set():
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.tick_s):
                    await self.tick()
            except Exception as exc:  # Redis away or slow: the fence timers protect us
                log.warning("assigner_tick_failed", error=repr(exc) or type(exc).__name__)
            wait = max(0.0, self.tick_s - (time.monotonic() - started))
            await self._idle(until, wait)

    async def _settle(self, until: asyncio.Event) -> None:
        """Register (again every tick, so the registration never lapses), and wait
        `startup_settle_s` before the first tick: replicas started together then all see
        each other in their first share."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.startup_settle_s
        while not until.is_set() and (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(self.tick_s):
                    await self._register()
            except Exception as exc:  # Redis away: the ticks register as usual
                log.warning("assigner_register_failed", error=repr(exc) or type(exc).__name__)
            try:
                async with asyncio.timeout(min(left, self.tick_s)):
                    await until.wait()
            except TimeoutError:
                pass

    async def _idle(self, until: asyncio.Event, wait_s: float) -> None:
        """Wait `wait_s` for the next tick; sooner if another process handed leases back
        and this one has room for them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        key = keys.releases_key(self._redis_settings)
        while not until.is_set() and (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(left, RELEASE_POLL_S)):
                    await until.wait()
                return
            except TimeoutError:
                pass
            try:
                async with asyncio.timeout(RELEASE_POLL_S):
                    seen = await self._redis.get(key)
                    if self._standby:
                        await self._take_orphans()
            except Exception:  # Redis away or slow: the ticks go on as they are
                continue
            released = self._releases_read and seen != self._releases_seen
            self._releases_seen, self._releases_read = seen, True
            # Not above its last share (a giver waits for its own ticks: the rebalance's
            # pace), and with room: its share may have grown (a drained process left).
            holding = self._holding()
            share = self._share if self._share is not None else self._rooms.capacity
            room_left = holding <= share and holding < self._rooms.capacity
            if released and room_left and not self._stopping:
                return

    async def tick(self) -> None:
        members = await self._register()
        live, now = len(members), self.clock()
        if live != self._live:
            self._live, self._live_since = live, now
        # The count held a full tick (by the clock: early ticks do not shorten it; 0.9:
        # the ticks' own spacing varies by a Redis round trip).
        stable = now - self._live_since >= 0.9 * self.tick_s
        while self._static:
            await self._rooms.shared.add(self._static[0], "static")
            self._static.pop(0)
        await self._renew_all()
        quiet = self._quiet_rooms()
        entries = await self._rooms.shared.entries()
        self._rooms.known_wanted = set(entries)
        m.DEPLOYMENT_ROOMS_WANTED.set(len(entries))
        await self._leave_ended(entries)
        share = min(self._rooms.capacity, math.ceil(len(entries) / max(1, live)))
        self._share = share
        holding = self._holding()
        if self._stopping:
            return
        standby = self._settings.standby and self._handover is not None
        if standby:
            await self._take_orphans()
        rebalance = holding > share and stable and self._settings.rebalance_per_tick > 0
        # The lease holders: one read, only for what this tick does with them.
        holders = await self._holders(entries) if holding < share or rebalance or standby else {}
        if holding < share:
            if self._handover is not None:
                await self._answer_offers(entries, holders, share, self._handover)
            await self._pick_up(entries, holders, share)
        elif rebalance:
            self._rebalance(entries, share, members, holders, quiet)
        if standby and self._handover is not None and not self._stopping:
            await self._stand_by(entries, holders, share, self._handover)

    async def _leave_ended(self, entries: dict[str, dict[str, object]]) -> None:
        """Give up the held rooms no longer wanted, or whose observation ended."""
        for room in list(self.held):
            if room in self._handing:
                continue  # left already; released once its events are written
            if room not in entries:
                await self._give_up(room, "unwanted")
            elif room not in self._rooms.wanted:  # its observation ended or failed
                if room in self._rooms.ended:
                    self._rooms.ended.discard(room)
                    await self._rooms.shared.remove(room)
                await self._give_up(room, "room_ended")

    def _quiet_rooms(self) -> set[str]:
        """Held rooms whose seq did not move since the last tick."""
        seqs = {room: self._pipeline.last_seq(room) for room in self.held}
        quiet = {room for room, seq in seqs.items() if self._seqs_seen.get(room) == seq}
        self._seqs_seen = seqs
        return quiet

    async def _register(self) -> list[str]:
        """Register as live; the live workers' ids."""
        key = keys.workers_key(self._redis_settings)
        now_ms = int(time.time() * 1000)
        ttl_ms = int(self._settings.lease_ttl_s * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {self._store.owner: now_ms + ttl_ms})
            pipe.zremrangebyscore(key, "-inf", now_ms)
            pipe.zrange(key, 0, -1)
            replies = await pipe.execute()
        return [w.decode() if isinstance(w, bytes) else str(w) for w in replies[2]]

    async def _holders(self, entries: dict[str, dict[str, object]]) -> dict[str, str | None]:
        rooms = list(entries)
        values = await self._store.holders(rooms)
        return {r: v.decode() if v else None for r, v in zip(rooms, values, strict=True)}

    async def _renew_all(self) -> None:
        """Renew every held lease in one round trip (per LeaseStore.RENEW_BATCH rooms)."""
        ttl = self._settings.lease_ttl_s
        held = list(self.held.items())
        renewals = [
            (room, self._pipeline.last_seq(room) > lease.seq_high - SEQ_BLOCK // 2)
            for room, lease in held
        ]
        sent = asyncio.get_running_loop().time()
        replies = await self._store.renew_many(renewals, ttl)
        for (room, lease), reply in zip(held, replies, strict=True):
            if self.held.get(room) is not lease:
                continue  # fenced (or given up and won again) meanwhile
            if reply is None:
                await self._give_up(room, "taken", release=False)
                continue
            if reply:
                lease.seq_high = reply
                self._pipeline.extend_room(room, reply)
            self._arm(lease, sent + ttl)

    async def _pick_up(
        self, entries: dict[str, dict[str, object]], holders: dict[str, str | None], share: int
    ) -> None:
        mine = self._store.owner
        free = [
            room
            for room, holder in holders.items()
            if (holder is None or holder == mine)  # ours: an acquire whose reply was lost
            and room not in self.held
            and room not in self._handing
            and room not in self._rooms.wanted
        ]
        if free and self._handover is not None:  # a standby's room: it has what was said
            shadowed = await self._handover.shadowed(free)
            free = [room for room in free if room not in shadowed]
        if not free:
            return
        random.shuffle(free)
        await asyncio.sleep(random.uniform(0, self._settings.pickup_jitter_s))
        for room in free:
            if self._holding() >= share or self._stopping:
                return
            target = await self._rooms.shared.target(room, entries[room])
            if target is None:
                continue  # a url+token room whose token expired
            sent = asyncio.get_running_loop().time()
            won = await self._store.acquire(room, self._settings.lease_ttl_s)
            if won is None:
                continue
            if self._stopping:  # shutdown began while the acquire was in flight
                await self._store.release(room)
                return
            self._own(room, won, sent, "takeover" if won.epoch > 1 else "first")
            if won.gap_ms is not None:  # observer.joined {reason, gap_ms}: until the join
                since = time.time() - won.gap_ms / 1000
                target = dataclasses.replace(
                    target, joined_reason="takeover", unobserved_since=since
                )
            try:
                self._rooms.observe(target)
            except (ShuttingDownError, RoomCapacityError):
                await self._give_up(room, "unwanted")
                return

    def _own(self, room: str, won: Acquired, sent: float, kind: str) -> None:
        """The lease is won: hold it (renewed by the ticks, fenced at its deadline), and
        stamp the room's entries with its epoch and seq block."""
        lease = Lease(room, won.epoch, won.seq_high, 0.0)
        self.held[room] = lease
        self._arm(lease, sent + self._settings.lease_ttl_s)
        self._pipeline.own_room(room, won.epoch, won.seq_high - SEQ_BLOCK + 1, won.seq_high)
        m.LEASE_ACQUIRED.labels(kind=kind).inc()
        m.LEASES_HELD.set(len(self.held))
        log.info("lease_acquired", room=room, epoch=won.epoch, kind=kind)

    async def _answer_offers(
        self,
        entries: dict[str, dict[str, object]],
        holders: dict[str, str | None],
        share: int,
        handover: HandoverStore,
    ) -> None:
        """Below the share: take over rooms their owners offer (a rebalance), joining
        them before the owner leaves."""
        owned = self._owned_elsewhere(holders)
        if not owned:
            return
        for room, giver in (await handover.offers(owned)).items():
            if self._holding() >= share or self._stopping:
                return
            target = await self._rooms.shared.target(room, entries[room])
            if target is None or not await handover.claim(room, self._settings.lease_ttl_s):
                continue  # a url+token room whose token expired; another taker's
            if not await self._observe_held(room, target, "handover", None, handover):
                return
            log.info("handover_answered", room=room, giver=giver)
            task = asyncio.create_task(self._take_over(room, handover), name=f"take:{room}")
            self._shadows[room] = task

    async def _take_over(self, room: str, handover: HandoverStore) -> None:
        """Observe `room` (its entries held back), say so once joined, win its lease when
        the giver releases it, then write what was held: the overlap is written once (the
        write guard), nothing between the giver's leave and this lease is missing."""
        assert self._shadow is not None
        loop = asyncio.get_running_loop()
        ttl = self._settings.lease_ttl_s
        # The giver waits handover_timeout_s for the join, then writes what it received.
        deadline = loop.time() + self._settings.handover_timeout_s + ttl
        try:
            while loop.time() < deadline and not self._stopping:
                if room not in self._rooms.wanted:
                    break  # the observation ended (the room is gone)
                joined = self._rooms.joined(room)
                await handover.claim(room, ttl, joined=joined)  # renewed; says joined
                if joined:
                    sent = loop.time()
                    won = await self._store.acquire(room, ttl)
                    if won is not None:
                        self._own(room, won, sent, "handover")
                        held = await self._promote(room)
                        log.info("handover_taken", room=room, epoch=won.epoch, held=held)
                        return
                await asyncio.sleep(HANDOVER_POLL_S)
            log.warning("handover_not_taken", room=room)
            self._shadow.discard(room)
            await self._rooms.leave(room)
        except Exception as exc:  # Redis away: the room is left, its owner keeps it
            log.warning("handover_failed", room=room, error=repr(exc))
            self._shadow.discard(room)
            await self._rooms.leave(room)
        finally:
            self._shadows.pop(room, None)
            with contextlib.suppress(Exception):
                await handover.unclaim(room)

    def _owned_elsewhere(self, holders: dict[str, str | None]) -> list[str]:
        """Rooms another process holds and this one does not observe."""
        mine = self._store.owner
        return [
            room
            for room, holder in holders.items()
            if holder not in (None, mine) and room not in self._rooms.wanted
        ]

    async def _observe_held(
        self,
        room: str,
        target: RoomTarget,
        reason: str,
        keep_s: float | None,
        handover: HandoverStore,
    ) -> bool:
        """Join `room` (its shadow claimed) with its entries held back; False, the claim
        given back, if this process takes no more rooms."""
        assert self._shadow is not None
        self._shadow.hold(room, keep_s)
        try:
            self._rooms.observe(dataclasses.replace(target, joined_reason=reason))
        except (ShuttingDownError, RoomCapacityError):
            self._shadow.discard(room)
            await handover.unclaim(room)
            return False
        return True

    async def _stand_by(
        self,
        entries: dict[str, dict[str, object]],
        holders: dict[str, str | None],
        share: int,
        handover: HandoverStore,
    ) -> None:
        """Renew this process's standbys (ending those whose room went or is ours), and
        stand by for more rooms others own, up to twice the share (a process cannot
        stand by for its own rooms: with exactly the share, the last process to tick
        could find only rooms already covered while its own had nobody left), leaving
        room for the rooms this process should own."""
        ttl = self._settings.lease_ttl_s
        for room in sorted(self._standby):
            gone = room not in entries or room not in self._rooms.wanted
            if gone or not await handover.claim(room, ttl, joined=self._rooms.joined(room)):
                await self._end_standby(room, handover)
        candidates = self._owned_elsewhere(holders)
        random.shuffle(candidates)
        owed = max(0, share - self._holding())  # rooms this process should still own
        for room in candidates:
            if len(self._standby) >= 2 * share or self._stopping:
                return
            if len(self._rooms.wanted) + owed >= self._rooms.capacity:
                return
            target = await self._rooms.shared.target(room, entries[room])
            if target is None or not await handover.claim(room, ttl):
                continue  # a url+token room whose token expired; another's standby
            keep_s = self._settings.standby_keep_s
            if not await self._observe_held(room, target, "standby", keep_s, handover):
                return
            self._standby.add(room)
            log.info("standby_started", room=room, owner=holders[room])

    async def _end_standby(self, room: str, handover: HandoverStore) -> None:
        self._standby.discard(room)
        assert self._shadow is not None
        self._shadow.discard(room)
        await self._rooms.leave(room)
        await handover.unclaim(room)
        log.info("standby_ended", room=room)

    async def _take_orphans(self) -> None:
        """A room this process stands by for whose lease is gone (its owner died, or
        handed it over to this standby): win the lease and write what was kept; what
        the owner wrote is skipped by the write guard."""
        rooms = sorted(self._standby)
        values = await self._store.holders(rooms)
        for room, holder in zip(rooms, values, strict=True):
            if holder is not None or room not in self._standby or self._stopping:
                continue
            sent = asyncio.get_running_loop().time()
            won = await self._store.acquire(room, self._settings.lease_ttl_s)
            if won is None:
                continue  # another process's pick-up came first: still its standby
            self._standby.discard(room)
            self._own(room, won, sent, "takeover" if won.epoch > 1 else "first")
            assert self._handover is not None
            held = await self._promote(room)
            await self._handover.unclaim(room)
            log.info("standby_took_over", room=room, epoch=won.epoch, held=held, gap_ms=won.gap_ms)

    async def _promote(self, room: str) -> int:
        """Write what was held for `room` (its lease just won), but for what the previous
        owner wrote (relay/discovery/overlap.py)."""
        assert self._shadow is not None
        skip = None
        if (oldest := self._shadow.oldest(room)) is not None:
            try:
                written = await overlap.written_since(
                    self._redis, self._redis_settings, room, oldest
                )
                skip = written.already_written
            except Exception as exc:  # Redis away: the ids alone (the write guard) then
                log.warning("handover_overlap_unread", room=room, error=repr(exc))
        return await self._shadow.promote(room, skip)

    async def _await_taker(self, room: str, handover: HandoverStore) -> str | None:
        """Offer `room` and wait until a taker joined it (its id), or the timeout (None)."""
        loop = asyncio.get_running_loop()
        timeout_s = self._settings.handover_timeout_s
        deadline = loop.time() + timeout_s
        await handover.offer(room, timeout_s + self._settings.lease_ttl_s)
        await self._redis.incr(keys.releases_key(self._redis_settings))  # takers tick now
        taker = None
        while loop.time() < deadline and room in self.held and not self._stopping:
            if (taker := await handover.taker_joined(room)) is not None:
                break
            await asyncio.sleep(HANDOVER_POLL_S)
        await handover.withdraw(room)  # answered (the shadow is claimed) or given up
        return taker

    def _rebalance(
        self,
        entries: dict[str, dict[str, object]],
        share: int,
        members: list[str],
        holders: dict[str, str | None],
        quiet: set[str],
    ) -> None:
        """Above the share: start handing back the newest rooms (module docstring)."""
        live = set(members)
        counts = Counter(holder for holder in holders.values() if holder in live)
        others = [counts[w] for w in members if w != self._store.owner]
        # A url+token room may be unjoinable (its token expired): it does not hold us up.
        unowned = sum(
            1
            for room, holder in holders.items()
            if holder not in live and not entries[room].get("token")
        )
        mine = [room for room in self.held if room not in self._handing]
        per_tick = self._settings.rebalance_per_tick
        count = hand_back_count(len(mine), share, others, unowned, per_tick)
        if not count:
            return
        rooms = sorted(mine[::-1], key=lambda room: room not in quiet)[:count]
        log.info("rebalancing", rooms=rooms, held=len(mine), share=share, live=len(live))
        for room in rooms:
            task = asyncio.create_task(self._hand_back(room), name=f"hand_back:{room}")
            self._handing[room] = task

    async def _hand_back(self, room: str) -> None:
        """Leave `room`, wait until what it received is written, then release its lease
        (renewed meanwhile by the ticks)."""
        taker = None
        try:
            if self._handover is not None and self._settings.handover_timeout_s > 0:
                taker = await self._await_taker(room, self._handover)
                m.HANDOVERS.labels(result="unanswered" if taker is None else "overlapped").inc()
            await self._rooms.leave(room)
            # The lease stays ours (renewed by the ticks) until the room's events are
            # written: no other owner may write it before. If renewals fail meanwhile,
            # the fence timer ends it (`renew_failed`) and the entries are refused.
            while not await self._pipeline.flushed(self._settings.lease_ttl_s):
                if room not in self.held or self._stopping:
                    return  # lost meanwhile, or the drain hands it back: counted there
                log.warning("rebalance_unwritten", room=room)
            if self.held.pop(room, None) is None:
                return  # lost meanwhile (taken, renew_failed, shutdown): counted there
            if (timer := self._timers.pop(room, None)) is not None:
                timer.cancel()
            m.LEASES_HELD.set(len(self.held))
            m.lease_lost("rebalanced")
            log.info("lease_released", room=room, reason="rebalanced", taker=taker)
            await self._store.release(room)
            if taker is None:  # anyone below its share may take it; a taker is polling
                await self._redis.incr(keys.releases_key(self._redis_settings))
        except Exception as exc:  # Redis away: the lease expires on its own
            log.warning("rebalance_release_failed", room=room, error=repr(exc))
        finally:
            self._handing.pop(room, None)

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

    async def hand_over_all(self, timeout_s: float) -> int:
        """A drain, make-before-break: leave the worker registry (the others' share grows),
        offer every held room and wait, renewing the leases, until a taker joined each
        or `timeout_s` passed; the drain then leaves the rooms and hands the leases back,
        and each taker writes from where this process stopped. Returns the rooms taken
        over; none when nobody else is live."""
        if self._handover is None or not self.held or self._settings.handover_timeout_s <= 0:
            return 0
        self._stopping = True  # no pick-up, no rebalance, no standby from here on
        workers = keys.workers_key(self._redis_settings)
        await self._redis.zrem(workers, self._store.owner)
        if not await self._redis.zcard(workers):
            return 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        waiting = set(self.held)
        for room in waiting:
            await self._handover.offer(room, timeout_s + self._settings.lease_ttl_s)
        await self._redis.incr(keys.releases_key(self._redis_settings))  # takers tick now
        renewed = loop.time()
        while waiting and loop.time() < deadline:
            await asyncio.sleep(HANDOVER_POLL_S)
            if loop.time() - renewed >= self.tick_s:  # the ticks have stopped: renew here
                await self._renew_all()
                renewed = loop.time()
            for room in sorted(waiting):
                if room not in self.held or await self._handover.taker_joined(room):
                    waiting.discard(room)
        for room in self.held:
            await self._handover.withdraw(room)
        taken = len(self.held) - len(waiting)
        m.HANDOVERS.labels(result="overlapped").inc(taken)
        m.HANDOVERS.labels(result="unanswered").inc(len(waiting))
        log.info("drain_handed_over", rooms=taken, unanswered=len(waiting))
        return taken

    async def release_all(self, timeout_s: float, *, hand_back: bool = True) -> None:
        """Shutdown: after the rooms were left and their events written, hand every
        lease back at once. `hand_back=False` (their events not written): keep the fence
        timers, so the pipeline refuses what is left of each room before its lease can
        expire, and let the leases expire."""
        self._stopping = True
        for task in list(self._shadows.values()):  # rooms not ours yet: left, unclaimed
            task.cancel()
        standbys, self._standby, handover = sorted(self._standby), set(), self._handover
        for task in list(self._handing.values()):  # the rooms are left already
            task.cancel()
        rooms = list(self.held.keys() | self._handing.keys())  # release: check-and-delete
        if hand_back:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            self.held.clear()
            m.LEASES_HELD.set(0)
        try:
            async with asyncio.timeout(timeout_s):
                for room in rooms if hand_back else ():
                    await self._store.release(room)
                for room in standbys:  # another process may stand by for it now
                    if handover is not None:
                        await handover.unclaim(room)
                await self._redis.zrem(keys.workers_key(self._redis_settings), self._store.owner)
                if hand_back and rooms:  # the others take them at once (module docstring)
                    await self._redis.incr(keys.releases_key(self._redis_settings))
        except Exception as exc:
            log.warning("lease_release_failed", error=repr(exc), rooms=len(rooms))
        if hand_back:
            log.info("leases_released", rooms=len(rooms))
        else:
            log.warning("leases_left_to_expire", rooms=len(rooms))


def hand_back_count(
    held: int, share: int, others_held: Sequence[int], unowned: int, per_tick: int
) -> int:
    """How many rooms a process holding `held` (not counting those it is handing back)
    hands back this tick: none while `unowned` joinable rooms have no live owner (the
    processes below the share take those first; and a process that registers but never
    picks up then strands at most what was handed back before it showed); else at most
    `per_tick`, never so many that it falls below `share`, nor more than the other live
    processes below the share can take."""
    if unowned:
        return 0
    room_below = sum(max(0, share - n) for n in others_held)
    return max(0, min(per_tick, held - share, room_below))


def new_worker_id() -> str:
    return uuid.uuid4().hex
