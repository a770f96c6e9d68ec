"""RoomDecoder: one per room, raw items in, contract events out, never an exception.

What is raw and why:
- a packet on a topic no decoder knows, or with no topic and no known `type`: `raw`,
  protocol "raw", no `data.error` (nobody claims it);
- a packet on a known topic (or of a known `type`) that is not what that protocol sends:
  `raw`, protocol of the claim, `data.error` saying what was wrong (invalid_utf8,
  invalid_json, not_an_object, too_deep, invalid_field + `data.detail`);
- a decoder bug: `raw` with `data.error` "decoder_exception".
Every `raw` counts in `relay_decode_errors_total{protocol}`.
"""

from __future__ import annotations

import dataclasses

from relay.contract.event import Event
from relay.contract.kinds import Protocol
from relay.contract.raw import (
    AttributesItem,
    DataItem,
    LimitedItem,
    ObserverItem,
    ParticipantItem,
    RawItem,
    RejectedItem,
    SpeakersItem,
    TextStreamItem,
    TranscriptionItem,
)
from relay.decode import agents, liveavatar, livelayer, sfu
from relay.decode.events import raw_event
from relay.decode.payloads import get_str, parse_json_object
from relay.decode.state import RoomState
from relay.metrics import DECODE_ERRORS

_DETAIL_MAX_CHARS = 200


class RoomDecoder:
    """Decodes one room's raw items in order; holds the little state that needs (bounded)."""

    def __init__(self) -> None:
        self._state = RoomState()

    @property
    def session_id(self) -> str | None:
        """The room's LiveAvatar session, once seen; later events of the room carry it."""
        return self._state.session_id

    def decode(self, item: RawItem) -> list[Event]:
        try:
            events = self._dispatch(self._with_role(item))
        except Exception as exc:  # a decoder bug must cost one item, not the room
            events = _failed(item, exc)
        return self._with_session(events)

    def _with_role(self, item: RawItem) -> RawItem:
        """The item with its sender's role: decided here, once per participant (on join and
        attribute changes), and looked up for everything else the participant sends."""
        senders = self._state.senders
        if isinstance(item, ParticipantItem):
            if item.change == "joined":
                who = senders.update(item.participant, item.attributes)
            else:
                who = senders.resolve(item.participant)
            return item if who is item.participant else dataclasses.replace(item, participant=who)
        if isinstance(item, AttributesItem):
            return dataclasses.replace(item, sender=senders.update(item.sender, item.attributes))
        if isinstance(item, DataItem | TextStreamItem | TranscriptionItem):
            who = senders.resolve(item.sender)
            return item if who is item.sender else dataclasses.replace(item, sender=who)
        return item

    def _dispatch(self, item: RawItem) -> list[Event]:
        state = self._state
        if isinstance(item, DataItem):
            return self._decode_data(item)
        if isinstance(item, TextStreamItem):
            return agents.decode_text_stream(item, state)
        if isinstance(item, TranscriptionItem):
            return agents.decode_transcription(item, state)
        if isinstance(item, AttributesItem):
            return agents.decode_attributes(item, state) + livelayer.decode_attributes(item)
        if isinstance(item, SpeakersItem):
            return sfu.decode_speakers(item, state)
        if isinstance(item, ParticipantItem):
            return sfu.decode_participant(item)
        if isinstance(item, ObserverItem):
            return sfu.decode_observer(item)
        if isinstance(item, LimitedItem):
            return sfu.decode_limited(item)
        if isinstance(item, RejectedItem):
            return []  # not an event: the decode stage dead-letters it
        raise TypeError(f"not a raw item: {type(item).__name__}")

    def _decode_data(self, item: DataItem) -> list[Event]:
        if item.topic in liveavatar.TOPICS:
            return liveavatar.decode_data(item, self._state)
        if item.topic:
            return [raw_event(item, "raw", item.topic, item.payload)]
        return self._decode_untopiced(item)

    def _decode_untopiced(self, item: DataItem) -> list[Event]:
        """No topic: LiveLayer and Streaming Avatar, told apart by their `type` names."""
        obj = parse_json_object(item.payload).obj
        if obj is None:
            return [raw_event(item, "raw", "", item.payload)]
        msg_type = get_str(obj, "type")
        if msg_type in liveavatar.STREAMING_TYPES:
            return liveavatar.decode_streaming(item, obj, msg_type, self._state)
        if msg_type in livelayer.TYPES:
            return livelayer.decode_message(item, obj, msg_type, self._state)
        if msg_type is None and get_str(obj, "event_type"):
            # A LiveAvatar envelope whose sender left the topic out.
            return liveavatar.decode_envelope(item, obj, self._state)
        return [raw_event(item, "raw", "", item.payload)]

    def _with_session(self, events: list[Event]) -> list[Event]:
        for event in events:
            if event.session_id:
                self._state.session_id = event.session_id
        session_id = self._state.session_id
        if session_id is None:
            return events
        return [
            event if event.session_id else dataclasses.replace(event, session_id=session_id)
            for event in events
        ]


def _failed(item: RawItem, exc: Exception) -> list[Event]:
    protocol = _protocol_of(item)
    try:
        topic = item.topic if isinstance(item, DataItem | TextStreamItem) else ""
        payload: bytes | str = ""
        if isinstance(item, DataItem):
            payload = item.payload
        elif isinstance(item, TextStreamItem):
            payload = item.text
        detail = f"{type(exc).__name__}: {exc}"[:_DETAIL_MAX_CHARS]
        return [raw_event(item, protocol, topic, payload, error="decoder_exception", detail=detail)]
    except Exception:  # not even a raw event could be made (not a RawItem at all)
        DECODE_ERRORS.labels(protocol).inc()
        return []


def _protocol_of(item: RawItem) -> Protocol:
    """The protocol an item claims, for counting what could not be decoded."""
    if isinstance(item, DataItem):
        return "liveavatar" if item.topic in liveavatar.TOPICS else "raw"
    if isinstance(item, TextStreamItem):
        return "livekit-agents" if item.topic in agents.TEXT_STREAM_TOPICS else "raw"
    if isinstance(item, TranscriptionItem | AttributesItem):
        return "livekit-agents"
    if isinstance(item, SpeakersItem | ParticipantItem):
        return "livekit"
    if isinstance(item, ObserverItem | LimitedItem):
        return "relay"
    return "raw"
