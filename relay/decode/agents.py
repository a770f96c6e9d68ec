"""LiveKit Agents conventions (docs/protocols.md section 2): transcripts, chat, agent state.

Transcripts come twice, as `lk.transcription` text streams and as legacy transcription
segments; both go through the room's `SegmentDedupe` so each update is emitted once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay.contract.event import Event
from relay.contract.kinds import Protocol
from relay.contract.raw import (
    AttributesItem,
    TextStreamItem,
    TranscriptionItem,
)
from relay.decode.events import (
    Transcript,
    agent_state_events,
    emit_transcript,
    new_event,
    raw_event,
    sender_of,
)
from relay.decode.payloads import clean_str, segment_dedupe_key
from relay.decode.state import RoomState

PROTOCOL: Protocol = "livekit-agents"
TRANSCRIPTION_TOPIC = "lk.transcription"
CHAT_TOPIC = "lk.chat"
TEXT_STREAM_TOPICS = frozenset({TRANSCRIPTION_TOPIC, CHAT_TOPIC})
SEGMENT_ID_ATTRIBUTE = "lk.segment_id"
TRACK_ID_ATTRIBUTE = "lk.transcribed_track_id"
FINAL_ATTRIBUTE = "lk.transcription_final"
AGENT_STATE_ATTRIBUTE = "lk.agent.state"
_TRANSCRIPT_ROLES = frozenset({"user", "agent", "avatar"})


def decode_text_stream(item: TextStreamItem, state: RoomState) -> list[Event]:
    if item.chunks is not None and not _streams_partials(item):
        return []
    source = {"topic": item.topic, "stream_id": item.stream_id}
    dedupe_key = f"stream:{item.stream_id}" if item.stream_id else ""
    if item.chunks is not None:
        dedupe_key += f"#{item.chunks}"
    if item.topic == TRANSCRIPTION_TOPIC:
        return _stream_transcript(item, state, source, dedupe_key)
    if item.topic == CHAT_TOPIC:
        data = {"text": clean_str(item.text)}
        return [
            new_event(item, PROTOCOL, "chat.message", data, source=source, dedupe_key=dedupe_key)
        ]
    return [raw_event(item, "raw", item.topic, item.text, source=source)]


def _stream_transcript(
    item: TextStreamItem, state: RoomState, source: dict[str, Any], dedupe_key: str
) -> list[Event]:
    # A whole stream's attributes are read after it ended: the trailer's final flag is in.
    attributes = item.attributes
    given_id = _attribute(attributes, SEGMENT_ID_ATTRIBUTE) or item.stream_id
    final = item.chunks is None and _is_final(attributes)
    role = transcript_role(item)
    segment_id = state.turns.segment_id(f"{PROTOCOL}:{role}", item.received_at, final, given_id)
    transcript = Transcript(
        role=role,
        text=clean_str(item.text),
        segment_id=segment_id,
        final=final,
        track_id=_attribute(attributes, TRACK_ID_ATTRIBUTE) or None,
    )
    return emit_transcript(item, PROTOCOL, transcript, state, source, dedupe_key)


def _streams_partials(item: TextStreamItem) -> bool:
    """An open transcription stream whose header does not already say final is a segment
    being spoken (the agent's delta stream): its text so far is a cumulative partial. A
    stream sent whole (chat, a final user transcript) waits for its end."""
    return item.topic == TRANSCRIPTION_TOPIC and not _is_final(item.attributes)


def _is_final(attributes: Mapping[str, str]) -> bool:
    return _attribute(attributes, FINAL_ATTRIBUTE).lower() == "true"


def decode_transcription(item: TranscriptionItem, state: RoomState) -> list[Event]:
    """Legacy segments: text is cumulative per segment id; `final` closes the segment."""
    events: list[Event] = []
    for segment in item.segments:
        # No id happens only with odd senders: the track and start time still name it.
        segment_id = segment.id or f"{item.track_sid or 'track'}@{segment.start_time}"
        transcript = Transcript(
            role=transcript_role(item),
            text=clean_str(segment.text),
            segment_id=segment_id,
            final=bool(segment.final),
            language=clean_str(segment.language) or None,
            track_id=item.track_sid or None,
        )
        source: dict[str, Any] = {"signal": "transcription_received", "segment_id": segment_id}
        if item.track_sid:
            source["track_sid"] = item.track_sid
        dedupe_key = segment_dedupe_key(segment_id, transcript.final, transcript.text)
        events += emit_transcript(item, PROTOCOL, transcript, state, source, dedupe_key)
    return events


def transcript_role(item: TextStreamItem | TranscriptionItem) -> str:
    role = sender_of(item).role
    return role if role in _TRANSCRIPT_ROLES else "unknown"


def decode_attributes(item: AttributesItem, state: RoomState) -> list[Event]:
    value = item.changed.get(AGENT_STATE_ATTRIBUTE)
    if not isinstance(value, str) or not value:  # removed attribute: no new state
        return []
    source = {"attribute": AGENT_STATE_ATTRIBUTE}
    return agent_state_events(item, PROTOCOL, clean_str(value), state, source)


def _attribute(attributes: Mapping[str, str], key: str) -> str:
    value = attributes.get(key)
    return value if isinstance(value, str) else ""
