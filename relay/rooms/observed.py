"""One observed room, assembled: observer -> inbox -> decode stage -> the pipeline.

The data flows one way. The observer (SDK handlers) only puts raw items in the room's
inbox; the decode stage takes them out in order and submits entries to the pipeline.
Both run under one TaskGroup: if either fails, the room stops as a whole.
"""

from __future__ import annotations

import asyncio

from relay.config import LimitsSettings, LiveKitSettings, PipelineSettings
from relay.decode.stage import DecodeStage, EntryIntake
from relay.observer import RoomObserver, RoomTarget
from relay.observer.inbox import RoomInbox
from relay.observer.room import ObserverState, RoomFactory
from relay.observer.sdk_room import ObserverRoom


class ObservedRoom:
    def __init__(
        self,
        target: RoomTarget,
        intake: EntryIntake,
        livekit: LiveKitSettings,
        limits: PipelineSettings,
        *,
        room_factory: RoomFactory = ObserverRoom,
        worker_index: int = 0,
        rate_limits: LimitsSettings | None = None,
    ) -> None:
        self.inbox = RoomInbox(target.room, limits.room_queue_max)
        self.observer = RoomObserver(
            target,
            self.inbox,
            livekit,
            limits,
            room_factory=room_factory,
            worker_index=worker_index,
            rate_limits=rate_limits,
        )
        self.decode = DecodeStage(self.inbox, intake)

    @property
    def target(self) -> RoomTarget:
        return self.observer.target

    @property
    def state(self) -> ObserverState:
        return self.observer.state

    @property
    def connected(self) -> bool:
        return self.observer.connected

    @property
    def last_error(self) -> str | None:
        return self.observer.last_error

    @property
    def failing_since(self) -> float | None:
        return self.observer.failing_since

    @property
    def ended_by(self) -> str | None:
        return self.observer.ended_by

    def stop(self) -> None:
        self.observer.stop()

    async def run(self) -> None:
        """Observe until stopped (or the room ended), then hand on all that was received."""
        async with asyncio.TaskGroup() as group:
            decoding = group.create_task(self.decode.run(), name=f"decode:{self.inbox.room}")
            try:
                await self.observer.run()
            finally:
                await self.inbox.drain()  # cancelled: what is left is counted
            decoding.cancel()
