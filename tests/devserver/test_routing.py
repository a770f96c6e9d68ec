"""The server's rules for published data packets (no network needed)."""

from __future__ import annotations

from livekit.protocol import models

from relay.dev.server.auth import JoinGrant
from relay.dev.server.participant import Participant
from relay.dev.server.routing import prepare_packet, recipients

RELIABLE = models.DataPacket.Kind.RELIABLE


async def _send(data: bytes) -> None:
    return None


async def _close() -> None:
    return None


def participant(identity: str, *, kind: str = "standard", hidden: bool = False) -> Participant:
    grant = JoinGrant(
        identity=identity,
        name="",
        room="r",
        kind=kind,
        metadata="",
        attributes={},
        hidden=hidden,
        can_publish=True,
        can_publish_data=True,
        can_subscribe=True,
        can_update_metadata=False,
    )
    return Participant(grant=grant, send_bytes=_send, close_signal=_close)


def user_packet(**fields: object) -> bytes:
    packet = models.DataPacket(user=models.UserPacket(payload=b"x", topic="t"), **fields)  # type: ignore[arg-type]
    return packet.SerializeToString()


def test_sender_identity_is_asserted() -> None:
    alice = participant("alice")
    packet = prepare_packet(alice, RELIABLE, user_packet(participant_identity="mallory"))
    assert packet is not None
    assert (packet.participant_identity, packet.participant_sid) == ("alice", alice.sid)
    assert packet.user.participant_identity == "alice"


def test_hidden_sender_is_blank() -> None:
    packet = prepare_packet(participant("obs", hidden=True), RELIABLE, user_packet())
    assert packet is not None
    assert packet.participant_identity == ""
    assert packet.user.participant_identity == ""


def test_legacy_transcription_only_from_agents() -> None:
    raw = models.DataPacket(
        transcription=models.Transcription(transcribed_participant_identity="u")
    ).SerializeToString()
    assert prepare_packet(participant("user"), RELIABLE, raw) is None
    assert prepare_packet(participant("agent", kind="agent"), RELIABLE, raw) is not None


def test_agent_keeps_claimed_identity_on_text_header() -> None:
    header = models.DataStream.Header(
        stream_id="s", topic="lk.transcription", text_header=models.DataStream.TextHeader()
    )
    raw = models.DataPacket(participant_identity="user", stream_header=header).SerializeToString()
    packet = prepare_packet(participant("agent", kind="agent"), RELIABLE, raw)
    assert packet is not None
    assert packet.participant_identity == "user"
    standard = prepare_packet(participant("other"), RELIABLE, raw)
    assert standard is not None
    assert standard.participant_identity == "other"


def test_out_of_order_reliable_packets_are_dropped() -> None:
    alice = participant("alice")
    assert prepare_packet(alice, RELIABLE, user_packet(sequence=2)) is not None
    assert prepare_packet(alice, RELIABLE, user_packet(sequence=2)) is None
    assert prepare_packet(alice, RELIABLE, user_packet(sequence=3)) is not None


def test_recipients_honour_destinations() -> None:
    alice, bob, carol = participant("alice"), participant("bob"), participant("carol")
    everyone = [alice, bob, carol]
    assert recipients(everyone, alice) == [bob, carol]
    assert recipients(everyone, alice, ["carol"]) == [carol]
    assert recipients(everyone, None, (), [bob.sid]) == [bob]
