"""Real SDK objects built offline: participants and rooms with the observer's handlers."""

from __future__ import annotations

import asyncio

from livekit import rtc
from livekit.rtc._proto import participant_pb2

from relay.config import LiveKitSettings, PipelineSettings
from relay.contract.event import DeadLetter, Event
from relay.observer import RoomObserver, RoomTarget


def remote_participant(
    identity: str, sid: str = "PA_x", kind: int = 0, attributes: dict[str, str] | None = None
) -> rtc.RemoteParticipant:
    owned = participant_pb2.OwnedParticipant()
    owned.info.identity = identity
    owned.info.sid = sid
    owned.info.kind = kind  # type: ignore[assignment]
    for key, value in (attributes or {}).items():
        owned.info.attributes[key] = value
    return rtc.RemoteParticipant(owned)


class CollectingIntake:
    """The pipeline's intake, collecting what the observer hands over."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.dead_letters: list[DeadLetter] = []
        self.changed = asyncio.Event()

    async def submit(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()

    def submit_dead_letter(self, dead_letter: DeadLetter) -> None:
        self.dead_letters.append(dead_letter)
        self.changed.set()

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Event]:
        async with asyncio.timeout(timeout_s):
            while len(self.events) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.events


def make_observer(
    intake: CollectingIntake,
    *,
    room: str = "room-1",
    url: str = "ws://127.0.0.1:9",
    target: RoomTarget | None = None,
    room_queue_max: int = 100,
    max_payload_bytes: int = 1024,
    connect_timeout_s: float = 1.0,
) -> RoomObserver:
    livekit = LiveKitSettings(
        url=url,
        api_key="devkey",
        api_secret="devsecret-devsecret-devsecret-000",  # type: ignore[arg-type]
        connect_timeout_s=connect_timeout_s,
        rejoin_backoff_initial_s=0.05,
        rejoin_backoff_max_s=0.2,
    )
    limits = PipelineSettings(room_queue_max=room_queue_max, max_payload_bytes=max_payload_bytes)
    return RoomObserver(target or RoomTarget(room=room), intake, livekit, limits)
