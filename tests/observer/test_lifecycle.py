"""The observer's own lifecycle: re-join backoff, rooms that end, cancellation mid-connect,
and what a shutdown that runs out of time costs (counted, never silent)."""

from __future__ import annotations

import asyncio
import json

import pytest
from livekit import rtc

from relay.contract.event import Event
from relay.observer import room as observer_room
from relay.rooms.observed import ObservedRoom
from tests.observer.sdk_objects import (
    STAYS,
    BlockedIntake,
    CollectingIntake,
    Script,
    ScriptedRoom,
    make_observer,
    remote_participant,
)
from tests.support import dropped

RELIABLE = rtc.DataPacketKind.KIND_RELIABLE


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The re-join backoff attempts the observer asks for (each then waits no time)."""
    attempts: list[int] = []

    def record(attempt: int, initial_s: float, max_s: float) -> float:
        attempts.append(attempt)
        return 0.0

    monkeypatch.setattr(observer_room, "backoff_s", record)
    return attempts


async def run_to_end(observed: ObservedRoom, intake: CollectingIntake) -> list[Event]:
    async with asyncio.timeout(5):
        await observed.run()
    return intake.events


async def test_a_room_that_drops_the_observer_at_once_is_rejoined_with_growing_backoff(
    backoffs: list[int],
) -> None:
    intake, script = CollectingIntake(), Script(["SIGNAL_CLOSE"] * 4)
    events = await run_to_end(make_observer(intake, script=script), intake)
    assert script.connects == 4
    # Each quick drop backs off further (attempt 0, 1, 2, 3), then the stop: no tight loop.
    assert backoffs[:4] == [0, 1, 2, 3]
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["observer.joined", "observer.reconnecting"]
    assert kinds.count("observer.resumed") == 3
    assert kinds[-1] == "observer.left"


async def test_a_connection_that_held_resets_the_backoff(
    monkeypatch: pytest.MonkeyPatch, backoffs: list[int]
) -> None:
    monkeypatch.setattr(observer_room, "STABLE_CONNECTION_S", 0.0)
    intake, script = CollectingIntake(), Script(["SIGNAL_CLOSE"] * 3)
    await run_to_end(make_observer(intake, script=script), intake)
    assert script.connects == 3
    assert backoffs == [0]  # only the final, failed connect backs off


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
    intake, script = CollectingIntake(), Script([reason, "SIGNAL_CLOSE"])
    observed = make_observer(intake, script=script)
    events = await run_to_end(observed, intake)
    assert script.connects == 1
    assert observed.ended_by == reason
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


async def test_shutdown_timeout_counts_what_the_room_still_held() -> None:
    script = Script([STAYS])
    observed = make_observer(BlockedIntake(), script=script)
    task = asyncio.create_task(observed.run())
    await asyncio.sleep(0.1)  # joined: observer.joined is in hand, blocked in submit
    room, user = script.rooms[0], remote_participant("user-1")
    for n in range(3):
        body = json.dumps({"type": "user_message", "text": f"m{n}"}).encode()
        room.emit("data_received", rtc.DataPacket(body, RELIABLE, user))
    before = dropped("shutdown_timeout")
    observed.stop()  # leaves (observer.left queued) and waits for the decode stage
    await asyncio.sleep(0.1)
    task.cancel()  # the shutdown's deadline
    await asyncio.gather(task, return_exceptions=True)
    # observer.joined (in hand), 3 packets and observer.left (queued): none handed on.
    assert dropped("shutdown_timeout") == before + 5


def busy_room_arrivals(room: ScriptedRoom) -> None:
    """Participants join and speak while connect() is still running, as they do when the
    observer joins a busy room: the SDK dispatches their events before the observer's
    connect resumes, which then learns the room's sid."""
    early = remote_participant("early-user", sid="PA_e")
    room._remote_participants[early.identity] = early  # the SDK's own state
    room.emit("participant_connected", early)
    body = json.dumps({"event_type": "avatar.interrupt"}).encode()
    room.emit("data_received", rtc.DataPacket(body, RELIABLE, early, "agent-control"))


async def test_what_arrives_during_connect_follows_observer_joined() -> None:
    intake = CollectingIntake()
    script = Script(["ROOM_DELETED"], sid="RM_early", during_connect=busy_room_arrivals)
    events = await run_to_end(make_observer(intake, script=script), intake)
    assert [(e.kind, e.participant.identity) for e in events] == [
        ("observer.joined", ""),
        ("participant.joined", "early-user"),
        ("command", "early-user"),
        ("observer.left", ""),
    ]
    assert {e.room_sid for e in events} == {"RM_early"}  # held items get the room's sid


async def test_what_arrived_during_a_failed_connect_is_counted() -> None:
    intake = CollectingIntake()
    script = Script([], during_connect=busy_room_arrivals)  # no step: the connect fails
    before = dropped("connect_failed")
    events = await run_to_end(make_observer(intake, script=script), intake)
    assert events == []
    assert dropped("connect_failed") == before + 2


async def test_a_disconnect_while_the_sid_is_still_awaited_is_not_lost(
    backoffs: list[int],
) -> None:
    # The scripted disconnect comes 10 ms after connect(), the sid only after 50 ms.
    intake = CollectingIntake()
    script = Script(["SIGNAL_CLOSE", "ROOM_DELETED"], sid_delay_s=0.05)
    events = await run_to_end(make_observer(intake, script=script), intake)
    assert script.connects == 2
    assert [e.kind for e in events][:2] == ["observer.joined", "observer.reconnecting"]
    assert [e.kind for e in events][-1] == "observer.left"
