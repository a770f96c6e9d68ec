"""What the server does to a data packet a participant published, before forwarding it.

The rules follow livekit-server (`ParticipantImpl.handleReceivedDataMessage`,
`BroadcastDataPacketForRoom`): the server asserts the sender's sid and identity
(blank for a hidden sender), keeps the identity an agent sets on a text-stream header
(agents send user transcripts on the user's behalf), forwards legacy transcription
packets only from agents, drops out-of-order reliable sequence numbers, and delivers
to every other participant or, when `destination_identities` is set, only to those.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from google.protobuf.message import DecodeError
from livekit.protocol import models

from relay.dev.server.participant import Kind, Participant

log = structlog.get_logger("relay.dev.server.routing")

RELIABLE = models.DataPacket.Kind.RELIABLE
# Payloads the dev server forwards; others (metrics, RPC bookkeeping, ...) are dropped.
FORWARDED = {
    "user",
    "transcription",
    "chat_message",
    "rpc_request",
    "rpc_ack",
    "rpc_response",
    "stream_header",
    "stream_chunk",
    "stream_trailer",
    "sip_dtmf",
    "encrypted_packet",
}


def prepare_packet(sender: Participant, kind: Kind, raw: bytes) -> models.DataPacket | None:
    """The packet to forward for `raw` from `sender`, or None to drop it."""
    if not sender.active or not sender.can_publish_data:
        return None
    packet = models.DataPacket()
    try:
        packet.ParseFromString(raw)
    except DecodeError:
        log.warning("devserver.bad_data_packet", sender=sender.identity)
        return None
    if not _in_sequence(sender, kind, packet):
        return None
    packet.participant_sid = sender.sid
    packet.kind = kind
    which = packet.WhichOneof("value")
    if which not in FORWARDED:
        return None
    if which == "transcription" and not sender.is_agent:
        log.info("devserver.transcription_dropped", sender=sender.identity, reason="not_agent")
        return None
    identity = "" if sender.hidden else sender.identity
    if which == "user":
        _assert_user_sender(packet, sender, identity)
    if not _keeps_identity(packet, sender, which):
        packet.participant_identity = identity
    return packet


def _in_sequence(sender: Participant, kind: Kind, packet: models.DataPacket) -> bool:
    if kind != RELIABLE or packet.sequence <= 0:
        return True
    if packet.sequence <= sender.last_reliable_seq:
        log.info("devserver.out_of_order_packet", sender=sender.identity, seq=packet.sequence)
        return False
    sender.last_reliable_seq = packet.sequence
    return True


def _assert_user_sender(packet: models.DataPacket, sender: Participant, identity: str) -> None:
    user = packet.user
    user.participant_sid = "" if sender.hidden else sender.sid
    user.participant_identity = identity
    if packet.destination_identities:
        del user.destination_identities[:]
        user.destination_identities.extend(packet.destination_identities)
    else:
        packet.destination_identities.extend(user.destination_identities)


def _keeps_identity(packet: models.DataPacket, sender: Participant, which: str | None) -> bool:
    """An agent may publish a text stream (and chat) on behalf of another participant."""
    claimed = packet.participant_identity
    if not sender.is_agent or not claimed or claimed == sender.identity:
        return False
    if which == "chat_message":
        packet.chat_message.generated = True
        return True
    if which == "stream_header" and packet.stream_header.HasField("text_header"):
        packet.stream_header.text_header.generated = True
        return True
    return False


def recipients(
    participants: Iterable[Participant],
    sender: Participant | None,
    destination_identities: Iterable[str] = (),
    destination_sids: Iterable[str] = (),
) -> list[Participant]:
    """Everyone active but the sender, narrowed to the destinations when any are set."""
    identities, sids = set(destination_identities), set(destination_sids)
    chosen = []
    for participant in participants:
        if participant is sender or not participant.active:
            continue
        if (identities or sids) and not (
            participant.identity in identities or participant.sid in sids
        ):
            continue
        chosen.append(participant)
    return chosen
