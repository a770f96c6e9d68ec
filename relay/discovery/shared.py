"""`SharedRoomManager`: a RoomManager whose `want`/`unwant` (the admin API) edit the
shared wanted set in Redis; the assigner decides what this process observes
(`observe`/`leave`, the base class's own want/unwant). `GET /v1/rooms` shows the whole
deployment (`describe_deployment`, relay/discovery/deployment.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import structlog

from relay.discovery.deployment import DeploymentView
from relay.discovery.wanted import WantedSet
from relay.observer import RoomTarget
from relay.rooms import RoomManager, ShuttingDownError
from relay.rooms.manager import ObserverFactory, RoomLeftCallback

log = structlog.get_logger(__name__)


class SharedRoomManager(RoomManager):
    def __init__(
        self,
        make_observer: ObserverFactory,
        wanted: WantedSet,
        view: DeploymentView,
        *,
        max_rooms: int,
        static_rooms: Collection[str] = (),
        on_room_left: RoomLeftCallback | None = None,
    ) -> None:
        super().__init__(
            make_observer, max_rooms=max_rooms, static_rooms=static_rooms, on_room_left=on_room_left
        )
        self.shared = wanted
        self.view = view
        self.known_wanted: set[str] = set()  # the wanted set as the assigner last read it
        self.ended: set[str] = set()  # rooms whose observation ended on its own (deleted...)
        self._writes: set[asyncio.Task[None]] = set()

    def want(self, target: RoomTarget) -> bool:
        """Add to the shared wanted set (written in the background); False if known."""
        if self._closed:
            raise ShuttingDownError("the relay is shutting down and takes no more rooms")
        known = target.room in self.known_wanted
        self.known_wanted.add(target.room)
        task = asyncio.create_task(self._add(target))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return not known

    async def _add(self, target: RoomTarget) -> None:
        try:
            await self.shared.add(target, "admin")
        except Exception as exc:  # Redis away: the caller asks again
            log.warning("wanted_write_failed", room=target.room, error=str(exc))

    async def unwant(self, room: str) -> bool:
        self.known_wanted.discard(room)
        removed = await self.shared.remove(room)
        left = await self.leave(room)
        return removed or left

    def observe(self, target: RoomTarget) -> bool:
        return super().want(target)

    def joined(self, room: str) -> bool:
        """Whether this process is in `room` now (joined, not reconnecting)."""
        observer = self._observers.get(room)
        return observer is not None and observer.connected

    async def leave(self, room: str) -> bool:
        return await super().unwant(room)

    async def describe_deployment(self, *, limit: int, cursor: str | None) -> dict[str, Any]:
        return await self.view.describe(self.describe(), limit=limit, cursor=cursor)

    def static_rooms_ready(self) -> bool:
        return True  # static rooms are in the shared set; any replica may observe them

    @property
    def capacity(self) -> int:
        return self._max_rooms

    def _on_observer_done(self, task: asyncio.Task[None]) -> None:
        room = task.get_name().removeprefix("observer:")
        observer = self._observers.get(room)
        if observer is not None and observer.ended_by is not None:
            self.ended.add(room)
        super()._on_observer_done(task)
