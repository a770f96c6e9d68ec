"""Decoder test helpers: raw item builders, and `decode()` that checks every event it returns.

Every event a decoder test sees goes through `checked()`: stamped like the pipeline would,
validated against the shipped schema, and serialized to UTF-8 JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY

from relay.contract.event import Event, Participant
from relay.contract.raw import (
    AttributesItem,
    DataItem,
    RawItem,
    RoomContext,
    TextStreamItem,
    TranscriptionItem,
    TranscriptionSegment,
)
from relay.contract.schema import validate_event
from relay.decode import RoomDecoder

CTX = RoomContext(room="demo-room", room_sid="RM_demo")
T0 = 1_763_732_701.123  # 2025-11-21T13:45:01.123Z
T0_MS = 1_763_732_701_123

USER = Participant("user-1", "PA_user", "standard", "user")
LA_AGENT = Participant("liveavatar-agent-sess-1", "PA_la", "agent", "agent")
AVATAR = Participant("heygen", "PA_heygen", "standard", "avatar")
LK_AGENT = Participant("agent-voice", "PA_agent", "agent", "agent")


def checked(events: Sequence[Event]) -> list[Event]:
    for n, event in enumerate(events, start=1):
        as_dict = event.stamped(f"test-id-{n}", n).to_dict()
        validate_event(as_dict)
        encoded = json.dumps(as_dict, ensure_ascii=False).encode("utf-8")
        assert json.loads(encoded) == as_dict
    return list(events)


def decode(item: RawItem, decoder: RoomDecoder | None = None) -> list[Event]:
    return checked((decoder or RoomDecoder()).decode(item))


def decode_one(item: RawItem, decoder: RoomDecoder | None = None) -> Event:
    events = decode(item, decoder)
    assert len(events) == 1, events
    return events[0]


def data_item(
    topic: str,
    payload: bytes | Mapping[str, Any],
    sender: Participant = USER,
    received_at: float = T0,
) -> DataItem:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return DataItem(CTX, sender, topic, raw, reliable=True, received_at=received_at)


def text_stream(
    topic: str,
    text: str,
    attributes: Mapping[str, str],
    sender: Participant = LK_AGENT,
    stream_id: str = "ST_1",
    received_at: float = T0,
    chunks: int | None = None,
) -> TextStreamItem:
    return TextStreamItem(CTX, sender, topic, stream_id, text, attributes, received_at, chunks)


def segment(
    seg_id: str, text: str, final: bool, language: str = "en", start_time: int = 0
) -> TranscriptionSegment:
    return TranscriptionSegment(seg_id, text, final, language, start_time, start_time + 500)


def transcription(
    *segments: TranscriptionSegment, sender: Participant = LK_AGENT, track_sid: str | None = "TR_1"
) -> TranscriptionItem:
    return TranscriptionItem(CTX, sender, track_sid, segments, received_at=T0)


def attributes(
    changed: Mapping[str, str], sender: Participant = LK_AGENT, received_at: float = T0
) -> AttributesItem:
    return AttributesItem(CTX, sender, changed, dict(changed), received_at)


def decode_errors(protocol: str) -> float:
    value = REGISTRY.get_sample_value("relay_decode_errors_total", {"protocol": protocol})
    return value or 0.0
