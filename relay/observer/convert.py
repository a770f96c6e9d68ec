"""From the SDK's objects to the contract's: senders, segments, dead-letter details.

A sender is what the SDK says of it (identity, sid, kind); its role is the decode
stage's to decide, once per participant (relay.decode.roles).
"""

from __future__ import annotations

import base64
import inspect
from collections.abc import Callable, Mapping

from livekit import rtc

from relay.contract.event import NO_PARTICIPANT, Participant
from relay.contract.raw import TranscriptionSegment

DEAD_LETTER_PREVIEW_BYTES = 256

# livekit.rtc.ParticipantKind values (livekit 1.2.0); tests/decode/test_sfu.py checks
# them against the SDK. CONNECTOR (5) and BRIDGE (6) are left out on purpose:
# livekit.protocol numbers them 7 and 8, so an int alone does not say which enum it is.
_KIND_NAMES: Mapping[int, str] = {
    0: "standard",
    1: "ingress",
    2: "egress",
    3: "sip",
    4: "agent",
}


def participant_kind_name(kind_int: int) -> str:
    """`rtc.ParticipantKind` int to the contract's `participant.kind` ("unknown" if new)."""
    return _KIND_NAMES.get(kind_int, "unknown") if isinstance(kind_int, int) else "unknown"


def to_participant(participant: rtc.Participant | None) -> Participant:
    """The contract's sender from the SDK's participant; a server-sent packet has none."""
    if participant is None:
        return NO_PARTICIPANT
    kind = participant_kind_name(int(participant.kind))
    return Participant(identity=participant.identity, sid=participant.sid, kind=kind)


def identified_only(identity: str) -> Participant:
    """A sender known by identity alone (a text stream's, once it left the room)."""
    return Participant(identity=identity)


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


Handler = Callable[..., None]


def sdk_callback(handler: Handler) -> Handler:
    """`handler` in a form the SDK calls cheaply. Its EventEmitter reads every callback's
    signature on every emit, to pass only as many arguments as it takes: for a bound
    method that costs about 10 us (more with cold caches, as between packets), for a
    function carrying its `__signature__` about 1 us. Public Python, nothing of the SDK's."""
    signature = inspect.signature(handler)

    def callback(*args: object) -> None:
        handler(*args)

    callback.__signature__ = signature  # type: ignore[attr-defined]
    return callback
