"""Rooms and their participants: join, leave, updates, data routing, room lifecycle.

A room starts with its first join (webhook `room_started`) and finishes
`departure_timeout_s` after its last participant left, or when deleted through the API
(`room_finished`). A second join with an identity already in the room replaces the
first (its client gets a LeaveRequest with DUPLICATE_IDENTITY), as on livekit-server.
Hidden participants are never announced to others; they receive every broadcast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from livekit.protocol import models, rtc

from relay.dev.server.auth import JoinGrant
from relay.dev.server.participant import (
    CloseSignal,
    Kind,
    Participant,
    SendBytes,
    State,
    new_sid,
)
from relay.dev.server.routing import prepare_packet, recipients

log = structlog.get_logger("relay.dev.server.room")

Reason = models.DisconnectReason


class Notifier(Protocol):
    def notify(
        self,
        event: str,
        room: models.Room,
        participant: models.ParticipantInfo | None = None,
    ) -> None: ...


@dataclass
class Room:
    name: str
    sid: str = field(default_factory=lambda: new_sid("RM_"))
    metadata: str = ""
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    departure_timeout_s: float = 20.0
    participants: dict[str, Participant] = field(default_factory=dict)
    closing: asyncio.TimerHandle | None = None

    def info(self) -> models.Room:
        active = [p for p in self.participants.values() if p.active]
        return models.Room(
            sid=self.sid,
            name=self.name,
            metadata=self.metadata,
            creation_time=self.created_ms // 1000,
            creation_time_ms=self.created_ms,
            departure_timeout=int(self.departure_timeout_s),
            num_participants=len(active),
            num_publishers=sum(1 for p in active if p.publisher is not None),
        )

    def active(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.active]

    def by_identity(self, identity: str) -> Participant | None:
        participant = self.participants.get(identity)
        return participant if participant is not None and participant.active else None

    def visible_infos(self, viewer: Participant) -> list[models.ParticipantInfo]:
        """Infos `viewer` may see: every active, non-hidden participant but itself."""
        return [p.info() for p in self.active() if p is not viewer and not p.hidden]

    def broadcast(self, message: rtc.SignalResponse, exclude: Participant | None = None) -> None:
        for participant in self.active():
            if participant is not exclude:
                participant.send_signal(message)

    def announce(self, subject: Participant) -> None:
        """Send `subject`'s current info to itself and, unless hidden, to everyone."""
        message = rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[subject.info()]))
        if subject.hidden:
            if subject.active:
                subject.send_signal(message)
            return
        self.broadcast(message)

    def route(self, sender: Participant, kind: Kind, raw: bytes) -> None:
        """Forward a packet `sender` published to the participants it is meant for."""
        packet = prepare_packet(sender, kind, raw)
        if packet is None:
            return
        targets = recipients(self.active(), sender, packet.destination_identities)
        payload = packet.SerializeToString()
        for target in targets:
            target.send_data(kind, payload, sender.sid)

    def send_server_data(self, packet: models.DataPacket, destination_sids: Iterable[str]) -> int:
        """Deliver a packet from the server itself (the SendData API); returns recipients."""
        targets = recipients(self.active(), None, packet.destination_identities, destination_sids)
        payload = packet.SerializeToString()
        for target in targets:
            target.send_data(packet.kind, payload, "")
        return len(targets)

    def set_metadata(self, metadata: str) -> None:
        self.metadata = metadata
        self.broadcast(rtc.SignalResponse(room_update=rtc.RoomUpdate(room=self.info())))

    def set_speakers(self, speakers: Iterable[tuple[str, float, bool]]) -> list[str]:
        """Broadcast SpeakersChanged for (identity, level, active); returns unknown ones."""
        infos, unknown = [], []
        for identity, level, is_active in speakers:
            participant = self.by_identity(identity)
            if participant is None:
                unknown.append(identity)
                continue
            infos.append(models.SpeakerInfo(sid=participant.sid, level=level, active=is_active))
        changed = rtc.SpeakersChanged(speakers=infos)
        self.broadcast(rtc.SignalResponse(speakers_changed=changed))
        return unknown


class RoomManager:
    """Every room of the server, by name."""

    def __init__(
        self,
        notifier: Notifier,
        departure_timeout_s: float = 20.0,
        empty_timeout_s: float = 300.0,
    ) -> None:
        self.rooms: dict[str, Room] = {}
        self._notifier = notifier
        self._departure_timeout_s = departure_timeout_s
        self._empty_timeout_s = empty_timeout_s

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name)

    async def join(
        self, grant: JoinGrant, send_bytes: SendBytes, close_signal: CloseSignal
    ) -> tuple[Room, Participant]:
        """Add a participant (replacing one with the same identity) and announce it."""
        room = self._room_for_join(grant.room)
        previous = room.by_identity(grant.identity)
        if previous is not None:
            await self.leave(room, previous, Reason.DUPLICATE_IDENTITY, tell_client=True)
        participant = Participant(grant=grant, send_bytes=send_bytes, close_signal=close_signal)
        room.participants[grant.identity] = participant
        participant.start()
        log.info("devserver.participant_joined", room=room.name, identity=grant.identity)
        self._notifier.notify("participant_joined", room.info(), participant.info())
        return room, participant

    def create(self, name: str, metadata: str = "", empty_timeout_s: float | None = None) -> Room:
        """The room `name`, created (and closed if nobody joins in time) when missing."""
        room = self.rooms.get(name)
        if room is None:
            room = Room(name=name, metadata=metadata, departure_timeout_s=self._departure_timeout_s)
            self.rooms[name] = room
            log.info("devserver.room_started", room=name, sid=room.sid)
            self._notifier.notify("room_started", room.info())
            self._schedule_close(room, empty_timeout_s or self._empty_timeout_s)
        return room

    def _room_for_join(self, name: str) -> Room:
        room = self.create(name)
        if room.closing is not None:
            room.closing.cancel()
            room.closing = None
        return room

    def welcome(self, room: Room, participant: Participant) -> None:
        """Queue the JoinResponse, then announce the newcomer to the others."""
        others = room.visible_infos(participant)
        for info in others:
            participant.announced(info.sid)
        participant.send_signal(join_response(room, participant, others))
        if not participant.hidden:
            room.broadcast(
                rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[participant.info()])),
                exclude=participant,
            )

    async def leave(
        self,
        room: Room,
        participant: Participant,
        reason: Reason = Reason.CLIENT_INITIATED,
        tell_client: bool = False,
    ) -> None:
        """Remove a participant; tell the others; optionally send its client a LeaveRequest."""
        if not participant.active:
            return
        participant.state = State.DISCONNECTED
        participant.disconnect_reason = reason
        participant.touch()
        if room.participants.get(participant.identity) is participant:
            del room.participants[participant.identity]
        if tell_client:
            participant.send_signal(rtc.SignalResponse(leave=_leave_request(reason)))
        if not participant.hidden:
            update = rtc.ParticipantUpdate(participants=[participant.info()])
            room.broadcast(rtc.SignalResponse(update=update))
        log.info("devserver.participant_left", room=room.name, identity=participant.identity)
        self._notifier.notify("participant_left", room.info(), participant.info())
        await participant.close()
        if not room.active():
            self._schedule_close(room, room.departure_timeout_s)

    def _schedule_close(self, room: Room, delay_s: float) -> None:
        if room.closing is not None:
            room.closing.cancel()
        loop = asyncio.get_running_loop()
        room.closing = loop.call_later(delay_s, lambda: self._finish_if_empty(room))

    def _finish_if_empty(self, room: Room) -> None:
        room.closing = None
        if room.active() or self.rooms.get(room.name) is not room:
            return
        del self.rooms[room.name]
        log.info("devserver.room_finished", room=room.name)
        self._notifier.notify("room_finished", room.info())

    async def delete(self, room: Room, reason: Reason = Reason.ROOM_DELETED) -> None:
        """Disconnect everyone (with `reason`) and finish the room now."""
        for participant in room.active():
            await self.leave(room, participant, reason, tell_client=True)
        if room.closing is not None:
            room.closing.cancel()
            room.closing = None
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            self._notifier.notify("room_finished", room.info())

    async def close_all(self) -> None:
        """Server shutdown: clients are asked to reconnect, every room finishes."""
        for room in list(self.rooms.values()):
            await self.delete(room, Reason.SERVER_SHUTDOWN)


def _leave_request(reason: Reason) -> rtc.LeaveRequest:
    """A shutdown asks the client to come back (a restarted server takes it again)."""
    if reason == Reason.SERVER_SHUTDOWN:
        action = rtc.LeaveRequest.Action.RECONNECT
    else:
        action = rtc.LeaveRequest.Action.DISCONNECT
    return rtc.LeaveRequest(
        can_reconnect=action != rtc.LeaveRequest.Action.DISCONNECT, reason=reason, action=action
    )


def join_response(
    room: Room, participant: Participant, others: list[models.ParticipantInfo]
) -> rtc.SignalResponse:
    """The JoinResponse: subscriber-primary, non-zero ping settings, no ICE servers."""
    join = rtc.JoinResponse(
        room=room.info(),
        participant=participant.info(),
        other_participants=others,
        server_version="1.9.0",
        subscriber_primary=True,
        ping_timeout=15,
        ping_interval=5,
        server_region="devserver",
        server_info=models.ServerInfo(
            edition=models.ServerInfo.Edition.Standard,
            version="1.9.0",
            protocol=16,
            region="devserver",
            node_id="relay-devserver",
        ),
    )
    return rtc.SignalResponse(join=join)
