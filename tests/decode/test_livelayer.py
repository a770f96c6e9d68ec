"""LiveLayer data messages (docs/protocols.md section 3): NO topic, JSON keyed by `type`."""

from __future__ import annotations

from typing import Any

import pytest

from relay.decode import RoomDecoder
from relay.decode.livelayer import AGENT_TO_PAGE, PAGE_TO_AGENT
from tests.decode.conftest import (
    LK_AGENT,
    T0_MS,
    USER,
    attributes,
    data_item,
    decode,
    decode_errors,
    decode_one,
    text_stream,
)

# Messages with no kind of their own (agent -> page): `event {type, payload}`.
AGENT_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("emit_event", {"eventName": "cart.added", "data": {"sku": "A1"}}),
    ("avatar_stream_ready", {}),
    ("avatar_active", {}),
    ("avatar_idle", {}),
    ("bot_ready", {}),
    ("agent_error", {"message": "LLM timeout"}),
    ("idle_warning", {"seconds": 30}),
    ("idle_timeout", {}),
    ("navigate", {"url": "/pricing"}),
    ("scroll_to", {"selector": "#faq"}),
    ("scroll_page", {"direction": "down"}),
    ("click", {"selector": "button.buy"}),
    ("fill_form", {"fields": {"email": "a@b.c"}}),
    ("focus_field", {"field": "email"}),
    ("submit_form", {"formId": "signup"}),
    ("request_page_context", {"requestId": "r1"}),
    ("request_routes", {"requestId": "r2"}),
    ("advance_step", {}),
    ("go_back", {}),
    ("submit_flow", {"flowId": "f1"}),
    ("task_field_updated", {"field": "name", "value": "Ada"}),
    ("task_completed", {"taskId": "t1"}),
]
# Page -> agent: `command {command: type, text?, payload?}`.
PAGE_COMMANDS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "page_context",
        {"context": {"url": "/a"}, "requestId": "r1"},
        {"command": "page_context", "payload": {"context": {"url": "/a"}, "requestId": "r1"}},
    ),
    ("page_context_pending", {}, {"command": "page_context_pending"}),
    (
        "routes",
        {"routes": ["/", "/a"]},
        {"command": "routes", "payload": {"routes": ["/", "/a"]}},
    ),
    ("form_submitted", {}, {"command": "form_submitted"}),
    (
        "form_submit_blocked",
        {"reason": "captcha"},
        {"command": "form_submit_blocked", "payload": {"reason": "captcha"}},
    ),
    ("form_submit_uncertain", {}, {"command": "form_submit_uncertain"}),
    ("user_message", {"text": "book a demo"}, {"command": "user_message", "text": "book a demo"}),
]


def test_tables_cover_every_livelayer_type() -> None:
    covered = {t for t, _ in AGENT_EVENTS} | {"agent_caption", "agent_state"}
    assert covered == AGENT_TO_PAGE
    assert {t for t, _, _ in PAGE_COMMANDS} == PAGE_TO_AGENT


@pytest.mark.parametrize(("msg_type", "fields"), AGENT_EVENTS)
def test_agent_to_page_events(msg_type: str, fields: dict[str, Any]) -> None:
    event = decode_one(data_item("", {"type": msg_type, **fields}, LK_AGENT))
    assert (event.protocol, event.kind) == ("livelayer", "event")
    assert event.data == {"type": msg_type, "payload": fields}
    assert event.source == {"topic": "", "type": msg_type}
    assert (event.session_id, event.dedupe_key, event.participant) == (None, "", LK_AGENT)


@pytest.mark.parametrize(("msg_type", "fields", "data"), PAGE_COMMANDS)
def test_page_to_agent_commands(
    msg_type: str, fields: dict[str, Any], data: dict[str, Any]
) -> None:
    event = decode_one(data_item("", {"type": msg_type, **fields}, USER))
    assert (event.protocol, event.kind, event.data) == ("livelayer", "command", data)
    assert event.source == {"topic": "", "type": msg_type}


@pytest.mark.parametrize(
    ("fields", "kind", "data"),
    [
        (
            {"id": "cap-1", "text": "Let me", "final": False},
            "transcript.partial",
            {"role": "agent", "text": "Let me", "segment_id": "cap-1", "mode": "cumulative"},
        ),
        (
            {"id": "cap-1", "text": "Let me check.", "final": True},
            "transcript.final",
            {"role": "agent", "text": "Let me check.", "segment_id": "cap-1"},
        ),
        (
            {"id": 17, "text": "Yes", "final": "true"},
            "transcript.final",
            {"role": "agent", "text": "Yes", "segment_id": "17"},
        ),
        (
            {"text": "No id"},
            "transcript.partial",
            {
                "role": "agent",
                "text": "No id",
                "segment_id": f"livelayer:agent@{T0_MS}",
                "mode": "cumulative",
            },
        ),
    ],
)
def test_agent_caption(fields: dict[str, Any], kind: str, data: dict[str, Any]) -> None:
    event = decode_one(data_item("", {"type": "agent_caption", **fields}, LK_AGENT))
    assert (event.protocol, event.kind, event.data) == ("livelayer", kind, data)
    assert event.dedupe_key.startswith(f"segment:{data['segment_id']}:")


def test_caption_and_transcription_stream_of_a_segment_are_emitted_once() -> None:
    decoder = RoomDecoder()
    stream = text_stream(
        "lk.transcription", "Done.", {"lk.segment_id": "SG_7", "lk.transcription_final": "true"}
    )
    assert len(decode(stream, decoder)) == 1
    caption = data_item(
        "", {"type": "agent_caption", "id": "SG_7", "text": "Done.", "final": True}, LK_AGENT
    )
    assert decode(caption, decoder) == []


def test_agent_state_message_and_attribute_share_the_last_state() -> None:
    decoder = RoomDecoder()
    first = decode_one(
        data_item("", {"type": "agent_state", "state": "listening"}, LK_AGENT), decoder
    )
    assert (first.protocol, first.kind, first.data) == (
        "livelayer",
        "agent.state",
        {"state": "listening", "previous": None},
    )
    assert first.source == {"topic": "", "type": "agent_state"}
    assert decode(attributes({"lk.agent.state": "listening"}), decoder) == []
    second = decode_one(attributes({"lk.agent.state": "thinking"}), decoder)
    assert second.data == {"state": "thinking", "previous": "listening"}


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"type": "agent_caption", "id": "c", "final": True}, "text"),
        ({"type": "agent_caption", "text": 3}, "text"),
        ({"type": "agent_state"}, "state"),
        ({"type": "agent_state", "state": ["idle"]}, "state"),
    ],
)
def test_known_type_with_bad_fields_is_raw(fields: dict[str, Any], detail: str) -> None:
    before = decode_errors("livelayer")
    event = decode_one(data_item("", fields, LK_AGENT))
    assert (event.protocol, event.kind) == ("livelayer", "raw")
    assert (event.data["error"], event.data["detail"]) == ("invalid_field", detail)
    assert event.source == {"topic": "", "type": fields["type"]}
    assert decode_errors("livelayer") == before + 1


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type": "something_new", "a": 1}',
        b'{"no_type": true}',
        b'{"type": 3}',
        b"hello",
        b"\x80\x81",
    ],
)
def test_unclaimed_untopiced_packets_are_raw(payload: bytes) -> None:
    before = decode_errors("raw")
    event = decode_one(data_item("", payload))
    assert (event.protocol, event.kind) == ("raw", "raw")
    assert "error" not in event.data
    assert event.data["topic"] == ""
    assert decode_errors("raw") == before + 1


def test_page_context_attribute() -> None:
    event = decode_one(
        attributes({"agent.context": '{"url": "/pricing", "title": "Pricing"}'}, USER)
    )
    assert (event.protocol, event.kind) == ("livelayer", "event")
    assert event.data == {
        "type": "agent.context",
        "payload": {"context": {"url": "/pricing", "title": "Pricing"}},
    }
    assert event.source == {"attribute": "agent.context"}


def test_page_context_attribute_that_is_not_json_is_kept_as_text() -> None:
    event = decode_one(attributes({"agent.context": "just text"}, USER))
    assert event.data["payload"] == {"context": "just text"}
