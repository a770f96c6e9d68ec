"""ListRooms reconciliation: webhooks alone lose rooms (LiveKit retries a few times and
drops old events), so every `reconcile_interval_s` (and at start) the relay lists the
rooms and edits the wanted set: a listed room that passes the filter becomes wanted; a
discovered room (webhook, reconcile) not listed for MISSING_ROUNDS rounds in a row is
released. Rooms a person or a backend named (static, admin, control) are not released:
LiveKit creates a room on join, so they may not exist yet.

It runs on one replica at a time: the one holding the reconcile lease (SET NX PX, renewed
by the same check-and-extend as the room leases). The leader also sets the coverage
gauge: wanted rooms with a live lease / wanted rooms.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from livekit import api

from relay import keys
from relay.config import DiscoverySettings, LiveKitSettings
from relay.discovery import metrics as m
from relay.discovery.filter import RoomFilter
from relay.discovery.leases import LeaseStore
from relay.discovery.wanted import DISCOVERED, WantedSet
from relay.observer import RoomTarget
from relay.redis_client import awaited

log = structlog.get_logger(__name__)

MISSING_ROUNDS = 2


def http_url(url: str) -> str:
    return url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)


class Reconciler:
    def __init__(
        self,
        wanted: WantedSet,
        store: LeaseStore,
        room_filter: RoomFilter,
        livekit: LiveKitSettings,
        settings: DiscoverySettings,
    ) -> None:
        self._wanted = wanted
        self._store = store
        self._filter = room_filter
        self._livekit = livekit
        self._settings = settings
        self._lease_key = keys.reconcile_lease_key(wanted._settings)
        self._missing_key = keys.missing_key(wanted._settings)
        self._leading = False

    async def run(self, until: asyncio.Event) -> None:
        interval = self._settings.reconcile_interval_s
        while not until.is_set():
            try:
                if await self._lead():
                    await self.reconcile()
            except Exception as exc:
                m.RECONCILE_ERRORS.inc()
                log.warning("reconcile_failed", error=repr(exc))
            try:
                async with asyncio.timeout(interval):
                    await until.wait()
            except TimeoutError:
                pass

    async def _lead(self) -> bool:
        """Take or keep the reconcile lease (valid for 3 intervals)."""
        redis = self._wanted._redis
        ttl_ms = int(self._settings.reconcile_interval_s * 3000)
        owner = self._store.owner.encode()
        if await redis.set(self._lease_key, owner, nx=True, px=ttl_ms):
            self._leading = True
        else:
            holder = await redis.get(self._lease_key)
            self._leading = holder == owner
            if self._leading:
                await redis.pexpire(self._lease_key, ttl_ms)
        if not self._leading:
            m.COVERAGE.set(1.0)  # no opinion: only the leader's figure counts (min())
        return self._leading

    async def release(self) -> None:
        if self._leading:
            await self._store.release_key(self._lease_key)

    async def reconcile(self) -> None:
        started = time.perf_counter()
        m.RECONCILE_RUNS.inc()
        listed = await self._list_rooms()
        entries = await self._wanted.entries()
        redis = self._wanted._redis
        for name, metadata in listed.items():
            await awaited(redis.hdel(self._missing_key, name))
            if name in entries:
                continue
            if not self._filter.accepts(name, metadata):
                m.ROOMS_FILTERED.inc()
                continue
            await self._wanted.add(RoomTarget(room=name), "reconcile")
        for name, entry in entries.items():
            if name in listed or entry.get("source") not in DISCOVERED:
                continue
            if await awaited(redis.hincrby(self._missing_key, name, 1)) >= MISSING_ROUNDS:
                await awaited(redis.hdel(self._missing_key, name))
                await self._wanted.remove(name)
        await self._set_coverage()
        m.RECONCILE_DURATION.observe(time.perf_counter() - started)

    async def _list_rooms(self) -> dict[str, str]:
        lk = self._livekit
        client = api.LiveKitAPI(http_url(lk.url), lk.api_key, lk.api_secret.get_secret_value())
        try:
            response = await client.room.list_rooms(api.ListRoomsRequest())
        finally:
            await client.aclose()
        return {room.name: room.metadata for room in response.rooms}

    async def _set_coverage(self) -> None:
        rooms = list(await self._wanted.entries())
        holders = await self._store.holders(rooms)
        leased = sum(1 for holder in holders if holder is not None)
        m.COVERAGE.set(leased / len(rooms) if rooms else 1.0)
        log.debug("reconcile_done", wanted=len(rooms), leased=leased)
