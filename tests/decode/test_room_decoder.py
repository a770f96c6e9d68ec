"""RoomDecoder: dispatch, session carry-over, bounded state, and never raising."""

from __future__ import annotations

import pytest

from relay.contract.event import Participant
from relay.contract.raw import ObserverItem, RawItem
from relay.decode import RoomDecoder, agents
from relay.decode.state import AGENT_STATES_MAX
from tests.decode.conftest import (
    CTX,
    LA_AGENT,
    T0,
    attributes,
    data_item,
    decode,
    decode_errors,
    decode_one,
    text_stream,
)


def test_unknown_topic_is_raw_and_counted() -> None:
    before = decode_errors("raw")
    event = decode_one(data_item("game.move", b"\xff\x01binary"))
    assert (event.protocol, event.kind) == ("raw", "raw")
    assert event.data == {"topic": "game.move", "payload": "/wFiaW5hcnk=", "encoding": "base64"}
    assert event.source == {"topic": "game.move"}
    assert decode_errors("raw") == before + 1


def test_utf8_payload_on_unknown_topic_stays_text() -> None:
    event = decode_one(data_item("notes", b"plain\x00words \xc3\xa9"))
    assert event.data == {"topic": "notes", "payload": "plain\x00words é"}


def test_a_decoder_bug_becomes_a_raw_event(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(agents, "decode_text_stream", broken)
    before = decode_errors("livekit-agents")
    event = decode_one(text_stream("lk.transcription", "hi", {}))
    assert (event.protocol, event.kind) == ("livekit-agents", "raw")
    assert event.data["error"] == "decoder_exception"
    assert event.data["detail"] == "KeyError: 'boom'"
    assert event.data["payload"] == "hi"
    assert decode_errors("livekit-agents") == before + 1


def test_not_a_raw_item_is_counted_not_raised() -> None:
    before = decode_errors("raw")
    not_an_item: RawItem = object()  # type: ignore[assignment]
    assert RoomDecoder().decode(not_an_item) == []
    assert decode_errors("raw") == before + 1


def test_session_id_is_learned_and_carried() -> None:
    decoder = RoomDecoder()
    before = decode_one(ObserverItem(CTX, "joined", None, None, T0), decoder)
    assert before.session_id is None
    envelope = {"event_type": "user.speak_started", "session_id": "sess-7"}
    decode_one(data_item("agent-response", envelope, LA_AGENT), decoder)
    assert decoder.session_id == "sess-7"
    later = [
        decode_one(attributes({"lk.agent.state": "idle"}), decoder),
        decode_one(data_item("", {"type": "navigate", "url": "/"}), decoder),
        decode_one(data_item("other", b"?"), decoder),
    ]
    assert [e.session_id for e in later] == ["sess-7"] * 3
    # A message naming its own session keeps it, and becomes the room's.
    other = decode_one(
        data_item("agent-response", {"event_type": "user.speak_ended", "session_id": "sess-8"}),
        decoder,
    )
    assert (other.session_id, decoder.session_id) == ("sess-8", "sess-8")


def test_agent_states_are_bounded() -> None:
    decoder = RoomDecoder()
    for n in range(AGENT_STATES_MAX + 10):
        decode(attributes({"lk.agent.state": "idle"}, Participant(f"agent-{n}")), decoder)
    assert len(decoder._state.agent_states) == AGENT_STATES_MAX
    # The first agent was forgotten: its next state has no previous.
    event = decode_one(attributes({"lk.agent.state": "speaking"}, Participant("agent-0")), decoder)
    assert event.data["previous"] is None
