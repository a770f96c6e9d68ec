"""What the observer hands to the decode stage: raw items, stamped with the receive time.

The SDK handlers build these from the SDK's objects and return at once; the decode stage
(relay.decode) turns them into events. A sender here is what the SDK said about it
(identity, sid, kind): its role in the conversation is decided once, by the decode stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal

from relay.contract.event import Participant
from relay.contract.kinds import LimitReason, RefusedReason


@dataclasses.dataclass(frozen=True, slots=True)
class RoomContext:
    """What a decoder may know about the room an item came from."""

    room: str
    room_sid: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DataItem:
    """A user data packet (`data_received`). `topic` is "" when the packet had none."""

    ctx: RoomContext
    sender: Participant
    topic: str
    payload: bytes
    reliable: bool
    received_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class TextStreamItem:
    """A text stream (`lk.transcription`, `lk.chat`): read to its end (`chunks` None),
    or the text of its first `chunks` chunks while it is still open.

    A whole stream's `attributes` are read after it ended, so the trailer's values are
    in; an open stream's are the header's.
    """

    ctx: RoomContext
    sender: Participant
    topic: str
    stream_id: str
    text: str
    attributes: Mapping[str, str]
    received_at: float
    chunks: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TranscriptionSegment:
    id: str
    text: str
    final: bool
    language: str
    start_time: int
    end_time: int


@dataclasses.dataclass(frozen=True, slots=True)
class TranscriptionItem:
    """Legacy transcription packets (`transcription_received`)."""

    ctx: RoomContext
    sender: Participant
    track_sid: str | None
    segments: Sequence[TranscriptionSegment]
    received_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class AttributesItem:
    """`participant_attributes_changed`: `changed` holds only what changed, `attributes` all."""

    ctx: RoomContext
    sender: Participant
    changed: Mapping[str, str]
    attributes: Mapping[str, str]
    received_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class SpeakersItem:
    """`active_speakers_changed`: identities in the SFU's order (loudest first)."""

    ctx: RoomContext
    identities: Sequence[str]
    received_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class ParticipantItem:
    """A participant came or went (also the snapshot taken right after connect)."""

    ctx: RoomContext
    participant: Participant
    change: Literal["joined", "left"]
    reason: str | None
    received_at: float
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class ObserverItem:
    """The relay's own connection state: joined, reconnecting, resumed, left."""

    ctx: RoomContext
    change: Literal["joined", "reconnecting", "resumed", "left"]
    reason: str | None
    gap_ms: int | None
    received_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class LimitedItem:
    """What the room's limits (limits.*) dropped in one period, or since the last period
    when the room is left (`left`): the stream's notice of that loss."""

    ctx: RoomContext
    period_s: float
    reasons: Mapping[LimitReason, int]
    dropped_bytes: int
    top_participants: Mapping[str, int]
    left: bool
    received_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class RejectedItem:
    """What the observer refused (an oversized packet, an aborted text stream): it goes to
    the dead-letter stream in its room's order, with `detail` (never the whole payload)."""

    ctx: RoomContext
    reason: RefusedReason
    detail: Mapping[str, object]
    received_at: float


RawItem = (
    DataItem
    | TextStreamItem
    | TranscriptionItem
    | AttributesItem
    | SpeakersItem
    | ParticipantItem
    | ObserverItem
    | LimitedItem
    | RejectedItem
)
