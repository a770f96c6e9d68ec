"""RoomManager: the rooms this process wants, and an observer task for each.

Sources of rooms (the static list, the admin API; later webhooks, ListRooms and leases)
only call `want()` and `unwant()`. The manager owns the observer tasks and their end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from typing import Any

import structlog

from relay import metrics
from relay.errors import RelayError
from relay.observer import RoomTarget
from relay.rooms.collector import LeftRoomCollector
from relay.rooms.observed import ObservedRoom

log = structlog.get_logger(__name__)

ObserverFactory = Callable[[RoomTarget], ObservedRoom]
RoomLeftCallback = Callable[[str], None]


class RoomCapacityError(RelayError):
    """The process already observes its maximum number of rooms."""


class ShuttingDownError(RelayError):
    """The process is shutting down and takes no more rooms."""


class DeploymentUnavailableError(RelayError):
    """The rooms shared with other processes cannot be read (Redis away)."""

    def __init__(self, message: str, answered_by: dict[str, Any]) -> None:
        super().__init__(message)
        self.answered_by = answered_by


class RoomManager:
    def __init__(
        self,
        make_observer: ObserverFactory,
        *,
        max_rooms: int,
        static_rooms: Collection[str] = (),
        on_room_left: RoomLeftCallback | None = None,
        collector: LeftRoomCollector | None = None,
    ) -> None:
        self._make_observer = make_observer
        self._collector = collector or LeftRoomCollector()
        self._on_room_left = on_room_left
        self._max_rooms = max_rooms
        self._static_rooms = frozenset(static_rooms)
        self._observers: dict[str, ObservedRoom] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Static rooms whose observation ended on its own (room deleted, observer removed):
        # done, not failing, until wanted again.
        self._static_ended: set[str] = set()
        self._closed = False

    def want(self, target: RoomTarget) -> bool:
        """Start observing `target.room`; False if it is already observed."""
        if self._closed:
            raise ShuttingDownError("the relay is shutting down and takes no more rooms")
        if target.room in self._observers:
            return False
        if len(self._observers) >= self._max_rooms:
            raise RoomCapacityError(f"this process observes its maximum of {self._max_rooms}")
        observer = self._make_observer(target)
        self._static_ended.discard(target.room)
        task = asyncio.create_task(observer.run(), name=f"observer:{target.room}")
        task.add_done_callback(self._on_observer_done)
        self._observers[target.room] = observer
        self._tasks[target.room] = task
        self._update_gauges()
        log.info("room_wanted", room=target.room)
        return True

    async def unwant(self, room: str) -> bool:
        """Leave `room` (its received events go on to the pipeline); False if unknown."""
        observer = self._observers.get(room)
        if observer is None:
            return False
        observer.stop()
        await asyncio.gather(self._tasks[room], return_exceptions=True)
        return True

    async def stop_all(self) -> None:
        """Stop taking rooms, leave every room and hand their events on."""
        self._closed = True
        for observer in self._observers.values():
            observer.stop()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._collector.close()  # the process is going: nothing to give back

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "room": name,
                "state": observer.state,
                "token_given": observer.target.token is not None,
                "static": name in self._static_rooms,
                "last_error": observer.last_error,
                "failing_for_s": _since(observer.failing_since),
            }
            for name, observer in sorted(self._observers.items())
        ]

    async def describe_deployment(self, *, limit: int, cursor: str | None) -> dict[str, Any] | None:
        """The rooms of every process this one shares them with (`GET /v1/rooms` with
        discovery on: relay/discovery/deployment.py); None when this process is the whole
        deployment and `describe()` says it all."""
        return None

    def failing_rooms(self, longer_than_s: float) -> list[str]:
        """Rooms added at run time whose connects have failed for longer than this (the
        static rooms count in `static_rooms_ready`)."""
        return [
            name
            for name, observer in sorted(self._observers.items())
            if name not in self._static_rooms
            and observer.failing_since is not None
            and time.monotonic() - observer.failing_since > longer_than_s
        ]

    @property
    def wanted(self) -> list[str]:
        return list(self._observers)

    def observes(self, room: str) -> bool:
        """Whether this process observes `room` (joining, joined or still leaving it)."""
        return room in self._observers

    def static_rooms_ready(self) -> bool:
        """Every static room is observed, or its room ended (nothing left to observe)."""
        return all(
            room in self._static_ended
            or ((observer := self._observers.get(room)) is not None and observer.connected)
            for room in self._static_rooms
        )

    def _on_observer_done(self, task: asyncio.Task[None]) -> None:
        room = task.get_name().removeprefix("observer:")
        observer = self._observers.pop(room, None)
        if observer is not None and observer.ended_by is not None:
            log.info("room_observation_ended", room=room, reason=observer.ended_by)
            if room in self._static_rooms:
                self._static_ended.add(room)
        self._tasks.pop(room, None)
        self._update_gauges()
        self._collector.room_left()  # its SDK objects are cycles: free their native side
        if self._on_room_left is not None:
            self._on_room_left(room)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("observer_failed", room=room, error=repr(exc))

    def _update_gauges(self) -> None:
        metrics.ROOMS_WANTED.set(len(self._observers))

    def observed_count(self) -> int:
        return sum(1 for observer in self._observers.values() if observer.connected)


def _since(monotonic_s: float | None) -> float | None:
    return None if monotonic_s is None else round(time.monotonic() - monotonic_s, 1)
