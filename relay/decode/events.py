"""Building events, the same way for every protocol: what decoders share.

No protocol decoder imports another: what two protocols have in common (transcripts,
agent state, raw events) is built here, against the room's shared state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from relay.contract.event import NO_PARTICIPANT, Event, Participant
from relay.contract.kinds import EventKind, Protocol
from relay.contract.raw import (
    AttributesItem,
    DataItem,
    RawItem,
    TextStreamItem,
    TranscriptionItem,
)
from relay.decode.payloads import clean_str, get_str, payload_fields
from relay.decode.state import RoomState
from relay.metrics import DECODE_ERRORS


def sender_of(item: RawItem) -> Participant:
    if isinstance(item, DataItem | TextStreamItem | TranscriptionItem | AttributesItem):
        return item.sender
    return NO_PARTICIPANT


def new_event(
    item: RawItem,
    protocol: Protocol,
    kind: EventKind,
    data: dict[str, Any],
    *,
    source: dict[str, Any],
    participant: Participant | None = None,
    session_id: str | None = None,
    dedupe_key: str = "",
) -> Event:
    return Event(
        room=item.ctx.room,
        room_sid=item.ctx.room_sid,
        protocol=protocol,
        kind=kind,
        data=data,
        received_at=item.received_at,
        participant=participant if participant is not None else sender_of(item),
        source=source,
        session_id=session_id,
        dedupe_key=dedupe_key,
    )


def raw_event(
    item: RawItem,
    protocol: Protocol,
    topic: str,
    payload: bytes | str,
    *,
    error: str | None = None,
    detail: str | None = None,
    source: dict[str, Any] | None = None,
) -> Event:
    """What no decoder could map: kept whole, and counted against the protocol it claimed."""
    data: dict[str, Any] = {"topic": topic, **payload_fields(payload)}
    if error is not None:
        data["error"] = error
    if detail is not None:
        data["detail"] = clean_str(detail)
    event = new_event(item, protocol, "raw", data, source=source or {"topic": topic})
    DECODE_ERRORS.labels(protocol).inc()
    return event


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One JSON data message of a known protocol, and what every event made from it shares."""

    item: DataItem
    protocol: Protocol
    obj: dict[str, Any]
    name: str  # event_type or type
    envelope: frozenset[str]  # keys that are addressing, not payload
    source: dict[str, Any]
    session_id: str | None = None
    dedupe_key: str = ""

    def event(self, kind: EventKind, data: dict[str, Any]) -> Event:
        return new_event(
            self.item,
            self.protocol,
            kind,
            data,
            source=dict(self.source),
            session_id=self.session_id,
            dedupe_key=self.dedupe_key,
        )

    def payload(self, *also: str) -> dict[str, Any]:
        """The message's own fields: everything but the envelope (and `also`)."""
        skip = self.envelope.union(also)
        return {key: value for key, value in self.obj.items() if key not in skip}

    def generic(self) -> Event:
        """A known message with no kind of its own: `event {type, payload}`."""
        return self.event("event", {"type": self.name, "payload": self.payload()})

    def command(self) -> Event:
        """`command {command, text?, payload?}`: payload holds every other field."""
        data: dict[str, Any] = {"command": self.name}
        text = get_str(self.obj, "text")
        if text is not None:
            data["text"] = text
        payload = self.payload("text") if text is not None else self.payload()
        if payload:
            data["payload"] = payload
        return self.event("command", data)

    def invalid(self, field: str) -> Event:
        """A required field is missing or of the wrong type: the message goes out raw."""
        return raw_event(
            self.item,
            self.protocol,
            self.item.topic,
            self.item.payload,
            error="invalid_field",
            detail=field,
            source=dict(self.source),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Transcript:
    """A transcript's `data`, built the same way by every protocol."""

    role: str
    text: str
    segment_id: str
    final: bool
    mode: str = "cumulative"  # of partials: cumulative (replaces) or delta (appends)
    language: str | None = None
    track_id: str | None = None

    @property
    def kind(self) -> EventKind:
        return "transcript.final" if self.final else "transcript.partial"

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "text": self.text, "segment_id": self.segment_id}
        if not self.final:
            out["mode"] = self.mode
        if self.language:
            out["language"] = self.language
        if self.track_id:
            out["track_id"] = self.track_id
        return out


def emit_transcript(
    item: TextStreamItem | TranscriptionItem | DataItem,
    protocol: Protocol,
    transcript: Transcript,
    state: RoomState,
    source: dict[str, Any],
    dedupe_key: str,
) -> list[Event]:
    """The transcript's event, unless the same segment update was already emitted."""
    if not state.segments.admit(transcript.segment_id, transcript.final, transcript.text):
        return []
    event = new_event(
        item, protocol, transcript.kind, transcript.data(), source=source, dedupe_key=dedupe_key
    )
    return [event]


def agent_state_events(
    item: AttributesItem | DataItem,
    protocol: Protocol,
    new_state: str,
    state: RoomState,
    source: dict[str, Any],
) -> list[Event]:
    """`agent.state {state, previous}`; a state equal to the last one seen is no change.

    The last state is kept per agent identity across protocols, so a LiveLayer
    `agent_state` message repeating the `lk.agent.state` attribute adds nothing.
    """
    identity = item.sender.identity
    previous = state.agent_states.get(identity)
    if previous == new_state:
        return []
    state.agent_states.put(identity, new_state)
    data = {"state": new_state, "previous": previous}
    return [new_event(item, protocol, "agent.state", data, source=source)]
