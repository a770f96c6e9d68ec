"""Who a participant is in a conversation (user, agent, avatar), decided once per room.

The observer hands over what the SFU says of a sender (identity, sid, kind); the room's
`Senders` decides the role when a participant joins or changes its attributes, and every
later item of that sender takes the role from there, so nothing is classified per packet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from relay.contract.event import Participant
from relay.contract.kinds import ParticipantRole
from relay.lru import LRU

LIVEAVATAR_AVATAR_IDENTITY = "heygen"
LIVEAVATAR_AGENT_PREFIX = "liveavatar-agent-"
AGENT_ATTRIBUTE_PREFIX = "lk.agent."
SENDERS_MAX = 1024  # per room: participants whose role is remembered
_USER_KINDS = frozenset({"standard", "sip"})


def classify_role(identity: str, kind: str, attributes: Mapping[str, str]) -> ParticipantRole:
    """The participant's role; identities the vendors fix win over kind and attributes."""
    if identity == LIVEAVATAR_AVATAR_IDENTITY:
        return "avatar"
    if identity.startswith(LIVEAVATAR_AGENT_PREFIX):
        return "agent"
    if kind == "agent" or any(key.startswith(AGENT_ATTRIBUTE_PREFIX) for key in attributes):
        return "agent"
    if kind in _USER_KINDS:
        return "user"
    return "unknown"


def liveavatar_session_of(identity: str) -> str | None:
    """`liveavatar-agent-<session_id>` names the session the agent serves."""
    if identity.startswith(LIVEAVATAR_AGENT_PREFIX):
        return identity[len(LIVEAVATAR_AGENT_PREFIX) :] or None
    return None


class Senders:
    """A room's participants with their roles, by identity (bounded)."""

    def __init__(self, cap: int = SENDERS_MAX) -> None:
        self._known: LRU[str, Participant] = LRU(cap)

    def update(self, who: Participant, attributes: Mapping[str, str]) -> Participant:
        """A participant joined or changed its attributes: decide its role again."""
        role = classify_role(who.identity, who.kind, attributes)
        known = dataclasses.replace(who, role=role) if who.role != role else who
        self._known.put(who.identity, known)
        return known

    def resolve(self, sender: Participant) -> Participant:
        """The sender with its role: as decided when it joined, else from what is known."""
        if sender.role != "unknown" or not sender.identity:
            return sender  # decided already (the observer itself), or the server (no sender)
        known = self._known.get(sender.identity)
        if known is not None and sender.sid in (None, known.sid):
            return known
        if known is not None:  # the same identity under a new sid: joined again
            return dataclasses.replace(sender, role=known.role)
        return dataclasses.replace(sender, role=classify_role(sender.identity, sender.kind, {}))
