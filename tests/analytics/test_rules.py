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


def test_an_agents_segment_sent_as_a_stream_and_as_legacy_segments_is_one_utterance() -> None:
    """The real decoder on both copies (tests/decode/test_agents.py asserts it emits each
    once), then the assembly: one utterance, the stream's final text."""
    from relay.contract.raw import RawItem
    from relay.decode import RoomDecoder
    from relay.pipeline import IdMinter
    from tests.decode.conftest import segment, text_stream, transcription

    final = {
        "lk.segment_id": "SG_1",
        "lk.transcribed_track_id": "TR_1",
        "lk.transcription_final": "true",
    }
    decoder, minter = RoomDecoder(), IdMinter()
    items: list[RawItem] = [
        transcription(segment("SG_1", "Hel", False)),
        transcription(segment("SG_1", "Hel", False)),
        text_stream("lk.transcription", "Hello there", final),
        transcription(segment("SG_1", "Hello there", True)),
        transcription(segment("SG_1", "Hello th", False)),
    ]
    events = [e for item in items for e in decoder.decode(item)]
    stamped = [
        e.stamped(minter.mint(e, *e.encoded_parts()), seq).to_dict()
        for seq, e in enumerate(events, start=1)
    ]
    assert [e["kind"] for e in stamped] == ["transcript.partial", "transcript.final"]
    room = Room()
    room.send(0, "participant.joined", AGENT, identity="voice-agent")
    for event in stamped:
        room._keep(on_event(room.state, {**event, "room": "r"}, CONFIG))
    [utterance] = room.utterances
    assert (utterance["text"], utterance["segment_ids"]) == ("Hello there", ["SG_1"])
    assert utterance["closed_without_final"] is False
