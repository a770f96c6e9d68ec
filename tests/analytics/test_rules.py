"""Assembly rules one at a time, on the pure step functions (no Redis): sessions nobody
was seen joining, timeouts by the clock, late and repeated updates."""

from __future__ import annotations

from typing import Any

from relay.analytics.assemble import State
from relay.analytics.model import AnalyticsConfig
from relay.analytics.step import Step, on_clock, on_event
from tests.analytics.support import T0_MS, at

CONFIG = AnalyticsConfig(utterance_timeout_s=10, participants_idle_s=30)
AGENT = {"identity": "voice-agent", "sid": "PA_a", "kind": "agent", "role": "agent"}
USER = {"identity": "caller", "sid": "PA_c", "kind": "standard", "role": "user"}


class Room:
    def __init__(self) -> None:
        self.state: State | None = None
        self.n = 0
        self.summaries: list[dict[str, Any]] = []
        self.utterances: list[dict[str, Any]] = []

    def send(self, ms: int, kind: str, who: dict[str, Any], **data: Any) -> Step:
        self.n += 1
        event = {
            "id": f"ev_{self.n}",
            "seq": self.n,
            "ts": at(ms),
            "room": "r",
            "session_id": None,
            "participant": who,
            "protocol": "livekit-agents",
            "kind": kind,
            "data": data,
        }
        return self._keep(on_event(self.state, event, CONFIG))

    def clock(self, ms: int) -> Step:
        return self._keep(on_clock(self.state, T0_MS + ms, CONFIG))

    def _keep(self, step: Step) -> Step:
        if step.state is not None:
            self.state = step.state
        self.summaries += step.summaries
        self.utterances += step.utterances
        return step


def test_a_conversation_whose_joins_were_not_seen_ends_after_its_last_activity() -> None:
    room = Room()
    for ms in range(0, 100_000, 20_000):  # an event every 20 s: less than the idle time apart
        room.send(ms, "transcript.final", AGENT, role="agent", text=f"at {ms}", segment_id=str(ms))
    room.clock(100_000)
    assert room.summaries == []  # 100 s: the last activity (80 s) is 20 s ago
    room.clock(110_000)
    [summary] = room.summaries
    assert (summary["end_reason"], summary["end"]) == ("participants_left", at(80_000))
    assert len(summary["transcript"]) == 5


def test_the_clock_closes_a_turn_without_final_and_a_late_partial_is_dropped() -> None:
    room = Room()
    room.send(0, "participant.joined", USER, identity="caller")
    room.send(
        1000,
        "transcript.partial",
        AGENT,
        role="user",
        text="hel",
        segment_id="a",
        mode="cumulative",
    )
    room.clock(10_999)
    assert room.utterances == []
    room.clock(11_001)
    [closed] = room.utterances
    assert (closed["text"], closed["closed_without_final"], closed["end"]) == (
        "hel",
        True,
        at(1000),
    )
    room.send(
        12_000,
        "transcript.partial",
        AGENT,
        role="user",
        text="hello",
        segment_id="a",
        mode="cumulative",
    )
    room.send(12_100, "transcript.final", AGENT, role="user", text="hello", segment_id="a")
    assert len(room.utterances) == 1  # the segment was closed: its late updates change nothing


def test_a_repeated_event_id_is_applied_once() -> None:
    room = Room()
    room.send(0, "participant.joined", USER, identity="caller")
    assert room.state is not None
    event: dict[str, Any] = {
        "id": "ev_same",
        "seq": 9,
        "ts": at(500),
        "room": "r",
        "session_id": None,
        "participant": AGENT,
        "protocol": "livekit-agents",
        "kind": "transcript.final",
        "data": {"role": "agent", "text": "once", "segment_id": "x"},
    }
    first = on_event(room.state, event, CONFIG)
    assert first.state is not None and len(first.utterances) == 1
    again = on_event(first.state, {**event, "data": {**event["data"], "segment_id": "y"}}, CONFIG)
    assert again.duplicate and again.state is None and again.utterances == []
