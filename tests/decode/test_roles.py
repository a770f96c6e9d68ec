"""Roles are decided once per participant by the decode stage, not per packet: the
observer hands over what the SFU says (identity, sid, kind), the room remembers roles."""

from __future__ import annotations

import json

from relay.contract.event import Participant
from relay.contract.raw import DataItem, ParticipantItem, RoomContext, TextStreamItem
from relay.decode import RoomDecoder

CTX = RoomContext(room="room-1", room_sid="RM_1")


def joined(who: Participant, attributes: dict[str, str] | None = None) -> ParticipantItem:
    return ParticipantItem(CTX, who, "joined", None, 1.0, attributes or {})


def chat(sender: Participant) -> TextStreamItem:
    return TextStreamItem(CTX, sender, "lk.chat", "TS_1", "hi", {}, 2.0)


def test_a_role_decided_at_join_from_attributes_holds_for_what_the_sender_sends() -> None:
    decoder = RoomDecoder()
    # A standard participant with agent attributes is an agent (LiveKit Agents workers).
    worker = Participant(identity="worker-7", sid="PA_w", kind="standard")
    [event] = decoder.decode(joined(worker, {"lk.agent.state": "idle"}))[:1]
    assert event.participant.role == "agent"
    # Its text stream names it by identity alone (after it left, say): still an agent.
    [message] = decoder.decode(chat(Participant(identity="worker-7")))
    assert (message.participant.role, message.participant.sid) == ("agent", "PA_w")


def test_without_a_join_the_sfu_kind_and_vendor_identities_decide() -> None:
    decoder = RoomDecoder()
    body = json.dumps({"type": "user_message", "text": "hello"}).encode()
    user = DataItem(
        CTX, Participant(identity="visitor", sid="PA_v", kind="standard"), "", body, True, 3.0
    )
    avatar = DataItem(
        CTX, Participant(identity="heygen", sid="PA_h", kind="standard"), "", body, True, 3.0
    )
    assert decoder.decode(user)[0].participant.role == "user"
    assert decoder.decode(avatar)[0].participant.role == "avatar"
    assert decoder.decode(chat(Participant(identity="stranger")))[0].participant.role == "unknown"


def test_a_rejoin_with_a_new_sid_keeps_the_role_and_takes_the_new_sid() -> None:
    decoder = RoomDecoder()
    decoder.decode(joined(Participant(identity="a", sid="PA_1", kind="agent")))
    body = json.dumps({"type": "agent_state", "state": "speaking"}).encode()
    item = DataItem(CTX, Participant(identity="a", sid="PA_2", kind="agent"), "", body, True, 4.0)
    [event] = decoder.decode(item)
    assert (event.participant.role, event.participant.sid) == ("agent", "PA_2")
