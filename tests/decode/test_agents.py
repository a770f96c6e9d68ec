"""LiveKit Agents conventions (docs/protocols.md section 2): transcripts, chat, agent state."""

from __future__ import annotations

from typing import Any

import pytest

from relay.contract.event import Participant
from relay.decode import RoomDecoder
from relay.decode.state import SegmentDedupe
from tests.decode.conftest import (
    LK_AGENT,
    USER,
    attributes,
    decode,
    decode_errors,
    decode_one,
    segment,
    text_stream,
    transcription,
)

TRANSCRIPTION = "lk.transcription"
FINAL = {
    "lk.segment_id": "SG_1",
    "lk.transcribed_track_id": "TR_1",
    "lk.transcription_final": "true",
}


@pytest.mark.parametrize(
    ("sender", "attrs", "kind", "data"),
    [
        (
            LK_AGENT,
            FINAL,
            "transcript.final",
            {"role": "agent", "text": "Hello!", "segment_id": "SG_1", "track_id": "TR_1"},
        ),
        (
            LK_AGENT,
            {**FINAL, "lk.transcription_final": "false"},
            "transcript.partial",
            {
                "role": "agent",
                "text": "Hello!",
                "segment_id": "SG_1",
                "mode": "cumulative",
                "track_id": "TR_1",
            },
        ),
        (
            USER,
            {"lk.segment_id": "SG_2", "lk.transcription_final": "TRUE"},
            "transcript.final",
            {"role": "user", "text": "Hello!", "segment_id": "SG_2"},
        ),
        # No segment id, no final flag: the stream names the segment, and it is a partial.
        (
            USER,
            {},
            "transcript.partial",
            {"role": "user", "text": "Hello!", "segment_id": "ST_1", "mode": "cumulative"},
        ),
        (
            Participant("who"),
            FINAL,
            "transcript.final",
            {"role": "unknown", "text": "Hello!", "segment_id": "SG_1", "track_id": "TR_1"},
        ),
    ],
)
def test_transcription_streams(
    sender: Participant, attrs: dict[str, str], kind: str, data: dict[str, Any]
) -> None:
    event = decode_one(text_stream(TRANSCRIPTION, "Hello!", attrs, sender))
    assert (event.protocol, event.kind, event.data) == ("livekit-agents", kind, data)
    assert event.source == {"topic": TRANSCRIPTION, "stream_id": "ST_1"}
    assert event.dedupe_key == "stream:ST_1"
    assert event.participant == sender


def test_an_open_delta_stream_gives_the_text_so_far_then_the_final() -> None:
    """The agent's speech: one stream per segment, header final=false, trailer true."""
    decoder = RoomDecoder()
    header = {**FINAL, "lk.transcription_final": "false"}
    chunks = ["Your order ", "ships ", "tomorrow."]
    partials = [
        decode_one(text_stream(TRANSCRIPTION, "".join(chunks[:n]), header, chunks=n), decoder)
        for n in range(1, len(chunks) + 1)
    ]
    final = decode_one(text_stream(TRANSCRIPTION, "".join(chunks), FINAL), decoder)
    assert [(p.kind, p.data["text"], p.data["mode"]) for p in partials] == [
        ("transcript.partial", "Your order ", "cumulative"),
        ("transcript.partial", "Your order ships ", "cumulative"),
        ("transcript.partial", "Your order ships tomorrow.", "cumulative"),
    ]
    assert [p.dedupe_key for p in partials] == ["stream:ST_1#1", "stream:ST_1#2", "stream:ST_1#3"]
    assert {p.data["segment_id"] for p in partials} == {"SG_1"}
    assert (final.kind, final.data["text"], final.dedupe_key) == (
        "transcript.final",
        "Your order ships tomorrow.",
        "stream:ST_1",
    )


def test_a_user_update_stream_is_one_partial_not_two() -> None:
    """One stream per update: its only chunk and its end carry the same text."""
    decoder = RoomDecoder()
    header = {"lk.segment_id": "SG_2", "lk.transcription_final": "false"}
    chunk = decode(text_stream(TRANSCRIPTION, "what is", header, USER, chunks=1), decoder)
    whole = decode(text_stream(TRANSCRIPTION, "what is", header, USER), decoder)
    assert [(e.kind, e.data["text"]) for e in chunk] == [("transcript.partial", "what is")]
    assert whole == []


@pytest.mark.parametrize(
    ("topic", "attrs"),
    [(TRANSCRIPTION, FINAL), ("lk.chat", {})],  # sent whole: only its end counts
)
def test_open_streams_sent_whole_wait_for_their_end(topic: str, attrs: dict[str, str]) -> None:
    assert decode(text_stream(topic, "Hello", attrs, chunks=1)) == []


def test_chat_stream() -> None:
    event = decode_one(text_stream("lk.chat", "hi all", {}, USER, stream_id="ST_9"))
    assert (event.protocol, event.kind, event.data) == (
        "livekit-agents",
        "chat.message",
        {"text": "hi all"},
    )
    assert (event.source, event.dedupe_key) == (
        {"topic": "lk.chat", "stream_id": "ST_9"},
        "stream:ST_9",
    )


def test_unknown_text_stream_topic_is_raw() -> None:
    before = decode_errors("raw")
    event = decode_one(text_stream("my.topic", "stuff", {}))
    assert (event.protocol, event.kind) == ("raw", "raw")
    assert event.data == {"topic": "my.topic", "payload": "stuff"}
    assert decode_errors("raw") == before + 1


def test_legacy_segments() -> None:
    events = decode(
        transcription(segment("SG_5", "Hi th", False), segment("SG_6", "Bonjour", True, "fr"))
    )
    assert [(e.kind, e.data) for e in events] == [
        (
            "transcript.partial",
            {
                "role": "agent",
                "text": "Hi th",
                "segment_id": "SG_5",
                "mode": "cumulative",
                "language": "en",
                "track_id": "TR_1",
            },
        ),
        (
            "transcript.final",
            {
                "role": "agent",
                "text": "Bonjour",
                "segment_id": "SG_6",
                "language": "fr",
                "track_id": "TR_1",
            },
        ),
    ]
    assert events[0].source == {
        "signal": "transcription_received",
        "segment_id": "SG_5",
        "track_sid": "TR_1",
    }
    assert events[0].dedupe_key.startswith("segment:SG_5:partial:")
    assert events[1].dedupe_key.startswith("segment:SG_6:final:")


def test_legacy_segment_without_id_is_named_by_track_and_start() -> None:
    event = decode_one(transcription(segment("", "hey", True, "", start_time=1200), track_sid=None))
    assert event.data == {"role": "agent", "text": "hey", "segment_id": "track@1200"}


def test_stream_and_legacy_copies_of_a_segment_are_emitted_once() -> None:
    decoder = RoomDecoder()
    emitted = [
        decode(transcription(segment("SG_1", "Hel", False)), decoder),
        decode(transcription(segment("SG_1", "Hel", False)), decoder),  # same partial again
        decode(text_stream(TRANSCRIPTION, "Hello", FINAL), decoder),
        decode(transcription(segment("SG_1", "Hello", True)), decoder),  # legacy copy of final
        decode(transcription(segment("SG_1", "Hell", False)), decoder),  # late partial
        decode(transcription(segment("SG_2", "Next", False)), decoder),
    ]
    assert [len(events) for events in emitted] == [1, 0, 1, 0, 0, 1]


def test_segment_dedupe_is_bounded() -> None:
    dedupe = SegmentDedupe(cap=2)
    assert dedupe.admit("a", True, "x")
    assert dedupe.admit("b", True, "x")
    assert not dedupe.admit("a", True, "x")
    assert dedupe.admit("c", True, "x")  # evicts b, the least recently used
    assert dedupe.admit("b", True, "x")
    assert len(dedupe._seen) == 2


def test_agent_state_attribute_changes() -> None:
    decoder = RoomDecoder()
    states = ["initializing", "listening", "thinking", "speaking", "listening"]
    events = [decode_one(attributes({"lk.agent.state": s}), decoder) for s in states]
    assert [e.data for e in events] == [
        {"state": s, "previous": p} for s, p in zip(states, [None, *states[:-1]], strict=True)
    ]
    assert {(e.protocol, e.kind) for e in events} == {("livekit-agents", "agent.state")}
    assert events[0].source == {"attribute": "lk.agent.state"}
    assert events[0].participant == LK_AGENT


def test_agent_state_is_kept_per_agent() -> None:
    decoder = RoomDecoder()
    other = Participant("agent-two", "PA_2", "agent", "agent")
    decode(attributes({"lk.agent.state": "idle"}), decoder)
    event = decode_one(attributes({"lk.agent.state": "speaking"}, other), decoder)
    assert event.data == {"state": "speaking", "previous": None}


@pytest.mark.parametrize(
    "changed",
    [{"lk.agent.name": "helper"}, {"lk.agent.state": ""}, {}, {"color": "blue"}],
)
def test_other_attribute_changes_emit_nothing(changed: dict[str, str]) -> None:
    assert decode(attributes(changed)) == []


def test_same_agent_state_again_is_no_change() -> None:
    decoder = RoomDecoder()
    decode(attributes({"lk.agent.state": "idle"}), decoder)
    assert decode(attributes({"lk.agent.state": "idle", "x": "1"}), decoder) == []
