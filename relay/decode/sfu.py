"""Signals from the SFU (active speakers, participants) and the relay's own connection state."""

from __future__ import annotations

from typing import Any

from relay.contract.event import Event, Participant
from relay.contract.kinds import EventKind
from relay.contract.raw import LimitedItem, ObserverItem, ParticipantItem, SpeakersItem
from relay.decode.events import new_event, raw_event
from relay.decode.roles import liveavatar_session_of
from relay.decode.state import RoomState

OBSERVER = Participant(identity="", role="observer")
_PARTICIPANT_SIGNALS = {"joined": "participant_connected", "left": "participant_disconnected"}
_PARTICIPANT_KINDS: dict[str, EventKind] = {
    "joined": "participant.joined",
    "left": "participant.left",
}
_OBSERVER_KINDS: dict[str, EventKind] = {
    "joined": "observer.joined",
    "reconnecting": "observer.reconnecting",
    "resumed": "observer.resumed",
    "left": "observer.left",
}


def decode_speakers(item: SpeakersItem, state: RoomState) -> list[Event]:
    """`speakers.active` only when who speaks changed.

    The SDK repeats the event with nothing changed (python-sdks#148), and the SFU reorders
    the list by loudness: the set is compared, the list goes out in the SFU's order.
    """
    identities = list(dict.fromkeys(i for i in item.identities if isinstance(i, str)))
    current = frozenset(identities)
    if current == state.speakers:
        return []
    state.speakers = current
    source = {"signal": "active_speakers_changed"}
    return [
        new_event(item, "livekit", "speakers.active", {"identities": identities}, source=source)
    ]


def decode_participant(item: ParticipantItem) -> list[Event]:
    """`participant.joined/left`; a LiveAvatar agent joining also starts its session."""
    signal = _PARTICIPANT_SIGNALS.get(item.change)
    if signal is None:
        return [raw_event(item, "livekit", "", "", error="unknown_change", detail=str(item.change))]
    participant = item.participant
    data: dict[str, Any] = {"identity": participant.identity, "kind": participant.kind}
    if isinstance(item.reason, str) and item.reason:
        data["reason"] = item.reason
    source = {"signal": signal}
    # The SDK re-announces everyone after a re-join: the sid makes those repeats one id.
    dedupe_key = f"participant:{participant.sid}:{item.change}" if participant.sid else ""
    kind = _PARTICIPANT_KINDS[item.change]
    events = [
        new_event(
            item,
            "livekit",
            kind,
            data,
            source=source,
            participant=participant,
            dedupe_key=dedupe_key,
        )
    ]
    session_id = liveavatar_session_of(participant.identity)
    if item.change == "joined" and session_id:
        started = new_event(
            item,
            "liveavatar",
            "session.started",
            {},
            source=dict(source),
            participant=participant,
            session_id=session_id,
            dedupe_key=f"liveavatar-session:{session_id}:started",
        )
        events.append(started)
    return events


def decode_observer(item: ObserverItem) -> list[Event]:
    """The relay's own connection: where consumers may have missed events."""
    kind = _OBSERVER_KINDS.get(item.change)
    if kind is None:
        return [raw_event(item, "relay", "", "", error="unknown_change", detail=str(item.change))]
    data: dict[str, Any] = {}
    if isinstance(item.reason, str) and item.reason:
        data["reason"] = item.reason
    if isinstance(item.gap_ms, int) and not isinstance(item.gap_ms, bool) and item.gap_ms >= 0:
        data["gap_ms"] = item.gap_ms
    source = {"signal": item.change}
    return [new_event(item, "relay", kind, data, source=source, participant=OBSERVER)]


def decode_limited(item: LimitedItem) -> list[Event]:
    """`observer.limited`: what the room's limits dropped, where consumers miss events."""
    data: dict[str, Any] = {
        "dropped": sum(item.reasons.values()),
        "reasons": dict(item.reasons),
        "dropped_bytes": item.dropped_bytes,
        "top_participants": dict(item.top_participants),
        "period_s": item.period_s,
        "left": item.left,
    }
    source = {"signal": "limited"}
    return [new_event(item, "relay", "observer.limited", data, source=source, participant=OBSERVER)]
