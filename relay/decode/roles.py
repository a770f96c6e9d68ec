"""Who a participant is in a conversation (user, agent, avatar), from what the SFU tells us.

Pure and cheap: the observer calls it for every sender it turns into a `Participant`.
"""

from __future__ import annotations

from collections.abc import Mapping

from relay.contract.event import Participant, ParticipantRole

LIVEAVATAR_AVATAR_IDENTITY = "heygen"
LIVEAVATAR_AGENT_PREFIX = "liveavatar-agent-"
AGENT_ATTRIBUTE_PREFIX = "lk.agent."

# livekit.rtc.ParticipantKind values (livekit 1.2.0). Written out rather than imported so the
# decoders never load the native SDK; tests/decode/test_sfu.py checks them against the SDK.
# CONNECTOR (5) and BRIDGE (6) are left out on purpose: livekit.protocol numbers them 7 and 8,
# so an int alone does not say which enum it came from.
_KIND_NAMES: Mapping[int, str] = {
    0: "standard",
    1: "ingress",
    2: "egress",
    3: "sip",
    4: "agent",
}
_USER_KINDS = frozenset({"standard", "sip"})


def participant_kind_name(kind_int: int) -> str:
    """`rtc.ParticipantKind` int to the contract's `participant.kind` ("unknown" if new)."""
    return _KIND_NAMES.get(kind_int, "unknown") if isinstance(kind_int, int) else "unknown"


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


def role_of(participant: Participant) -> ParticipantRole:
    """The sender's role, classified here when the item came without one."""
    if participant.role != "unknown":
        return participant.role
    return classify_role(participant.identity, participant.kind, {})


def liveavatar_session_of(identity: str) -> str | None:
    """`liveavatar-agent-<session_id>` names the session the agent serves."""
    if identity.startswith(LIVEAVATAR_AGENT_PREFIX):
        return identity[len(LIVEAVATAR_AGENT_PREFIX) :] or None
    return None
