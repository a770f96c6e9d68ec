"""Property tests: no input makes a decoder raise, and every event it emits is in contract.

At the end, negative controls show the schema those properties rely on does reject.

`RoomDecoder.decode` turns a decoder exception into a `raw` "decoder_exception" event; the
properties below also require that this never happens, so they test the decoders themselves
and not only the safety net.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.contract.event import Event, Participant
from relay.contract.raw import (
    AttributesItem,
    DataItem,
    ObserverItem,
    ParticipantItem,
    RawItem,
    RoomContext,
    SpeakersItem,
    TextStreamItem,
    TranscriptionItem,
    TranscriptionSegment,
)
from relay.contract.schema import load_schema, validate_event
from relay.decode import RoomDecoder
from relay.decode.liveavatar import STREAMING_TYPES
from relay.decode.livelayer import TYPES as LIVELAYER_TYPES
from tests.decode.conftest import checked

FUZZ = settings(max_examples=150, deadline=None)

TOPICS = ["agent-response", "agent-control", "", "lk.transcription", "lk.chat", "other"]
EVENT_TYPES = [
    "user.speak_started",
    "avatar.speak_ended",
    "user.transcription",
    "avatar.transcription",
    "user.transcription.chunk",
    "avatar.transcription.chunk",
    "user.transcription_ended",
    "session.stopped",
    "avatar.speak_text",
    "elevenlabs_agent_event",
]
ATTRIBUTE_KEYS = ["lk.agent.state", "agent.context", "lk.segment_id", "lk.transcription_final"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
NAMES = EVENT_TYPES + sorted(STREAMING_TYPES) + sorted(LIVELAYER_TYPES)
_NO_TOPIC_NAMES = STREAMING_TYPES.keys() | LIVELAYER_TYPES
_maybe_text = st.text(max_size=20) | json_values
# Known names and fields most of the time (so every decoder path runs), anything otherwise.
_fields = st.fixed_dictionaries(
    {},
    optional={
        key: _maybe_text
        for key in [
            "event_id",
            "session_id",
            "source_event_id",
            "text",
            "end_reason",
            "task_id",
            "message",
            "id",
            "state",
        ]
    }
    | {"final": st.booleans() | _maybe_text},
)


def _packet(
    fields: dict[str, Any], name: Any, mismatch: bool, control: bool, extra: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """A message as its protocol sends it (topic and name key), or `mismatch`ed on purpose.

    LiveLayer and Streaming Avatar send no topic and key by `type`; LiveAvatar sends on
    `agent-response` / `agent-control` and keys by `event_type`.
    """
    untopiced = (name in _NO_TOPIC_NAMES if isinstance(name, str) else False) != mismatch
    topic = "" if untopiced else ("agent-control" if control else "agent-response")
    return topic, {**extra, **fields, ("type" if untopiced else "event_type"): name}


packets = st.builds(
    _packet,
    _fields,
    st.sampled_from(NAMES) | st.sampled_from(NAMES) | json_values,
    st.sampled_from([False, False, False, True]),
    st.booleans(),
    st.dictionaries(st.text(max_size=6), json_values, max_size=3),
)
messages = packets.map(lambda packet: packet[1])
payloads = st.binary(max_size=200) | messages.map(lambda m: json.dumps(m).encode())
topics = st.sampled_from(TOPICS) | st.text(max_size=12)
participants = st.builds(
    Participant,
    identity=st.sampled_from(["", "heygen", "liveavatar-agent-s1", "liveavatar-agent-", "u1"])
    | st.text(max_size=12),
    sid=st.none() | st.text(max_size=8),
    kind=st.sampled_from(["standard", "ingress", "egress", "sip", "agent", "unknown"]),
    role=st.sampled_from(["user", "agent", "avatar", "observer", "unknown"]),
)
contexts = st.builds(
    RoomContext, room=st.text(min_size=1, max_size=12), room_sid=st.none() | st.text()
)
times = st.floats(min_value=0, max_value=4e9)
attribute_maps = st.dictionaries(
    st.sampled_from(ATTRIBUTE_KEYS) | st.text(max_size=8),
    st.sampled_from(["true", "false", "idle", "speaking", "", "{}", '{"a": 1}']) | st.text(),
    max_size=4,
)
segments = st.builds(
    TranscriptionSegment,
    id=st.sampled_from(["", "SG_1", "SG_2"]) | st.text(max_size=6),
    text=st.text(max_size=30),
    final=st.booleans(),
    language=st.text(max_size=5),
    start_time=st.integers(min_value=0, max_value=10**9),
    end_time=st.integers(min_value=0, max_value=10**9),
)

items: st.SearchStrategy[RawItem] = st.one_of(
    st.builds(DataItem, contexts, participants, topics, payloads, st.booleans(), times),
    st.builds(
        TextStreamItem,
        contexts,
        participants,
        topics,
        st.text(max_size=8),
        st.text(),
        attribute_maps,
        times,
        st.none() | st.integers(min_value=1, max_value=50),
    ),
    st.builds(
        TranscriptionItem,
        contexts,
        participants,
        st.none() | st.text(max_size=8),
        st.lists(segments, max_size=4),
        times,
    ),
    st.builds(AttributesItem, contexts, participants, attribute_maps, attribute_maps, times),
    st.builds(SpeakersItem, contexts, st.lists(st.text(max_size=6), max_size=5), times),
    st.builds(
        ParticipantItem,
        contexts,
        participants,
        st.sampled_from(["joined", "left"]),
        st.none() | st.text(),
        times,
    ),
    st.builds(
        ObserverItem,
        contexts,
        st.sampled_from(["joined", "reconnecting", "resumed", "left"]),
        st.none() | st.text(),
        st.none() | st.integers(min_value=-5, max_value=10**7),
        times,
    ),
)


def _no_decoder_bug(events: list[Event]) -> None:
    for event in events:
        assert event.data.get("error") != "decoder_exception", event.data


@FUZZ
@given(st.lists(items, max_size=12))
def test_any_item_sequence_decodes_into_valid_events(sequence: list[RawItem]) -> None:
    decoder = RoomDecoder()
    for item in sequence:
        events = checked(decoder.decode(item))
        _no_decoder_bug(events)
        assert all(event.room == item.ctx.room for event in events)


@FUZZ
@given(st.sampled_from(TOPICS), st.binary(max_size=400))
def test_any_bytes_on_any_topic(topic: str, payload: bytes) -> None:
    item = DataItem(RoomContext("r"), Participant("p"), topic, payload, True, 1.0)
    events = checked(RoomDecoder().decode(item))
    _no_decoder_bug(events)
    assert events, "a data packet never vanishes: it is decoded or kept raw"


@FUZZ
@given(packets)
def test_any_message_shape_on_message_topics(packet: tuple[str, dict[str, Any]]) -> None:
    topic, message = packet
    item = DataItem(
        RoomContext("r"), Participant("p"), topic, json.dumps(message).encode(), True, 1.0
    )
    events = checked(RoomDecoder().decode(item))
    _no_decoder_bug(events)


# -- the schema the properties check against is not vacuous ---------------------------------

_GOOD = Event(
    room="r",
    protocol="livekit-agents",
    kind="transcript.partial",
    data={"role": "agent", "text": "hi", "segment_id": "SG_1", "mode": "cumulative"},
    received_at=1.0,
    source={"topic": "lk.transcription"},
).stamped("id-1", 1)


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "speech.begun"},
        {"protocol": "heygen"},
        {"extra": 1},
        {"id": ""},
        {"ts": "yesterday"},
        {"data": {"role": "agent", "text": "hi", "segment_id": "SG_1"}},  # partial without mode
        {"data": {"role": "agent", "text": "hi", "segment_id": "SG_1", "mode": "sideways"}},
        {"kind": "transcript.final"},  # a final has no mode
        {"kind": "speakers.active", "data": {"identities": ["a"]}},  # protocol must be livekit
        {"kind": "raw", "data": {"topic": "t", "payload": "p", "encoding": "hex"}},
        {"participant": {"identity": "x", "sid": None, "kind": "robot", "role": "user"}},
        {"source": {"event_id": 5}},
    ],
)
def test_schema_rejects_events_out_of_contract(change: dict[str, Any]) -> None:
    validate_event(_GOOD.to_dict())
    with pytest.raises(jsonschema.ValidationError):
        validate_event({**_GOOD.to_dict(), **change})


def test_schema_is_shipped_as_package_data() -> None:
    assert load_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
