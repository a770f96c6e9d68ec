"""What every decoder shares: safe JSON parsing, event builders, tolerant getters, room state.

Nothing here raises on bad input: parsing returns an error code, getters return None.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections import OrderedDict
from typing import Any, Generic, TypeVar

from relay.contract.event import NO_PARTICIPANT, Event, Participant, Protocol
from relay.decode.items import (
    AttributesItem,
    DataItem,
    RawItem,
    TextStreamItem,
    TranscriptionItem,
)
from relay.metrics import DECODE_ERRORS

# Deeper JSON is refused: serializing or validating it later could hit the recursion limit.
MAX_JSON_DEPTH = 64
# Per-room state caps: a room holds at most this much decoder memory whatever it is sent.
SEGMENTS_MAX = 1024
AGENT_STATES_MAX = 256
TURN_TEXT_MAX_CHARS = 64 * 1024

K = TypeVar("K")
V = TypeVar("V")


# -- parsing ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Parsed:
    """A payload parsed as one JSON object; `error` says why `obj` is None."""

    obj: dict[str, Any] | None
    error: str | None  # invalid_utf8, invalid_json, not_an_object, too_deep


class _TooDeep(Exception):
    pass


def parse_json_object(payload: bytes) -> Parsed:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return Parsed(None, "invalid_utf8")
    return parse_json_text(text)


def parse_json_text(text: str) -> Parsed:
    try:
        value = json.loads(text.removeprefix("\ufeff"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # JSONDecodeError, NaN, ints over the digit limit
        return Parsed(None, "invalid_json")
    if not isinstance(value, dict):
        return Parsed(None, "not_an_object")
    try:
        return Parsed(_clean(value, 0), None)
    except _TooDeep:
        return Parsed(None, "too_deep")


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: they would make the event unreadable to strict parsers.
    raise ValueError(f"not JSON: {name}")


def _clean(value: Any, depth: int) -> Any:
    """Bound the depth and mend lone surrogates ("\\ud800" escapes cannot be encoded)."""
    if isinstance(value, str):
        return clean_str(value)
    if isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            raise _TooDeep
        if isinstance(value, list):
            return [_clean(child, depth + 1) for child in value]
        return {clean_str(key): _clean(child, depth + 1) for key, child in value.items()}
    return value


def clean_str(text: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


# -- tolerant getters -----------------------------------------------------------------------


def get_str(obj: dict[str, Any], key: str) -> str | None:
    """The field if it is a string, else None (wrong types count as absent)."""
    value = obj.get(key)
    return value if isinstance(value, str) else None


def get_id(obj: dict[str, Any], key: str) -> str | None:
    """An identifier: a non-empty string, or an integer some senders use instead."""
    value = obj.get(key)
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def get_flag(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    return value is True or (isinstance(value, str) and value.lower() == "true")


def digest(text: str) -> str:
    """A short stable fingerprint of a text, for dedupe keys and state."""
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


def segment_dedupe_key(segment_id: str, final: bool, text: str) -> str:
    """Names one transcript update wherever it came from (legacy segment, caption)."""
    return f"segment:{segment_id}:{'final' if final else 'partial'}:{digest(text)}"


# -- event builders -------------------------------------------------------------------------


def sender_of(item: RawItem) -> Participant:
    if isinstance(item, DataItem | TextStreamItem | TranscriptionItem | AttributesItem):
        return item.sender
    return NO_PARTICIPANT


def new_event(
    item: RawItem,
    protocol: Protocol,
    kind: str,
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


def payload_fields(payload: bytes | str) -> dict[str, str]:
    """A payload as text, or as base64 with `encoding` when it is not UTF-8."""
    if isinstance(payload, str):
        return {"payload": clean_str(payload)}
    try:
        return {"payload": payload.decode("utf-8")}
    except UnicodeDecodeError:
        return {"payload": base64.b64encode(payload).decode("ascii"), "encoding": "base64"}


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

    def event(self, kind: str, data: dict[str, Any]) -> Event:
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


# -- room state -----------------------------------------------------------------------------


class LRU(Generic[K, V]):
    """A dict that forgets its least recently used keys beyond `cap`."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._cap:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class SegmentDedupe:
    """Transcript segments already emitted, so the same segment seen twice is emitted once.

    LiveKit Agents send each transcript both as a text stream and as legacy segments. Once a
    segment's final is out, everything later for it is dropped; a partial is dropped when its
    text equals the last one emitted for the segment.
    """

    def __init__(self, cap: int = SEGMENTS_MAX) -> None:
        self._seen: LRU[str, tuple[bool, str]] = LRU(cap)  # segment id -> (final, text digest)

    def admit(self, segment_id: str, final: bool, text: str) -> bool:
        seen = self._seen.get(segment_id)
        fingerprint = digest(text)
        if seen is not None and (seen[0] or (not final and seen[1] == fingerprint)):
            return False
        self._seen.put(segment_id, (final, fingerprint))
        return True


@dataclasses.dataclass(slots=True)
class Turn:
    segment_id: str
    text: str = ""

    def append(self, delta: str) -> None:
        room_left = TURN_TEXT_MAX_CHARS - len(self.text)
        if room_left > 0:
            self.text += delta[:room_left]


class Turns:
    """The utterance in progress per speaker, for protocols that send no segment id.

    A turn opens with the first transcript of a speaker and closes with its final. A derived
    segment id is `<key>@<epoch ms of the turn's first transcript>`: the same for every
    partial and the final of one utterance, different for the next one. Keys are a fixed
    few (protocol:role), so this stays small.
    """

    def __init__(self) -> None:
        self._open: dict[str, Turn] = {}

    def current(self, key: str, received_at: float, segment_id: str | None = None) -> Turn:
        """The open turn of `key`, opened now (named `segment_id` if given) when none is, or
        when the sender names another segment (the open one's end never came)."""
        turn = self._open.get(key)
        if turn is None or (segment_id is not None and segment_id != turn.segment_id):
            turn = Turn(segment_id or _derived_id(key, received_at))
            self._open[key] = turn
        return turn

    def close(self, key: str) -> Turn | None:
        return self._open.pop(key, None)

    def segment_id(self, key: str, received_at: float, final: bool, given: str | None) -> str:
        """The segment id of a transcript: the sender's own when it gave one, else the turn's.

        A final always closes the turn, so the next utterance gets a new id.
        """
        turn = self.close(key) if final else None
        if given:
            return given
        if turn is not None:
            return turn.segment_id
        return _derived_id(key, received_at) if final else self.current(key, received_at).segment_id


def _derived_id(key: str, received_at: float) -> str:
    return f"{key}@{round(received_at * 1000)}"


@dataclasses.dataclass(slots=True)
class RoomState:
    """All a room's decoders remember between items; every part is bounded."""

    session_id: str | None = None
    speakers: frozenset[str] = frozenset()
    agent_states: LRU[str, str] = dataclasses.field(default_factory=lambda: LRU(AGENT_STATES_MAX))
    segments: SegmentDedupe = dataclasses.field(default_factory=SegmentDedupe)
    turns: Turns = dataclasses.field(default_factory=Turns)


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
    def kind(self) -> str:
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
