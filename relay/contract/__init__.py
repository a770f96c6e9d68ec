"""Event contract v1: the one shape every event has, wherever it is written."""

from relay.contract.event import CONTRACT_VERSION, DeadLetter, Entry, Event, Participant, format_ts
from relay.contract.kinds import EventKind, ParticipantRole, Protocol

__all__ = [
    "CONTRACT_VERSION",
    "DeadLetter",
    "Entry",
    "Event",
    "EventKind",
    "Participant",
    "ParticipantRole",
    "Protocol",
    "format_ts",
]
