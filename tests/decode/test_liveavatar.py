"""LiveAvatar FULL mode and the older Streaming Avatar protocol (docs/protocols.md section 1)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from relay.contract.event import Event
from relay.decode import RoomDecoder
from tests.decode.conftest import (
    LA_AGENT,
    T0,
    T0_MS,
    USER,
    data_item,
    decode_errors,
    decode_one,
)

RESPONSE = "agent-response"
CONTROL = "agent-control"
ENVELOPE = {"event_id": "ev-1", "session_id": "sess-1"}
USER_SEGMENT = f"liveavatar:user@{T0_MS}"
AVATAR_SEGMENT = f"liveavatar:avatar@{T0_MS}"

# (event_type, extra fields) -> (kind, data)
RESPONSES: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("user.speak_started", {}, "speech.started", {"role": "user"}),
    ("user.speak_ended", {}, "speech.ended", {"role": "user"}),
    ("avatar.speak_started", {}, "speech.started", {"role": "avatar"}),
    ("avatar.speak_ended", {}, "speech.ended", {"role": "avatar"}),
    (
        "user.transcription",
        {"text": "I need help"},
        "transcript.final",
        {"role": "user", "text": "I need help", "segment_id": USER_SEGMENT},
    ),
    (
        "avatar.transcription",
        {"text": "Sure."},
        "transcript.final",
        {"role": "avatar", "text": "Sure.", "segment_id": AVATAR_SEGMENT},
    ),
    (
        "user.transcription.chunk",
        {"text": "I ne"},
        "transcript.partial",
        {"role": "user", "text": "I ne", "segment_id": USER_SEGMENT, "mode": "cumulative"},
    ),
    (
        "avatar.transcription.chunk",
        {"text": "Su"},
        "transcript.partial",
        {"role": "avatar", "text": "Su", "segment_id": AVATAR_SEGMENT, "mode": "delta"},
    ),
    (
        "user.push_to_talk_started",
        {},
        "event",
        {"type": "user.push_to_talk_started", "payload": {}},
    ),
    (
        "user.push_to_talk_start_failed",
        {"error": "busy"},
        "event",
        {"type": "user.push_to_talk_start_failed", "payload": {"error": "busy"}},
    ),
    (
        "user.push_to_talk_stopped",
        {},
        "event",
        {"type": "user.push_to_talk_stopped", "payload": {}},
    ),
    (
        "user.push_to_talk_stop_failed",
        {},
        "event",
        {"type": "user.push_to_talk_stop_failed", "payload": {}},
    ),
    (
        "session.stopped",
        {"end_reason": "IDLE_TIMEOUT"},
        "session.stopped",
        {"reason": "IDLE_TIMEOUT"},
    ),
    (
        "session.stopped",
        {"stop_reason": "USER_CLOSED"},
        "session.stopped",
        {"reason": "USER_CLOSED"},
    ),
    ("session.stopped", {"end_reason": 7}, "session.stopped", {}),
    ("session.stopped", {}, "session.stopped", {}),
    (
        "elevenlabs_agent_event",
        {"elevenlabs_event_type": "agent_response", "data": {"n": 1}},
        "event",
        {
            "type": "elevenlabs_agent_event",
            "payload": {"elevenlabs_event_type": "agent_response", "data": {"n": 1}},
        },
    ),
    (
        "session.updated",
        {"voice": "v1"},
        "event",
        {"type": "session.updated", "payload": {"voice": "v1"}},
    ),
    (
        "session.state_updated",
        {"state": "CONNECTED"},
        "event",
        {"type": "session.state_updated", "payload": {"state": "CONNECTED"}},
    ),
    (
        "user.transcription_started",
        {},
        "event",
        {"type": "user.transcription_started", "payload": {}},
    ),
    (
        "user.transcription_ended",
        {"text": "hello there"},
        "transcript.final",
        {"role": "user", "text": "hello there", "segment_id": USER_SEGMENT},
    ),
    (
        "avatar.transcription_started",
        {},
        "event",
        {"type": "avatar.transcription_started", "payload": {}},
    ),
    (
        "avatar.transcription_ended",
        {"text": "Hi!"},
        "transcript.final",
        {"role": "avatar", "text": "Hi!", "segment_id": AVATAR_SEGMENT},
    ),
    (
        "some.future_event",
        {"x": [1, 2]},
        "event",
        {"type": "some.future_event", "payload": {"x": [1, 2]}},
    ),
]

COMMANDS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("avatar.interrupt", {}, {"command": "avatar.interrupt"}),
    (
        "avatar.speak_text",
        {"text": "Say this"},
        {"command": "avatar.speak_text", "text": "Say this"},
    ),
    (
        "avatar.speak_response",
        {"text": "What is up?"},
        {"command": "avatar.speak_response", "text": "What is up?"},
    ),
    ("avatar.start_listening", {}, {"command": "avatar.start_listening"}),
    ("avatar.stop_listening", {}, {"command": "avatar.stop_listening"}),
    ("user.start_push_to_talk", {}, {"command": "user.start_push_to_talk"}),
    ("user.stop_push_to_talk", {}, {"command": "user.stop_push_to_talk"}),
    (
        "elevenlabs_agent_command",
        {"elevenlabs_event_type": "user_message", "data": {"text": "hi"}},
        {
            "command": "elevenlabs_agent_command",
            "payload": {"elevenlabs_event_type": "user_message", "data": {"text": "hi"}},
        },
    ),
    (
        "session.update",
        {"quality": "high"},
        {"command": "session.update", "payload": {"quality": "high"}},
    ),
    ("session.stop", {}, {"command": "session.stop"}),
    # A wrong-typed text is kept in the payload rather than lost.
    ("avatar.speak_text", {"text": 42}, {"command": "avatar.speak_text", "payload": {"text": 42}}),
]


@pytest.mark.parametrize(("event_type", "fields", "kind", "data"), RESPONSES)
def test_response_events(
    event_type: str, fields: dict[str, Any], kind: str, data: dict[str, Any]
) -> None:
    event = decode_one(
        data_item(RESPONSE, {**ENVELOPE, "event_type": event_type, **fields}, LA_AGENT)
    )
    assert (event.protocol, event.kind, event.data) == ("liveavatar", kind, data)
    assert event.source == {"topic": RESPONSE, "event_type": event_type, "event_id": "ev-1"}
    assert event.session_id == "sess-1"
    assert event.dedupe_key == "liveavatar:ev-1"
    assert event.participant == LA_AGENT
    assert (event.room, event.room_sid, event.received_at) == ("demo-room", "RM_demo", T0)


@pytest.mark.parametrize(("event_type", "fields", "data"), COMMANDS)
def test_commands(event_type: str, fields: dict[str, Any], data: dict[str, Any]) -> None:
    # Browser SDK commands often carry no event_id and no session_id.
    event = decode_one(data_item(CONTROL, {"event_type": event_type, **fields}, USER))
    assert (event.protocol, event.kind, event.data) == ("liveavatar", "command", data)
    assert event.source == {"topic": CONTROL, "event_type": event_type, "event_id": None}
    assert event.session_id is None
    assert event.dedupe_key == ""
    assert event.participant == USER


def test_source_event_id_names_the_segment_of_a_reply() -> None:
    decoder = RoomDecoder()
    fields = {"event_type": "avatar.transcription.chunk", "source_event_id": "cmd-9"}
    chunk = decode_one(data_item(RESPONSE, {**fields, "event_id": "e1", "text": "He"}), decoder)
    final = decode_one(
        data_item(
            RESPONSE,
            {"event_type": "avatar.transcription", "source_event_id": "cmd-9", "text": "Hello"},
        ),
        decoder,
    )
    assert chunk.data["segment_id"] == final.data["segment_id"] == "cmd-9"
    assert chunk.source["source_event_id"] == "cmd-9"
    assert final.dedupe_key == ""


def test_chunks_and_final_of_one_utterance_share_a_derived_segment() -> None:
    decoder = RoomDecoder()

    def send(event_type: str, text: str, at: float) -> str:
        payload = {"event_type": event_type, "text": text}
        segment_id: str = decode_one(data_item(RESPONSE, payload, received_at=at), decoder).data[
            "segment_id"
        ]
        return segment_id

    first = [
        send("user.transcription.chunk", "I", T0),
        send("user.transcription.chunk", "I need", T0 + 0.2),
        send("user.transcription", "I need help", T0 + 0.5),
    ]
    second = send("user.transcription.chunk", "Thanks", T0 + 3)
    avatar = send("avatar.transcription.chunk", "Of", T0 + 0.3)
    assert first == [USER_SEGMENT] * 3
    assert second == f"liveavatar:user@{T0_MS + 3000}"
    assert avatar == f"liveavatar:avatar@{T0_MS + 300}"


def test_integer_event_id_is_kept_as_text() -> None:
    event = decode_one(data_item(RESPONSE, {"event_id": 42, "event_type": "user.speak_started"}))
    assert event.source["event_id"] == "42"
    assert event.dedupe_key == "liveavatar:42"


def test_envelope_without_topic_is_decoded_as_a_response() -> None:
    event = decode_one(data_item("", {"event_type": "avatar.speak_started", "event_id": "e5"}))
    assert (event.protocol, event.kind, event.data) == (
        "liveavatar",
        "speech.started",
        {"role": "avatar"},
    )
    assert event.source["topic"] == ""


@pytest.mark.parametrize(
    ("payload", "error", "detail"),
    [
        (b"{not json", "invalid_json", None),
        (b"", "invalid_json", None),
        (b'{"event_type": "user.speak_started", "x": NaN}', "invalid_json", None),
        (b"[1, 2]", "not_an_object", None),
        (b'"a string"', "not_an_object", None),
        (b"\xff\xfe{}", "invalid_utf8", None),
        (b'{"text": "no type"}', "invalid_field", "event_type"),
        (b'{"event_type": 5}', "invalid_field", "event_type"),
        (b'{"event_type": "user.transcription"}', "invalid_field", "text"),
        (b'{"event_type": "user.transcription.chunk", "text": ["a"]}', "invalid_field", "text"),
        (b'{"a":' * 70 + b"1" + b"}" * 70, "too_deep", None),
        (b"[" * 100_000, "invalid_json", None),
    ],
)
def test_malformed_packets_become_raw_and_are_counted(
    payload: bytes, error: str, detail: str | None
) -> None:
    before = decode_errors("liveavatar")
    event = decode_one(data_item(RESPONSE, payload))
    assert (event.protocol, event.kind) == ("liveavatar", "raw")
    assert event.data["error"] == error
    assert event.data.get("detail") == detail
    assert event.data["topic"] == RESPONSE
    if error == "invalid_utf8":
        assert event.data["encoding"] == "base64"
        assert base64.b64decode(event.data["payload"]) == payload
    else:
        assert event.data["payload"] == payload.decode()
    assert decode_errors("liveavatar") == before + 1


def test_a_huge_json_string_is_raw_and_whole() -> None:
    payload = json.dumps("x" * (1 << 20)).encode()
    event = decode_one(data_item(RESPONSE, payload))
    assert (event.kind, event.data["error"]) == ("raw", "not_an_object")
    assert len(event.data["payload"]) == len(payload)


def test_a_huge_transcript_is_decoded() -> None:
    text = "word " * 200_000
    event = decode_one(data_item(RESPONSE, {"event_type": "user.transcription", "text": text}))
    assert (event.kind, event.data["text"]) == ("transcript.final", text)


def test_lone_surrogates_are_mended() -> None:
    payload = b'{"event_type": "user.transcription", "text": "a\\ud800b"}'
    event = decode_one(data_item(RESPONSE, payload))
    assert event.data["text"] == "a?b"


def test_byte_order_mark_is_accepted() -> None:
    payload = b"\xef\xbb\xbf" + json.dumps({"event_type": "user.speak_ended"}).encode()
    assert decode_one(data_item(RESPONSE, payload)).kind == "speech.ended"


# -- Streaming Avatar (no topic, keyed by type + task_id) ------------------------------------

STREAMING: list[tuple[str, str, dict[str, Any]]] = [
    ("avatar_start_talking", "speech.started", {"role": "avatar"}),
    ("avatar_stop_talking", "speech.ended", {"role": "avatar"}),
    ("user_start", "speech.started", {"role": "user"}),
    ("user_stop", "speech.ended", {"role": "user"}),
    ("user_start_talking", "speech.started", {"role": "user"}),
    ("user_stop_talking", "speech.ended", {"role": "user"}),
]


@pytest.mark.parametrize(("msg_type", "kind", "data"), STREAMING)
def test_streaming_avatar_speech(msg_type: str, kind: str, data: dict[str, Any]) -> None:
    event = decode_one(data_item("", {"type": msg_type, "task_id": "task-1"}, LA_AGENT))
    assert (event.protocol, event.kind, event.data) == ("liveavatar", kind, data)
    assert event.source == {"topic": "", "type": msg_type, "task_id": "task-1"}
    assert (event.session_id, event.dedupe_key) == (None, "")


def test_streaming_avatar_messages_are_deltas_closed_by_end_message() -> None:
    decoder = RoomDecoder()
    chunks = ["Hello", " there", "!"]
    partials = [
        decode_one(
            data_item("", {"type": "avatar_talking_message", "task_id": "t1", "message": c}),
            decoder,
        )
        for c in chunks
    ]
    final = decode_one(data_item("", {"type": "avatar_end_message", "task_id": "t1"}), decoder)
    assert [p.data for p in partials] == [
        {"role": "avatar", "text": c, "segment_id": "t1", "mode": "delta"} for c in chunks
    ]
    assert final.kind == "transcript.final"
    assert final.data == {"role": "avatar", "text": "Hello there!", "segment_id": "t1"}


def test_a_new_task_id_opens_a_new_turn_when_the_old_end_never_came() -> None:
    decoder = RoomDecoder()

    def chunk(task_id: str, text: str) -> Event:
        body = {"type": "avatar_talking_message", "task_id": task_id, "message": text}
        return decode_one(data_item("", body), decoder)

    first = chunk("t1", "Hello")  # t1's avatar_end_message is lost
    second = [chunk("t2", "Next"), chunk("t2", " one")]
    final = decode_one(data_item("", {"type": "avatar_end_message", "task_id": "t2"}), decoder)
    assert first.data["segment_id"] == "t1"
    assert [p.data["segment_id"] for p in second] == ["t2", "t2"]
    assert final.data == {"role": "avatar", "text": "Next one", "segment_id": "t2"}


def test_streaming_user_message_without_task_id_gets_a_derived_segment() -> None:
    decoder = RoomDecoder()
    partial = decode_one(data_item("", {"type": "user_talking_message", "message": "hi"}), decoder)
    final = decode_one(data_item("", {"type": "user_end_message"}, received_at=T0 + 1), decoder)
    segment_id = f"streaming-avatar:user@{T0_MS}"
    assert partial.data == {"role": "user", "text": "hi", "segment_id": segment_id, "mode": "delta"}
    assert final.data == {"role": "user", "text": "hi", "segment_id": segment_id}


def test_end_message_with_nothing_before_it_is_an_event() -> None:
    event = decode_one(data_item("", {"type": "avatar_end_message", "task_id": "t2"}))
    assert (event.kind, event.data) == ("event", {"type": "avatar_end_message", "payload": {}})


def test_streaming_message_without_text_is_raw() -> None:
    event = decode_one(data_item("", {"type": "avatar_talking_message", "message": None}))
    assert (event.protocol, event.kind) == ("liveavatar", "raw")
    assert (event.data["error"], event.data["detail"]) == ("invalid_field", "message")
