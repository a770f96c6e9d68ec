"""`ScaleOut`: the discovery parts of one worker process, assembled (relay/worker.py
starts it when `discovery.enabled`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aiohttp import web

from relay import keys
from relay.config import Settings
from relay.discovery.assigner import Assigner, new_worker_id
from relay.discovery.control import ControlConsumer
from relay.discovery.deployment import DeploymentView, announce
from relay.discovery.filter import RoomFilter
from relay.discovery.handover import HandoverStore
from relay.discovery.leases import LeaseStore
from relay.discovery.reconcile import Reconciler
from relay.discovery.shadow import ShadowIntake
from relay.discovery.shared import SharedRoomManager
from relay.discovery.wanted import WantedSet
from relay.discovery.webhook import WebhookHandler, register_webhook
from relay.observer import RoomTarget
from relay.pipeline import Pipeline
from relay.redis_client import create_redis
from relay.rooms.manager import ObserverFactory

log = structlog.get_logger(__name__)

Supervise = Callable[[str, Coroutine[Any, Any, None]], Coroutine[Any, Any, None]]


class ScaleOut:
    def __init__(
        self, settings: Settings, make_observer: ObserverFactory, pipeline: Pipeline
    ) -> None:
        d = settings.discovery
        self._settings = settings
        # Its own connection: renewals never queue behind the sink's batches.
        self.redis = create_redis(settings.redis)
        self.worker_id = new_worker_id()
        self.filter = RoomFilter(d.include, d.exclude, d.metadata)
        self.wanted = WantedSet(self.redis, settings.redis)
        self.store = LeaseStore(self.redis, settings.redis, self.worker_id)
        self.view = DeploymentView(self.redis, settings.redis, self.wanted, self.worker_id)
        self.rooms = SharedRoomManager(
            make_observer,
            self.wanted,
            self.view,
            max_rooms=settings.max_rooms,
            static_rooms=settings.rooms,
            on_room_left=pipeline.forget_room,
        )
        # The observers' intake: a room taken over make-before-break is held back here
        # until its lease is won.
        self.intake = ShadowIntake(pipeline, d.shadow_max_entries)
        self.assigner = Assigner(
            self.store,
            self.rooms,
            pipeline,
            d,
            settings.redis,
            static=[RoomTarget(room=room) for room in settings.rooms],
            handover=HandoverStore(self.redis, settings.redis, self.worker_id),
            shadow=self.intake,
        )
        lk = settings.livekit
        self.reconciler = Reconciler(self.wanted, self.store, self.filter, lk, d)
        self.control = ControlConsumer(
            self.redis,
            settings.redis,
            self.wanted,
            self.filter,
            self.worker_id,
            mints_tokens=lk.can_mint_tokens,
        )
        self.webhook = WebhookHandler(
            self.wanted,
            self.filter,
            lk.api_key,
            lk.api_secret.get_secret_value(),
            d.webhook_max_body_bytes,
        )

    def register_routes(self, app: web.Application) -> None:
        register_webhook(app, self.webhook)

    async def start(
        self, components: asyncio.TaskGroup, supervise: Supervise, until: asyncio.Event
    ) -> None:
        d, r = self._settings.discovery, self._settings.redis
        parts: list[tuple[str, Coroutine[Any, Any, None]]] = [
            ("assigner", self.assigner.run(until)),
            ("control", self.control.run(until)),
            ("announce", announce(self.redis, r, self.view.identity, d.lease_ttl_s, until)),
        ]
        if self._settings.livekit.can_mint_tokens:  # ListRooms needs the API key
            parts.append(("reconcile", self.reconciler.run(until)))
        for name, part in parts:
            components.create_task(supervise(name, part), name=name)
        log.info("scaleout_started", worker_id=self.worker_id, pid=os.getpid())

    async def hand_over(self, timeout_s: float) -> None:
        """Before the drain leaves the rooms: takers join them first (make-before-break)."""
        timeout_s = min(timeout_s, self._settings.discovery.handover_timeout_s)
        try:
            await self.assigner.hand_over_all(timeout_s)
        except Exception as exc:  # Redis away: the drain goes on, the gap is reported
            log.warning("drain_handover_failed", error=repr(exc))

    async def stop(self, timeout_s: float, *, hand_back: bool = True) -> None:
        """The rooms are left (and, with `hand_back`, their events written): hand the
        leases back at once, close the connection."""
        await self.assigner.release_all(min(timeout_s, 2.0), hand_back=hand_back)
        try:
            async with asyncio.timeout(min(timeout_s, 1.0)):
                await self.reconciler.release()
        except Exception as exc:
            log.warning("reconcile_release_failed", error=repr(exc))
        worker = keys.worker_key(self._settings.redis, self.worker_id)
        try:
            async with asyncio.timeout(min(timeout_s, 1.0)):
                await self.redis.delete(worker)
        except Exception as exc:  # it expires on its own
            log.warning("worker_announce_delete_failed", error=repr(exc))
        await self.redis.aclose()
