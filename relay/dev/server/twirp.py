"""A subset of livekit-server's RoomService over Twirp, as `livekit-api` calls it.

`POST /twirp/livekit.RoomService/<Method>` with a protobuf (`application/protobuf`) or
JSON body, `Authorization: Bearer <JWT>`; the answer uses the request's encoding.
Errors are Twirp JSON (`{"code", "msg"}`); a missing grant is `unauthenticated` (401),
as on livekit-server. Grants: ListRooms roomList; CreateRoom/DeleteRoom roomCreate;
the rest roomAdmin for the room.

Dev-only extra (not LiveKit API): `POST /devserver/active_speakers` with JSON
`{"room": str, "speakers": [{"identity": str, "level": float, "active": bool}]}` and a
roomAdmin token broadcasts a SpeakersChanged (the dev server analyses no audio).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToJson, Parse, ParseError
from google.protobuf.message import DecodeError, Message
from livekit import api
from livekit.protocol import models
from livekit.protocol import room as room_pb

from relay.dev.server.auth import (
    Authenticator,
    AuthError,
    request_token,
    require_admin,
    require_create,
    require_list,
)
from relay.dev.server.room import Room, RoomManager
from relay.dev.server.signal import apply_metadata

Claims = api.access_token.Claims
Handler = Callable[[Any, Claims], Awaitable[Message]]
TWIRP_STATUS = {
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "bad_route": 404,
    "malformed": 400,
    "invalid_argument": 400,
}


class TwirpError(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def twirp_error(code: str, msg: str) -> web.Response:
    body = json.dumps({"code": code, "msg": msg})
    status = TWIRP_STATUS.get(code, 500)
    return web.Response(status=status, text=body, content_type="application/json")


class RoomService:
    """The RoomService methods the dev server implements, plus the speakers call."""

    def __init__(self, auth: Authenticator, rooms: RoomManager) -> None:
        self._auth = auth
        self._rooms = rooms
        self._methods: dict[str, tuple[type[Message], Handler]] = {
            "CreateRoom": (room_pb.CreateRoomRequest, self._create_room),
            "ListRooms": (room_pb.ListRoomsRequest, self._list_rooms),
            "DeleteRoom": (room_pb.DeleteRoomRequest, self._delete_room),
            "ListParticipants": (room_pb.ListParticipantsRequest, self._list_participants),
            "GetParticipant": (room_pb.RoomParticipantIdentity, self._get_participant),
            "RemoveParticipant": (room_pb.RoomParticipantIdentity, self._remove_participant),
            "UpdateParticipant": (room_pb.UpdateParticipantRequest, self._update_participant),
            "SendData": (room_pb.SendDataRequest, self._send_data),
            "UpdateRoomMetadata": (room_pb.UpdateRoomMetadataRequest, self._update_metadata),
        }

    async def handle(self, request: web.Request) -> web.Response:
        entry = self._methods.get(request.match_info["method"])
        if entry is None:
            return twirp_error("bad_route", f"no handler for {request.path}")
        message_type, handler = entry
        is_json = request.content_type.startswith("application/json")
        try:
            claims = self._auth.claims(request_token(request))
            message = _decode(message_type, await request.read(), is_json)
            result = await handler(message, claims)
        except AuthError as exc:
            return twirp_error("unauthenticated", exc.message)
        except TwirpError as exc:
            return twirp_error(exc.code, exc.msg)
        if is_json:
            return web.Response(text=MessageToJson(result), content_type="application/json")
        return web.Response(body=result.SerializeToString(), content_type="application/protobuf")

    async def active_speakers(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            room = self._room(str(body["room"]))
            require_admin(self._auth.claims(request_token(request)), room.name)
            speakers = [
                (str(s["identity"]), float(s.get("level", 1.0)), bool(s.get("active", True)))
                for s in body["speakers"]
            ]
        except AuthError as exc:
            return twirp_error("unauthenticated", exc.message)
        except TwirpError as exc:
            return twirp_error(exc.code, exc.msg)
        except (ValueError, KeyError, TypeError) as exc:
            return twirp_error("malformed", f"bad speakers request: {exc!r}")
        unknown = room.set_speakers(speakers)
        return web.json_response({"unknown_identities": unknown})

    def _room(self, name: str) -> Room:
        room = self._rooms.get(name)
        if room is None:
            raise TwirpError("not_found", "requested room does not exist")
        return room

    def _participant_room(self, name: str, identity: str, claims: Claims) -> tuple[Room, Any]:
        require_admin(claims, name)
        room = self._room(name)
        participant = room.by_identity(identity)
        if participant is None:
            raise TwirpError("not_found", "participant does not exist")
        return room, participant

    async def _create_room(self, req: room_pb.CreateRoomRequest, claims: Claims) -> Message:
        require_create(claims)
        if not req.name:
            raise TwirpError("invalid_argument", "room name cannot be empty")
        empty_timeout_s = float(req.empty_timeout) if req.empty_timeout else None
        return self._rooms.create(req.name, req.metadata, empty_timeout_s).info()

    async def _list_rooms(self, req: room_pb.ListRoomsRequest, claims: Claims) -> Message:
        require_list(claims)
        names = set(req.names)
        rooms = [r.info() for r in self._rooms.rooms.values() if not names or r.name in names]
        return room_pb.ListRoomsResponse(rooms=rooms)

    async def _delete_room(self, req: room_pb.DeleteRoomRequest, claims: Claims) -> Message:
        require_create(claims)
        await self._rooms.delete(self._room(req.room))
        return room_pb.DeleteRoomResponse()

    async def _list_participants(
        self, req: room_pb.ListParticipantsRequest, claims: Claims
    ) -> Message:
        require_admin(claims, req.room)
        infos = [p.info() for p in self._room(req.room).active()]
        return room_pb.ListParticipantsResponse(participants=infos)

    async def _get_participant(
        self, req: room_pb.RoomParticipantIdentity, claims: Claims
    ) -> Message:
        _, participant = self._participant_room(req.room, req.identity, claims)
        info: Message = participant.info()
        return info

    async def _remove_participant(
        self, req: room_pb.RoomParticipantIdentity, claims: Claims
    ) -> Message:
        room, participant = self._participant_room(req.room, req.identity, claims)
        removed = models.DisconnectReason.PARTICIPANT_REMOVED
        await self._rooms.leave(room, participant, removed, tell_client=True)
        return room_pb.RemoveParticipantResponse()

    async def _update_participant(
        self, req: room_pb.UpdateParticipantRequest, claims: Claims
    ) -> Message:
        room, participant = self._participant_room(req.room, req.identity, claims)
        apply_metadata(participant, req.name, req.metadata, dict(req.attributes))
        if req.HasField("permission"):
            participant.can_publish_data = req.permission.can_publish_data
            participant.can_update_metadata = req.permission.can_update_metadata
        room.announce(participant)
        info: Message = participant.info()
        return info

    async def _send_data(self, req: room_pb.SendDataRequest, claims: Claims) -> Message:
        require_admin(claims, req.room)
        room = self._room(req.room)
        user = models.UserPacket(
            payload=req.data,
            topic=req.topic,
            destination_identities=req.destination_identities,
            nonce=req.nonce,
        )
        packet = models.DataPacket(
            kind=req.kind, user=user, destination_identities=req.destination_identities
        )
        room.send_server_data(packet, req.destination_sids)
        return room_pb.SendDataResponse()

    async def _update_metadata(
        self, req: room_pb.UpdateRoomMetadataRequest, claims: Claims
    ) -> Message:
        require_admin(claims, req.room)
        room = self._room(req.room)
        room.set_metadata(req.metadata)
        info: Message = room.info()
        return info


def _decode(message_type: type[Message], body: bytes, is_json: bool) -> Message:
    message = message_type()
    try:
        if is_json:
            Parse(body or b"{}", message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except (DecodeError, ParseError) as exc:
        raise TwirpError("malformed", f"could not decode request: {exc}") from exc
    return message
