"""From the SDK's objects to the contract's: participants, segments, dead-letter details."""

from __future__ import annotations

import base64

from livekit import rtc

from relay.contract.event import Participant
from relay.decode.items import TranscriptionSegment
from relay.decode.roles import classify_role, participant_kind_name

DEAD_LETTER_PREVIEW_BYTES = 256


def to_participant(participant: rtc.Participant | None) -> Participant:
    """The contract's participant from the SDK's; a server-sent packet has none."""
    if participant is None:
        return Participant(identity="", role="unknown")
    kind = participant_kind_name(int(participant.kind))
    attributes = dict(participant.attributes)
    role = classify_role(participant.identity, kind, attributes)
    return Participant(identity=participant.identity, sid=participant.sid, kind=kind, role=role)


def identified_only(identity: str) -> Participant:
    """A sender known by identity alone (a text stream's, once it left the room)."""
    return Participant(identity=identity, role=classify_role(identity, "unknown", {}))


def to_segment(segment: rtc.TranscriptionSegment) -> TranscriptionSegment:
    s = segment
    return TranscriptionSegment(s.id, s.text, s.final, s.language, s.start_time, s.end_time)


def oversized_detail(sender: Participant, topic: str, payload: bytes) -> dict[str, object]:
    """What a dead letter keeps of an oversized packet: a bounded preview, never all of it."""
    preview = base64.b64encode(payload[:DEAD_LETTER_PREVIEW_BYTES]).decode("ascii")
    return {
        "topic": topic,
        "sender": sender.identity,
        "size": len(payload),
        "preview_base64": preview,
    }


def text_stream_detail(info: rtc.TextStreamInfo, sender: str, error: str) -> dict[str, object]:
    return {"topic": info.topic, "stream_id": info.stream_id, "sender": sender, "error": error}


def enum_name(enum: object, value: int | None) -> str | None:
    """A protobuf enum value's name (DisconnectReason), or None when unset or unknown."""
    if value is None:
        return None
    try:
        name: str = enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return None
    return name
