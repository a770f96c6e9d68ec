"""Event contract v1: the one shape every event has, wherever it is written."""

from relay.contract.event import (
    CONTRACT_VERSION,
    DeadLetter,
    Event,
    Participant,
    ParticipantRole,
    Protocol,
    format_ts,
)

__all__ = [
    "CONTRACT_VERSION",
    "DeadLetter",
    "Event",
    "Participant",
    "ParticipantRole",
    "Protocol",
    "format_ts",
]
