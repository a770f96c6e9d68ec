"""The signalling websocket (`/rtc`): one binary SignalRequest/SignalResponse per frame.

Flow for a join: verify the token (401/400 before the upgrade), JoinResponse with
`subscriber_primary=True`, then the server's subscriber offer carrying `_reliable` and
`_lossy`; the client answers and trickles. When it first publishes data the client
offers its publisher PeerConnection and the server answers. Pings are answered, a
LeaveRequest or a closed socket removes the participant at once.

Resume is not supported: a client that comes back with `reconnect=1` gets
`LeaveRequest(action=RECONNECT)`, which makes the SDK fall back to a full join (a new
participant sid; others see it leave and join again). This also covers a restarted
dev server, which knows none of the old sids.
"""

from __future__ import annotations

import time

import structlog
from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from relay.dev.server.auth import Authenticator, AuthError, request_token
from relay.dev.server.participant import CloseSignal, Participant, State
from relay.dev.server.peer import PublisherPeer, SubscriberPeer
from relay.dev.server.room import Room, RoomManager

log = structlog.get_logger("relay.dev.server.signal")

Reason = models.DisconnectReason
PUBLISHER = rtc.SignalTarget.PUBLISHER
MAX_FRAME_BYTES = 4 * 1024 * 1024
UNSUPPORTED = (
    "add_track",
    "mute",
    "subscription",
    "track_setting",
    "update_layers",
    "subscription_permission",
    "sync_state",
    "simulate",
    "update_audio_track",
    "update_video_track",
    "publish_data_track_request",
    "unpublish_data_track_request",
    "update_data_subscription",
    "store_data_blob_request",
    "get_data_blob_request",
)


# A browser page (livekit-client) reads the validate answers cross-origin, as it does
# from a LiveKit server.
_ANY_ORIGIN = {"Access-Control-Allow-Origin": "*"}


class SignalHandler:
    """aiohttp handlers for `/rtc`, `/rtc/v1` and `/rtc/validate`."""

    def __init__(self, auth: Authenticator, rooms: RoomManager) -> None:
        self._auth = auth
        self._rooms = rooms

    async def validate(self, request: web.Request) -> web.Response:
        try:
            self._auth.join_grant(request_token(request))
        except AuthError as exc:
            return web.Response(status=exc.status, text=exc.message, headers=_ANY_ORIGIN)
        return web.Response(text="success", headers=_ANY_ORIGIN)

    async def v1(self, request: web.Request) -> web.Response:
        """Single-PC signalling is not implemented: 404 makes the SDK fall back to /rtc
        (livekit-client reads the 404 from /rtc/v1/validate, a cross-origin fetch)."""
        return web.Response(status=404, text="not found", headers=_ANY_ORIGIN)

    async def rtc(self, request: web.Request) -> web.StreamResponse:
        try:
            grant = self._auth.join_grant(request_token(request))
        except AuthError as exc:
            log.info("devserver.join_refused", status=exc.status, reason=exc.message)
            return web.Response(status=exc.status, text=exc.message)
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES)
        await ws.prepare(request)
        if request.query.get("reconnect") in ("1", "true"):
            await _refuse_resume(ws, request.query.get("sid", ""))
            return ws
        room, participant = await self._rooms.join(grant, ws.send_bytes, _closer(ws))
        session = _Session(self._rooms, room, participant)
        try:
            await session.start()
            await session.serve(ws)
        finally:
            await self._rooms.leave(room, participant, session.leave_reason)
        return ws


async def _refuse_resume(ws: web.WebSocketResponse, sid: str) -> None:
    log.info("devserver.resume_refused", sid=sid)
    leave = rtc.LeaveRequest(
        can_reconnect=True,
        reason=Reason.STATE_MISMATCH,
        action=rtc.LeaveRequest.Action.RECONNECT,
    )
    await ws.send_bytes(rtc.SignalResponse(leave=leave).SerializeToString())
    await ws.close()


class _Session:
    """One participant's signalling: requests in, responses through its queue."""

    def __init__(self, rooms: RoomManager, room: Room, participant: Participant) -> None:
        self._rooms = rooms
        self._room = room
        self._participant = participant
        self.leave_reason: Reason = Reason.SIGNAL_CLOSE

    async def start(self) -> None:
        participant = self._participant
        self._rooms.welcome(self._room, participant)
        participant.subscriber = SubscriberPeer(self._subscriber_state)
        sdp = await participant.subscriber.create_offer()
        offer = rtc.SessionDescription(type="offer", sdp=sdp)
        participant.send_signal(rtc.SignalResponse(offer=offer))

    async def serve(self, ws: web.WebSocketResponse) -> None:
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                continue
            request = rtc.SignalRequest()
            try:
                request.ParseFromString(message.data)
            except DecodeError:
                log.warning("devserver.bad_signal_frame", identity=self._participant.identity)
                continue
            if not await self._handle(request):
                return

    async def _handle(self, request: rtc.SignalRequest) -> bool:
        """Handle one request; False once the participant has left."""
        which = request.WhichOneof("message")
        participant = self._participant
        if which == "offer":
            await self._answer_publisher(request.offer)
        elif which == "answer" and participant.subscriber is not None:
            await participant.subscriber.set_answer(request.answer.sdp)
        elif which == "trickle":
            await self._trickle(request.trickle)
        elif which == "ping_req":
            pong = rtc.Pong(last_ping_timestamp=request.ping_req.timestamp, timestamp=_now_ms())
            participant.send_signal(rtc.SignalResponse(pong_resp=pong))
        elif which == "ping":
            participant.send_signal(rtc.SignalResponse(pong=_now_ms()))
        elif which == "update_metadata":
            self._update_metadata(request.update_metadata)
        elif which == "leave":
            self.leave_reason = Reason.CLIENT_INITIATED
            return False
        elif which in UNSUPPORTED:
            log.info("devserver.unsupported_request", request=which, identity=participant.identity)
        return True

    async def _answer_publisher(self, offer: rtc.SessionDescription) -> None:
        participant = self._participant
        if participant.publisher is None:
            room = self._room
            participant.publisher = PublisherPeer(
                lambda state: None,
                lambda kind, raw: room.route(participant, kind, raw),
            )
        sdp = await participant.publisher.answer(offer.sdp)
        answer = rtc.SessionDescription(type="answer", sdp=sdp, id=offer.id)
        participant.send_signal(rtc.SignalResponse(answer=answer))

    async def _trickle(self, trickle: rtc.TrickleRequest) -> None:
        participant = self._participant
        peer = participant.publisher if trickle.target == PUBLISHER else participant.subscriber
        if peer is None:
            log.info("devserver.trickle_without_peer", target=trickle.target)
            return
        try:
            await peer.add_candidate(trickle.candidateInit)
        except (ValueError, AssertionError) as exc:
            log.info("devserver.bad_candidate", error=repr(exc))

    def _update_metadata(self, update: rtc.UpdateParticipantMetadata) -> None:
        participant = self._participant
        response = rtc.RequestResponse(request_id=update.request_id, update_metadata=update)
        if not participant.can_update_metadata:
            response.reason = rtc.RequestResponse.Reason.NOT_ALLOWED
            response.message = "does not have permission to update own metadata"
            participant.send_signal(rtc.SignalResponse(request_response=response))
            return
        apply_metadata(participant, update.name, update.metadata, dict(update.attributes))
        participant.send_signal(rtc.SignalResponse(request_response=response))
        self._room.announce(participant)

    def _subscriber_state(self, state: str) -> None:
        participant = self._participant
        if state == "connected" and participant.state == State.JOINED:
            participant.state = State.ACTIVE
            participant.touch()
            self._room.announce(participant)


def apply_metadata(
    participant: Participant, name: str, metadata: str, attributes: dict[str, str]
) -> None:
    """Apply a metadata update: empty name/metadata keep the old value, an empty
    attribute value deletes the key (livekit-server's rules)."""
    if name:
        participant.name = name
    if metadata:
        participant.metadata = metadata
    for key, value in attributes.items():
        if value:
            participant.attributes[key] = value
        else:
            participant.attributes.pop(key, None)
    participant.touch()


def _closer(ws: web.WebSocketResponse) -> CloseSignal:
    async def close() -> None:
        await ws.close()

    return close


def _now_ms() -> int:
    return int(time.time() * 1000)
