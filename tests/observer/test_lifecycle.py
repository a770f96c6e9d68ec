"""The observer's own lifecycle: re-join backoff, rooms that end, cancellation mid-connect,
and what a shutdown that runs out of time costs (counted, never silent)."""

from __future__ import annotations

import asyncio
import json

import pytest
from livekit import rtc
from prometheus_client import REGISTRY

from relay.contract.event import Event
from relay.decode.items import RoomContext
from relay.observer import room as observer_room
from relay.observer.room import RoomObserver
from relay.observer.sdk_room import ObserverRoom
from tests.observer.sdk_objects import CollectingIntake, make_observer, remote_participant

RELIABLE = rtc.DataPacketKind.KIND_RELIABLE


def dropped(reason: str) -> float:
    value = REGISTRY.get_sample_value("relay_events_dropped_total", {"reason": reason})
    return value or 0.0


class DroppedObserver(RoomObserver):
    """Joins at once, then is disconnected with the next of `reasons`; records backoffs.

    Stands in for the SDK's connect only: the loop under test is the observer's own."""

    def __init__(self, intake: CollectingIntake, reasons: list[str]) -> None:
        base = make_observer(intake)
        super().__init__(base.target, intake, base._livekit, base._limits)
        self.reasons = reasons
        self.connects = 0
        self.backoffs: list[int] = []

    async def _connect(self, room: ObserverRoom) -> bool:
        if not self.reasons:
            self.stop()
            return False
        self.connects += 1
        self.state = "connected"
        self._disconnected.clear()
        reason = rtc.DisconnectReason.Value(self.reasons.pop(0))
        asyncio.get_running_loop().call_soon(self._on_disconnected, reason)
        return True

    async def _back_off(self, attempt: int) -> None:
        self.backoffs.append(attempt)


async def run_to_end(observer: RoomObserver) -> list[Event]:
    intake = observer._intake
    assert isinstance(intake, CollectingIntake)
    async with asyncio.timeout(5):
        await observer.run()
    return intake.events


async def test_a_room_that_drops_the_observer_at_once_is_rejoined_with_growing_backoff() -> None:
    observer = DroppedObserver(CollectingIntake(), ["SIGNAL_CLOSE"] * 4)
    events = await run_to_end(observer)
    assert observer.connects == 4
    # Each quick drop backs off further (attempt 0, 1, 2, 3), then the stop: no tight loop.
    assert observer.backoffs[:4] == [0, 1, 2, 3]
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["observer.joined", "observer.reconnecting"]
    assert kinds.count("observer.resumed") == 3
    assert kinds[-1] == "observer.left"


async def test_a_connection_that_held_resets_the_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(observer_room, "STABLE_CONNECTION_S", 0.0)
    observer = DroppedObserver(CollectingIntake(), ["SIGNAL_CLOSE"] * 3)
    await run_to_end(observer)
    assert observer.connects == 3
    assert observer.backoffs == [0]  # only the final, failed connect backs off


@pytest.mark.parametrize(
    ("reason", "left"),
    [
        ("ROOM_DELETED", "room_deleted"),
        ("ROOM_CLOSED", "room_closed"),
        ("PARTICIPANT_REMOVED", "participant_removed"),
    ],
)
async def test_a_room_that_ended_is_not_rejoined(reason: str, left: str) -> None:
    # Re-joining would re-create a deleted room, or undo an operator's removal.
    observer = DroppedObserver(CollectingIntake(), [reason, "SIGNAL_CLOSE"])
    events = await run_to_end(observer)
    assert observer.connects == 1
    assert observer.ended_by == reason
    assert [(e.kind, e.data) for e in events] == [
        ("observer.joined", {}),
        ("observer.left", {"reason": left}),
    ]


async def test_cancelled_twice_mid_connect_still_waits_for_the_connect(
    silent_livekit: str,
) -> None:
    # The SDK tries 4 times, each bounded by connect_timeout_s (a few seconds in all).
    observer = make_observer(CollectingIntake(), url=silent_livekit, connect_timeout_s=0.25)
    task = asyncio.create_task(observer.run())
    await asyncio.sleep(0.2)
    assert observer.state == "connecting"
    task.cancel()
    await asyncio.sleep(0.1)
    task.cancel()  # a second cancellation must not reach the native connect either
    await asyncio.sleep(0.1)
    assert not task.done()  # still waiting for the connect to end on its own
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(30):
            await task


class BlockedIntake(CollectingIntake):
    """A pipeline whose buffer is full (Redis away): every submit waits."""

    async def submit(self, event: Event) -> None:
        await asyncio.Event().wait()


async def test_shutdown_timeout_counts_what_the_room_still_held() -> None:
    observer = make_observer(BlockedIntake())
    room = observer._new_room()
    user = remote_participant("user-1")
    for n in range(3):
        body = json.dumps({"type": "user_message", "text": f"m{n}"}).encode()
        room.emit("data_received", rtc.DataPacket(body, rtc.DataPacketKind.KIND_RELIABLE, user))
    before = dropped("shutdown_timeout")
    observer._inbox.start()
    drain = asyncio.create_task(observer._inbox.drain())
    await asyncio.sleep(0.1)  # one event in hand (blocked in submit), two queued
    drain.cancel()  # the shutdown's deadline
    await asyncio.gather(drain, return_exceptions=True)
    assert dropped("shutdown_timeout") == before + 3


class EarlyArrivals(DroppedObserver):
    """Participants join and speak while connect() is still running, as they do when the
    observer joins a busy room: the SDK dispatches their events before the observer's
    connect resumes, which then learns the room's sid."""

    async def _connect(self, room: ObserverRoom) -> bool:
        early = remote_participant("early-user", sid="PA_e")
        room._remote_participants[early.identity] = early
        room.emit("participant_connected", early)
        body = json.dumps({"event_type": "avatar.interrupt"}).encode()
        room.emit("data_received", rtc.DataPacket(body, RELIABLE, early, "agent-control"))
        connected = await super()._connect(room)
        self._ctx = RoomContext(room=self.target.room, room_sid="RM_early")  # as on a join
        return connected


async def test_what_arrives_during_connect_follows_observer_joined() -> None:
    observer = EarlyArrivals(CollectingIntake(), ["ROOM_DELETED"])
    events = await run_to_end(observer)
    assert [(e.kind, e.participant.identity) for e in events] == [
        ("observer.joined", ""),
        ("participant.joined", "early-user"),
        ("command", "early-user"),
        ("observer.left", ""),
    ]
    assert {e.room_sid for e in events} == {"RM_early"}  # held items get the room's sid


async def test_what_arrived_during_a_failed_connect_is_counted() -> None:
    observer = EarlyArrivals(CollectingIntake(), [])  # no reason left: the connect fails
    before = dropped("connect_failed")
    events = await run_to_end(observer)
    assert events == []
    assert dropped("connect_failed") == before + 2
