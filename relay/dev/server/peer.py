"""WebRTC transports of one participant, on aiortc (no STUN/TURN: `iceServers=[]`).

Like livekit-server, the server offers a *subscriber* PeerConnection carrying the
`_reliable` (ordered) and `_lossy` (unordered, no retransmits) data channels it sends
on, and answers the client's *publisher* PeerConnection, whose channels of the same
names carry what the client publishes. aiortc gathers candidates before it returns a
description, so its candidates travel inside the SDP; the client's arrive by trickle.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from livekit.protocol import models

from relay.dev.server.webrtc_internals import parse_candidate, pin_host_addresses

log = structlog.get_logger("relay.dev.server.peer")

RELIABLE_LABEL = "_reliable"
LOSSY_LABEL = "_lossy"
Kind = models.DataPacket.Kind
RELIABLE = Kind.RELIABLE
LOSSY = Kind.LOSSY
LABEL_KINDS = {RELIABLE_LABEL: RELIABLE, LOSSY_LABEL: LOSSY}
# Packets held per channel until the subscriber channel opens; more are dropped.
PENDING_MAX = 1000

StateCallback = Callable[[str], None]
PacketCallback = Callable[[Kind, bytes], None]


def check_bind_address(host: str) -> None:
    """The dev server serves on one specific address (the namespace's), never on all."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--host must be an IP address, not {host!r}") from None
    if address.is_unspecified:
        raise ValueError(f"--host {host} would bind every interface: give the one to serve on")


def pin_ice_address(host: str) -> None:
    """Gather ICE candidates on `host` only (none on loopback, which WebRTC cannot use).

    aioice binds and advertises a candidate on every address of every interface; run
    outside its namespace, the dev server would bind and announce host interface
    addresses. Raises InternalsChanged when aioice cannot be told (webrtc_internals)."""
    pin_host_addresses([] if ipaddress.ip_address(host).is_loopback else [host])


def new_peer_connection() -> RTCPeerConnection:
    """A PeerConnection that never asks a STUN or TURN server anything."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def add_trickle_candidate(pc: RTCPeerConnection, candidate_init: str) -> None:
    """Add a client's trickled candidate (JSON RTCIceCandidateInit); empty means end."""
    init: dict[str, Any] = json.loads(candidate_init)
    text = str(init.get("candidate", ""))
    if not text:
        await pc.addIceCandidate(None)
        return
    candidate = parse_candidate(text.removeprefix("candidate:"))
    candidate.sdpMid = init.get("sdpMid")
    candidate.sdpMLineIndex = init.get("sdpMLineIndex")
    await pc.addIceCandidate(candidate)


class _Transport:
    def __init__(self, on_state: StateCallback) -> None:
        self.pc = new_peer_connection()
        self._on_state = on_state
        self.pc.on("connectionstatechange", self._state_changed)

    def _state_changed(self) -> None:
        self._on_state(self.pc.connectionState)

    @property
    def connected(self) -> bool:
        return bool(self.pc.connectionState == "connected")

    async def add_candidate(self, candidate_init: str) -> None:
        await add_trickle_candidate(self.pc, candidate_init)

    async def close(self) -> None:
        await self.pc.close()


class SubscriberPeer(_Transport):
    """The server-offered PeerConnection the participant receives data on."""

    def __init__(self, on_state: StateCallback) -> None:
        super().__init__(on_state)
        self.dropped = 0
        self._channels: dict[Kind, RTCDataChannel] = {
            RELIABLE: self.pc.createDataChannel(RELIABLE_LABEL, ordered=True),
            LOSSY: self.pc.createDataChannel(LOSSY_LABEL, ordered=False, maxRetransmits=0),
        }
        self._pending: dict[Kind, deque[bytes]] = {RELIABLE: deque(), LOSSY: deque()}
        for kind, channel in self._channels.items():
            channel.on("open", lambda kind=kind: self._flush(kind))

    async def create_offer(self) -> str:
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        return str(self.pc.localDescription.sdp)

    async def set_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def send(self, kind: Kind, payload: bytes) -> None:
        """Send one serialized DataPacket, or hold it until the channel opens."""
        channel = self._channels[LOSSY if kind == LOSSY else RELIABLE]
        pending = self._pending[LOSSY if kind == LOSSY else RELIABLE]
        if channel.readyState == "open" and not pending:
            channel.send(payload)
        elif len(pending) < PENDING_MAX:
            pending.append(payload)
        else:
            self.dropped += 1
            log.warning("devserver.data_dropped", reason="subscriber_channel_not_open")

    def _flush(self, kind: Kind) -> None:
        channel, pending = self._channels[kind], self._pending[kind]
        while pending and channel.readyState == "open":
            channel.send(pending.popleft())


class PublisherPeer(_Transport):
    """The client-offered PeerConnection the participant publishes data on."""

    def __init__(self, on_state: StateCallback, on_packet: PacketCallback) -> None:
        super().__init__(on_state)
        self._on_packet = on_packet
        self.pc.on("datachannel", self._on_channel)

    async def answer(self, sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        return str(self.pc.localDescription.sdp)

    def _on_channel(self, channel: RTCDataChannel) -> None:
        kind = LABEL_KINDS.get(channel.label)
        if kind is None:
            return  # `_data_track` and unknown channels: data tracks are not supported

        def on_message(message: bytes | str) -> None:
            if isinstance(message, bytes):
                self._on_packet(kind, message)

        channel.on("message", on_message)


async def close_quietly(transport: _Transport | None) -> None:
    """Close a transport, never raising (shutdown paths)."""
    if transport is None:
        return
    try:
        await asyncio.wait_for(transport.close(), timeout=5)
    except (TimeoutError, OSError, RuntimeError) as exc:
        log.debug("devserver.peer_close_failed", error=repr(exc))
