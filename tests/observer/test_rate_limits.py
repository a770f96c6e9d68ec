"""The SDK handlers' rate limits and byte caps: over a limit, an item is dropped before it
is built or decoded, counted by reason, and summarized once a period per room."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import structlog
from livekit import rtc

from relay.config import LimitsSettings
from relay.observer.limits import RoomLimiter
from relay.rooms.observed import ObservedRoom
from tests.observer.sdk_objects import (
    STAYS,
    CollectingIntake,
    Script,
    ScriptedRoom,
    make_observer,
    remote_participant,
)
from tests.support import dropped, metric

RELIABLE = rtc.DataPacketKind.KIND_RELIABLE
TIGHT = LimitsSettings(
    participant_events_per_s=0.001,
    participant_events_burst=5,
    room_events_per_s=0.001,
    room_events_burst=8,
    participant_bytes_per_s=0.001,
    participant_bytes_burst=1024,
    room_bytes_per_s=0.001,
    room_bytes_burst=100_000,
    summary_period_s=0.2,
)


def packet(identity: str, n: int, size: int = 0) -> rtc.DataPacket:
    body = {"event_id": f"e{n}", "event_type": "user.speak_started", "pad": "x" * size}
    user = remote_participant(identity, sid=f"PA_{identity}")
    return rtc.DataPacket(json.dumps(body).encode(), RELIABLE, user, "agent-response")


Joined = tuple[ObservedRoom, ScriptedRoom, CollectingIntake, "asyncio.Task[None]"]


async def joined(limits: LimitsSettings) -> Joined:
    intake = CollectingIntake()
    script = Script([STAYS])
    observed = make_observer(intake, script=script, rate_limits=limits, max_payload_bytes=4096)
    task = asyncio.get_running_loop().create_task(observed.run())
    [event] = await intake.wait_for(1)
    assert event.kind == "observer.joined"
    intake.events.clear()
    return observed, script.rooms[0], intake, task


def test_the_participant_limit_names_the_culprit_and_the_room_limit_the_rest() -> None:
    limiter = RoomLimiter(TIGHT, now=0.0)
    first = [limiter.admit("mallory", 10, 0.0) for _ in range(7)]
    assert first == [None] * 5 + ["participant_rate"] * 2
    second = [limiter.admit("alice", 10, 0.0) for _ in range(4)]  # the room has 3 left
    assert second == [None] * 3 + ["room_rate"]
    summary = limiter.take_summary()
    assert summary is not None
    assert summary.reasons == {"participant_rate": 2, "room_rate": 1}
    assert summary.top_participants == [("mallory", 2), ("alice", 1)]
    assert limiter.take_summary() is None  # reset: nothing new to say


def test_bytes_are_capped_separately_from_events() -> None:
    limiter = RoomLimiter(TIGHT, now=0.0)
    assert limiter.admit("mallory", 1000, 0.0) is None
    assert limiter.admit("mallory", 100, 0.0) == "participant_bytes"
    assert limiter.admit("alice", 100, 0.0) is None


def test_disabled_admits_everything() -> None:
    limiter = RoomLimiter(TIGHT.model_copy(update={"enabled": False}), now=0.0)
    assert all(limiter.admit("m", 10**6, 0.0) is None for _ in range(100))
    assert limiter.take_summary() is None


async def test_a_flooding_participant_is_dropped_before_decoding_and_summarized_once(
    capture: list[dict[str, object]],
) -> None:
    observed, room, intake, task = await joined(TIGHT)
    before = dropped("participant_rate"), dropped("room_rate")
    bytes_before = metric("relay_rate_limited_bytes_total", reason="participant_rate")
    for n in range(20):
        room.emit("data_received", packet("mallory", n))
    room.emit("data_received", packet("alice", 99))
    events = await intake.wait_for(6)
    await asyncio.sleep(0.4)  # past the summary period
    assert [e.participant.identity for e in events[:6]] == ["mallory"] * 5 + ["alice"]
    assert dropped("participant_rate") == before[0] + 15
    assert dropped("room_rate") == before[1]
    assert metric("relay_rate_limited_bytes_total", reason="participant_rate") > bytes_before
    lines = [line for line in capture if line["event"] == "room_rate_limited"]
    assert len(lines) == 1  # one line for the period, not one per packet
    assert lines[0]["room"] == "room-1"
    assert lines[0]["dropped"] == 15
    assert lines[0]["reasons"] == {"participant_rate": 15}
    assert lines[0]["top_participants"] == {"mallory": 15}
    assert lines[0]["left"] is False
    # The stream's notice of the same loss, after the events of the period.
    [notice] = [e for e in intake.events if e.kind == "observer.limited"]
    assert intake.events.index(notice) == 6
    assert (notice.protocol, notice.participant.role) == ("relay", "observer")
    assert notice.data == {
        "dropped": 15,
        "reasons": {"participant_rate": 15},
        "dropped_bytes": lines[0]["dropped_bytes"],
        "top_participants": {"mallory": 15},
        "period_s": lines[0]["period_s"],
        "left": False,
    }
    observed.stop()
    async with asyncio.timeout(5):
        await task


async def test_leaving_summarizes_what_is_pending(capture: list[dict[str, object]]) -> None:
    observed, room, intake, task = await joined(TIGHT.model_copy(update={"summary_period_s": 60}))
    for n in range(7):
        room.emit("data_received", packet("mallory", n))
    await intake.wait_for(5)
    assert not any(line["event"] == "room_rate_limited" for line in capture)
    observed.stop()
    async with asyncio.timeout(5):
        await task
    [line] = [line for line in capture if line["event"] == "room_rate_limited"]
    assert line["dropped"] == 2
    assert line["left"] is True
    [notice] = [e for e in intake.events if e.kind == "observer.limited"]
    assert notice.data["left"] is True and notice.data["dropped"] == 2


@pytest.fixture
def capture() -> Iterator[list[dict[str, object]]]:
    with structlog.testing.capture_logs() as logs:
        yield logs  # type: ignore[misc]
