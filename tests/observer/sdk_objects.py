"""Real SDK objects built offline, and a scripted room: the seams observers are tested by.

`ScriptedRoom` is the observer's real `ObserverRoom` (the SDK's `rtc.Room`, its event
dispatch, the observer's handlers) with the SDK's public `connect()`/`disconnect()`/`sid`
following a script instead of the network. Tests drive the observer through it and
through SDK events (`room.emit(...)`), never by overriding the observer's own methods.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from livekit import rtc
from livekit.rtc._proto import participant_pb2

from relay.config import LimitsSettings, LiveKitSettings, PipelineSettings
from relay.contract.event import DeadLetter, Entry, Event
from relay.observer import RoomTarget
from relay.observer.sdk_room import ObserverRoom
from relay.rooms.observed import ObservedRoom

STAYS = "STAYS"  # a script step: the connect succeeds and the room stays connected
SLOW = "SLOW"  # a script step: the connect takes `slow_s`, then fails


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


@dataclasses.dataclass
class Script:
    """What each connect does, in order: a DisconnectReason name (joined, then dropped with
    it), STAYS, or SLOW; when the steps run out, connects fail (ConnectError).

    `during_connect` runs while each connect is in progress (participants of a busy room
    arriving before the observer's connect returns)."""

    steps: list[str]
    sid: str = "RM_test"
    sid_delay_s: float = 0.0  # how long `await room.sid` takes (the SDK may wait for it)
    slow_s: float = 1.5
    during_connect: Callable[[ScriptedRoom], None] | None = None
    on_exhausted: Callable[[], None] | None = None
    rooms: list[ScriptedRoom] = dataclasses.field(default_factory=list)
    connects: int = 0
    text_topics_at_connect: list[str] = dataclasses.field(default_factory=list)

    def room(self) -> ScriptedRoom:
        room = ScriptedRoom(self)
        self.rooms.append(room)
        return room


class ScriptedRoom(ObserverRoom):
    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script

    async def connect(self, url: str, token: str, options: Any = None) -> None:
        script = self.script
        script.text_topics_at_connect = sorted(self._text_stream_handlers)
        if script.during_connect is not None:
            script.during_connect(self)
        if not script.steps:
            if script.on_exhausted is not None:
                script.on_exhausted()
            raise rtc.ConnectError("scripted: no more connects")
        step = script.steps.pop(0)
        if step == SLOW:
            await asyncio.sleep(script.slow_s)
            raise rtc.ConnectError("scripted: slow connect failed")
        script.connects += 1
        if step != STAYS:
            reason = rtc.DisconnectReason.Value(step)
            asyncio.get_running_loop().call_later(0.01, self.emit, "disconnected", reason)

    async def disconnect(self, *, reason: Any = None) -> None:
        return None

    @property
    async def sid(self) -> str:
        if self.script.sid_delay_s:
            await asyncio.sleep(self.script.sid_delay_s)
        return self.script.sid


class CollectingIntake:
    """The pipeline's intake, collecting what the decode stage hands over."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.dead_letters: list[DeadLetter] = []
        self.changed = asyncio.Event()

    async def submit(self, entry: Entry) -> None:
        if isinstance(entry, DeadLetter):
            self.dead_letters.append(entry)
        else:
            self.events.append(entry)
        self.changed.set()

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Event]:
        async with asyncio.timeout(timeout_s):
            while len(self.events) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.events

    async def wait_for_letters(self, count: int, timeout_s: float = 5.0) -> list[DeadLetter]:
        async with asyncio.timeout(timeout_s):
            while len(self.dead_letters) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.dead_letters


class BlockedIntake(CollectingIntake):
    """A pipeline whose buffer is full (Redis away): every submit waits."""

    async def submit(self, entry: Entry) -> None:
        await asyncio.Event().wait()


def observer_settings(
    *,
    url: str = "ws://127.0.0.1:9",
    room_queue_max: int = 100,
    max_payload_bytes: int = 1024,
    connect_timeout_s: float = 1.0,
) -> tuple[LiveKitSettings, PipelineSettings]:
    livekit = LiveKitSettings(
        url=url,
        api_key="devkey",
        api_secret="devsecret-devsecret-devsecret-000",  # type: ignore[arg-type]
        connect_timeout_s=connect_timeout_s,
        rejoin_backoff_initial_s=0.05,
        rejoin_backoff_max_s=0.2,
    )
    limits = PipelineSettings(room_queue_max=room_queue_max, max_payload_bytes=max_payload_bytes)
    return livekit, limits


def make_observer(
    intake: CollectingIntake,
    *,
    room: str = "room-1",
    target: RoomTarget | None = None,
    script: Script | None = None,
    rate_limits: LimitsSettings | None = None,
    **settings: Any,
) -> ObservedRoom:
    """An observed room (observer, inbox, decode stage) handing entries to `intake`; with a
    `script`, its SDK rooms are scripted, else real (aimed at `url`)."""
    livekit, limits = observer_settings(**settings)
    factory = script.room if script is not None else ObserverRoom
    observed = ObservedRoom(
        target or RoomTarget(room=room),
        intake,
        livekit,
        limits,
        room_factory=factory,
        rate_limits=rate_limits,
    )
    if script is not None and script.on_exhausted is None:
        script.on_exhausted = observed.stop
    return observed
