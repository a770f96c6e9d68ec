"""LiveAvatar FULL mode (docs/protocols.md section 1).

Two wire forms:
- the current one: data packets on `agent-response` / `agent-control`, one flat JSON
  envelope keyed by `event_type` (with `event_id`, `session_id`, `source_event_id`);
- the older Streaming Avatar one: data packets with NO topic keyed by `type` + `task_id`.

Segment ids of transcripts: `source_event_id` when the message has one (it ties the chunks
and the final of one reply to the command that caused it), else the speaker's open turn
(`Turns`). `event_id` names one message, not an utterance, so it is only the dedupe key.
"""

from __future__ import annotations

from typing import Any, Literal

from relay.contract.event import Event
from relay.contract.kinds import EventKind, Protocol
from relay.contract.raw import DataItem
from relay.decode.events import Message, Transcript, raw_event
from relay.decode.payloads import get_id, get_str, parse_json_object
from relay.decode.state import RoomState

PROTOCOL: Protocol = "liveavatar"
RESPONSE_TOPIC = "agent-response"
CONTROL_TOPIC = "agent-control"
TOPICS = frozenset({RESPONSE_TOPIC, CONTROL_TOPIC})
ENVELOPE_KEYS = frozenset({"event_id", "event_type", "session_id", "source_event_id"})
STREAMING_KEYS = frozenset({"type", "task_id"})

# event_type -> (kind, role)
_SPEECH: dict[str, tuple[EventKind, str]] = {
    "user.speak_started": ("speech.started", "user"),
    "user.speak_ended": ("speech.ended", "user"),
    "avatar.speak_started": ("speech.started", "avatar"),
    "avatar.speak_ended": ("speech.ended", "avatar"),
}
# event_type -> (role, final, mode of partials). User chunks replace the previous chunk,
# avatar chunks append to it.
_TRANSCRIPTS = {
    "user.transcription": ("user", True, "cumulative"),
    "avatar.transcription": ("avatar", True, "delta"),
    "user.transcription.chunk": ("user", False, "cumulative"),
    "avatar.transcription.chunk": ("avatar", False, "delta"),
    # Legacy forms: *_started has no kind of its own (an `event`), *_ended carries the text.
    "user.transcription_ended": ("user", True, "cumulative"),
    "avatar.transcription_ended": ("avatar", True, "delta"),
}

# Streaming Avatar `type` -> (what, role). `user_start_talking`/`user_stop_talking` are what
# the older web SDK names `user_start`/`user_stop`: both are accepted.
STREAMING_TYPES: dict[str, tuple[EventKind | Literal["chunk", "end"], str]] = {
    "avatar_start_talking": ("speech.started", "avatar"),
    "avatar_stop_talking": ("speech.ended", "avatar"),
    "user_start": ("speech.started", "user"),
    "user_stop": ("speech.ended", "user"),
    "user_start_talking": ("speech.started", "user"),
    "user_stop_talking": ("speech.ended", "user"),
    "avatar_talking_message": ("chunk", "avatar"),
    "user_talking_message": ("chunk", "user"),
    "avatar_end_message": ("end", "avatar"),
    "user_end_message": ("end", "user"),
}


def decode_data(item: DataItem, state: RoomState) -> list[Event]:
    """A packet on `agent-response` / `agent-control`."""
    parsed = parse_json_object(item.payload)
    if parsed.obj is None:
        return [raw_event(item, PROTOCOL, item.topic, item.payload, error=parsed.error)]
    return decode_envelope(item, parsed.obj, state)


def decode_envelope(item: DataItem, obj: dict[str, Any], state: RoomState) -> list[Event]:
    event_type = get_str(obj, "event_type")
    if not event_type:
        error, detail = "invalid_field", "event_type"
        return [raw_event(item, PROTOCOL, item.topic, item.payload, error=error, detail=detail)]
    message = _envelope(item, obj, event_type)
    if item.topic == CONTROL_TOPIC:
        return [message.command()]
    if event_type in _SPEECH:
        kind, role = _SPEECH[event_type]
        return [message.event(kind, {"role": role})]
    if event_type in _TRANSCRIPTS:
        role, final, mode = _TRANSCRIPTS[event_type]
        return [_transcript(message, state, role, final, mode)]
    if event_type == "session.stopped":
        # The docs call it end_reason, the SDK stop_reason.
        reason = get_str(obj, "end_reason") or get_str(obj, "stop_reason")
        return [message.event("session.stopped", {"reason": reason} if reason else {})]
    # Push-to-talk acks, elevenlabs_agent_event, session.updated, new types: passed through.
    return [message.generic()]


def _envelope(item: DataItem, obj: dict[str, Any], event_type: str) -> Message:
    event_id = get_id(obj, "event_id")
    source: dict[str, Any] = {"topic": item.topic, "event_type": event_type, "event_id": event_id}
    source_event_id = get_id(obj, "source_event_id")
    if source_event_id:
        source["source_event_id"] = source_event_id
    return Message(
        item=item,
        protocol=PROTOCOL,
        obj=obj,
        name=event_type,
        envelope=ENVELOPE_KEYS,
        source=source,
        session_id=get_str(obj, "session_id") or None,
        dedupe_key=f"liveavatar:{event_id}" if event_id else "",
    )


def _transcript(message: Message, state: RoomState, role: str, final: bool, mode: str) -> Event:
    text = get_str(message.obj, "text")
    if text is None:
        return message.invalid("text")
    given = get_id(message.obj, "source_event_id")
    key = f"{PROTOCOL}:{role}"
    segment_id = state.turns.segment_id(key, message.item.received_at, final, given)
    transcript = Transcript(role=role, text=text, segment_id=segment_id, final=final, mode=mode)
    return message.event(transcript.kind, transcript.data())


def decode_streaming(
    item: DataItem, obj: dict[str, Any], msg_type: str, state: RoomState
) -> list[Event]:
    """Streaming Avatar: chunks are deltas; `*_end_message` closes the turn with its text."""
    what, role = STREAMING_TYPES[msg_type]
    task_id = get_id(obj, "task_id")
    source: dict[str, Any] = {"topic": item.topic, "type": msg_type}
    if task_id:
        source["task_id"] = task_id
    message = Message(item, PROTOCOL, obj, msg_type, STREAMING_KEYS, source)
    key = f"streaming-avatar:{role}"
    if what == "chunk":
        text = get_str(obj, "message")
        if text is None:
            return [message.invalid("message")]
        turn = state.turns.current(key, item.received_at, task_id)
        turn.append(text)
        partial = Transcript(role, text, turn.segment_id, final=False, mode="delta")
        return [message.event(partial.kind, partial.data())]
    if what == "end":
        closed = state.turns.close(key)
        if closed is None:  # an end with no chunk before it: nothing to finalize
            return [message.generic()]
        final = Transcript(role, closed.text, closed.segment_id, final=True)
        return [message.event(final.kind, final.data())]
    return [message.event(what, {"role": role})]
