"""RoomObserver on real `rtc.Room` objects: SDK events in, contract events out.

The observed room runs for real (observer, inbox, decode stage) on a scripted SDK room
(tests/observer/sdk_objects.py); the SDK's event emitter is driven directly
(`room.emit(...)`) with objects the SDK builds itself; the connect path is exercised
against a closed loopback port. Real WebRTC joins are in tests/e2e.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from livekit import rtc
from prometheus_client import REGISTRY

from relay.contract.raw import RoomContext, SpeakersItem
from relay.observer.inbox import RoomInbox
from relay.observer.room import TEXT_STREAM_TOPICS
from relay.rooms.observed import ObservedRoom
from tests.observer.sdk_objects import (
    STAYS,
    CollectingIntake,
    Script,
    ScriptedRoom,
    make_observer,
    remote_participant,
)
from tests.support import dropped

Observed = tuple[ObservedRoom, ScriptedRoom, CollectingIntake]

RELIABLE = rtc.DataPacketKind.KIND_RELIABLE


def connect_failures() -> float:
    return REGISTRY.get_sample_value("relay_room_connect_failures_total") or 0.0


@pytest.fixture
async def observed() -> AsyncIterator[Observed]:
    """A joined observed room (its observer.joined already consumed) and its SDK room."""
    intake = CollectingIntake()
    script = Script([STAYS])
    observed = make_observer(intake, script=script)
    task = asyncio.create_task(observed.run())
    [joined] = await intake.wait_for(1)
    assert joined.kind == "observer.joined"
    intake.events.clear()
    yield observed, script.rooms[0], intake
    observed.stop()
    async with asyncio.timeout(5):
        await task


async def test_data_packet_becomes_contract_event_with_sender_role(
    observed: Observed,
) -> None:
    _, room, intake = observed
    avatar_agent = remote_participant("liveavatar-agent-s1", sid="PA_agent")
    payload = json.dumps(
        {"event_id": "e1", "event_type": "avatar.speak_started", "session_id": "s1"}
    ).encode()
    room.emit("data_received", rtc.DataPacket(payload, RELIABLE, avatar_agent, "agent-response"))

    [event] = await intake.wait_for(1)
    assert (event.kind, event.protocol, event.session_id) == ("speech.started", "liveavatar", "s1")
    assert event.data == {"role": "avatar"}
    assert event.participant.identity == "liveavatar-agent-s1"
    assert event.participant.sid == "PA_agent"
    assert event.participant.role == "agent"
    assert event.room == "room-1"


async def test_oversized_payload_goes_to_dead_letters_not_events(
    observed: Observed,
) -> None:
    _, room, intake = observed
    before = dropped("oversized")
    user = remote_participant("user-1")
    room.emit("data_received", rtc.DataPacket(b"x" * 5000, RELIABLE, user, "agent-control"))

    [letter] = await intake.wait_for_letters(1)
    assert intake.events == []
    assert letter.reason == "oversized"
    assert letter.detail["size"] == 5000
    assert letter.detail["topic"] == "agent-control"
    assert len(letter.detail["preview_base64"]) < 400  # a bounded preview, not the payload
    assert dropped("oversized") == before + 1


async def test_a_full_inbox_drops_with_reason_and_keeps_the_rest() -> None:
    inbox = RoomInbox("room-1", maxsize=5)
    before = dropped("room_queue_full")
    items = [SpeakersItem(RoomContext("room-1"), [f"u{n}"], float(n)) for n in range(8)]
    for item in items:  # nobody takes items out: the inbox fills
        inbox.put(item)
    assert dropped("room_queue_full") == before + 3
    assert [await inbox.get() for _ in range(5)] == items[:5]


async def test_text_stream_handlers_are_registered_before_connect(observed: Observed) -> None:
    _, room, _ = observed
    assert room.script.text_topics_at_connect == sorted(TEXT_STREAM_TOPICS)


async def test_participants_attributes_and_speakers(
    observed: Observed,
) -> None:
    _, room, intake = observed
    agent = remote_participant("agent-1", sid="PA_a", kind=4)
    room.emit("participant_connected", agent)
    room.emit("participant_attributes_changed", {"lk.agent.state": "listening"}, agent)
    room.emit("active_speakers_changed", [agent])
    room.emit("active_speakers_changed", [agent])  # repeated by the SFU: deduped
    room.emit("participant_disconnected", agent)

    events = await intake.wait_for(4)
    assert [e.kind for e in events] == [
        "participant.joined",
        "agent.state",
        "speakers.active",
        "participant.left",
    ]
    assert events[0].participant.kind == "agent"
    assert events[0].participant.role == "agent"
    assert events[1].data == {"state": "listening", "previous": None}
    assert events[2].data == {"identities": ["agent-1"]}


async def test_reconnecting_then_reconnected_reports_the_gap(
    observed: Observed,
) -> None:
    _, room, intake = observed
    room.emit("reconnecting")
    await asyncio.sleep(0.05)
    room.emit("reconnected")
    events = await intake.wait_for(2)
    assert [e.kind for e in events] == ["observer.reconnecting", "observer.resumed"]
    assert events[1].data["gap_ms"] >= 40


async def test_legacy_transcription_segments(
    observed: Observed,
) -> None:
    _, room, intake = observed
    agent = remote_participant("agent-1", sid="PA_a", kind=4)
    segment = rtc.TranscriptionSegment(
        id="SG_1", text="hello there", start_time=0, end_time=0, language="en", final=True
    )
    room.emit("transcription_received", [segment], agent, None)
    [event] = await intake.wait_for(1)
    assert event.kind == "transcript.final"
    assert event.data["text"] == "hello there"
    assert event.data["segment_id"] == "SG_1"


async def test_unreachable_server_retries_and_stops_without_cancelling_connect() -> None:
    intake = CollectingIntake()
    observer = make_observer(intake, url="ws://127.0.0.1:9")  # real rooms; nothing on port 9
    failures_before = connect_failures()
    task = asyncio.create_task(observer.run())
    await asyncio.sleep(1.5)  # a failed attempt, a backoff, another attempt
    assert connect_failures() >= failures_before + 2
    assert observer.state == "connecting"  # never joined, still trying
    assert not task.done()
    observer.stop()
    async with asyncio.timeout(15):
        await task
    assert observer.state == "stopped"  # type: ignore[comparison-overlap]
    # Never joined: no observer.joined/left events, nothing else invented.
    assert intake.events == []


async def test_reconnect_churn_is_not_reported_but_real_changes_are(
    observed: Observed,
) -> None:
    _, room, intake = observed
    user = remote_participant("user-1", sid="PA_u")
    leaver = remote_participant("leaver", sid="PA_l")
    room.emit("participant_connected", user)
    room.emit("participant_connected", leaver)
    await intake.wait_for(2)

    room.emit("reconnecting")
    room.emit("participant_disconnected", user)  # churn while reconnecting
    room.emit("participant_disconnected", leaver)
    room._remote_participants = {"user-1": user}  # the SDK's state: only the user is back
    room.emit("participant_connected", user)  # churn: same sid
    room.emit("reconnected")

    events = await intake.wait_for(5)
    assert [(e.kind, e.participant.identity) for e in events[2:]] == [
        ("observer.reconnecting", ""),
        ("observer.resumed", ""),  # first, then what changed while the observer was away
        ("participant.left", "leaver"),
    ]
    assert events[4].data["reason"] == "while_disconnected"


async def test_initial_attributes_report_the_starting_agent_state(
    observed: Observed,
) -> None:
    _, room, intake = observed
    agent = remote_participant("agent-1", sid="PA_a", kind=4, attributes={"lk.agent.state": "idle"})
    room.emit("participant_connected", agent)
    events = await intake.wait_for(2)
    assert [e.kind for e in events] == ["participant.joined", "agent.state"]
    assert events[1].data == {"state": "idle", "previous": None}


async def test_same_identity_with_a_new_sid_reports_the_old_session_left(
    observed: Observed,
) -> None:
    _, room, intake = observed
    room.emit("participant_connected", remote_participant("user-1", sid="PA_old"))
    room.emit("participant_connected", remote_participant("user-1", sid="PA_new"))
    events = await intake.wait_for(3)
    assert [(e.kind, e.participant.sid) for e in events] == [
        ("participant.joined", "PA_old"),
        ("participant.left", "PA_old"),
        ("participant.joined", "PA_new"),
    ]
    assert events[1].data["reason"] == "while_disconnected"
