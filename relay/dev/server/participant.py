"""One participant: its info, its transports and its single ordered outbound queue.

Everything the server sends a participant (signal messages and data packets) goes
through one bounded queue drained by one task, so a ParticipantUpdate queued before
a packet is written first. Signal and data still travel on different channels and the
SDK reads them in different tasks, so a packet from a sender announced less than
`ANNOUNCE_SETTLE_S` ago waits out the rest: the SDK then knows the sender when the
packet arrives (docs/protocols.md, section 5).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from livekit.protocol import models, rtc

from relay.dev.server.auth import JoinGrant
from relay.dev.server.peer import PublisherPeer, SubscriberPeer, close_quietly

log = structlog.get_logger("relay.dev.server.participant")

OUTBOUND_MAX = 10_000
ANNOUNCE_SETTLE_S = 0.1
KINDS = {
    "standard": models.ParticipantInfo.Kind.STANDARD,
    "ingress": models.ParticipantInfo.Kind.INGRESS,
    "egress": models.ParticipantInfo.Kind.EGRESS,
    "sip": models.ParticipantInfo.Kind.SIP,
    "agent": models.ParticipantInfo.Kind.AGENT,
}
State = models.ParticipantInfo.State
Reason = models.DisconnectReason
Kind = models.DataPacket.Kind

SendBytes = Callable[[bytes], Awaitable[None]]
CloseSignal = Callable[[], Awaitable[None]]


def new_sid(prefix: str) -> str:
    """A LiveKit-style id: the SDK insists on the prefix (RM_, PA_, ...)."""
    return prefix + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")


@dataclass
class _Data:
    kind: Kind
    payload: bytes
    sender_sid: str


@dataclass
class _Close:
    pass


_Item = rtc.SignalResponse | _Data | _Close


@dataclass
class Participant:
    """A joined participant; `room` code mutates it, the outbound task sends for it."""

    grant: JoinGrant
    send_bytes: SendBytes
    close_signal: CloseSignal
    sid: str = field(default_factory=lambda: new_sid("PA_"))
    joined_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    state: State = State.JOINED
    version: int = 1
    disconnect_reason: Reason = Reason.UNKNOWN_REASON
    subscriber: SubscriberPeer | None = None
    publisher: PublisherPeer | None = None
    last_reliable_seq: int = 0
    dropped: int = 0

    def __post_init__(self) -> None:
        self.identity = self.grant.identity
        self.name = self.grant.name
        self.metadata = self.grant.metadata
        self.attributes = dict(self.grant.attributes)
        self.hidden = self.grant.hidden
        self.kind = KINDS.get(self.grant.kind, models.ParticipantInfo.Kind.STANDARD)
        self.can_publish_data = self.grant.can_publish_data
        self.can_update_metadata = self.grant.can_update_metadata
        self._announced_at: dict[str, float] = {}
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(OUTBOUND_MAX)
        self._task: asyncio.Task[None] | None = None

    @property
    def is_agent(self) -> bool:
        return bool(self.kind == models.ParticipantInfo.Kind.AGENT)

    @property
    def active(self) -> bool:
        return self.state != State.DISCONNECTED

    def info(self) -> models.ParticipantInfo:
        permission = models.ParticipantPermission(
            can_subscribe=self.grant.can_subscribe,
            can_publish=self.grant.can_publish,
            can_publish_data=self.can_publish_data,
            hidden=self.hidden,
            can_update_metadata=self.can_update_metadata,
            agent=self.is_agent,
        )
        return models.ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            name=self.name,
            state=self.state,
            metadata=self.metadata,
            attributes=self.attributes,
            joined_at=self.joined_at_ms // 1000,
            joined_at_ms=self.joined_at_ms,
            version=self.version,
            permission=permission,
            kind=self.kind,
            disconnect_reason=self.disconnect_reason,
            region="devserver",
            is_publisher=self.publisher is not None,
        )

    def touch(self) -> None:
        """Record a change to the participant's info (the SDK sees a new version)."""
        self.version += 1

    # -- outbound -------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name=f"devserver-out-{self.sid}")

    def send_signal(self, message: rtc.SignalResponse) -> None:
        """Queue a signal message; a participant too far behind is disconnected."""
        for update in message.update.participants if message.HasField("update") else ():
            if update.sid != self.sid:
                self._announced_at.setdefault(update.sid, time.monotonic())
        self._put(message)

    def send_data(self, kind: Kind, payload: bytes, sender_sid: str) -> None:
        """Queue a serialized DataPacket for the subscriber channel of `kind`."""
        if self.active:
            self._put(_Data(kind, payload, sender_sid))

    def announced(self, sid: str) -> None:
        """Remember that the client already knows `sid` (e.g. from its JoinResponse)."""
        self._announced_at[sid] = 0.0

    def _put(self, item: _Item) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("devserver.outbound_full", identity=self.identity, sid=self.sid)

    async def close(self) -> None:
        """Flush what is queued, close the signal connection and the transports."""
        self._put(_Close())
        if self._task is not None and self._task is not asyncio.current_task():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=2)
            except TimeoutError:
                self._task.cancel()
        await close_quietly(self.subscriber)
        await close_quietly(self.publisher)

    async def _pump(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Close):
                await self._close_signal()
                return
            if isinstance(item, _Data):
                await self._settle(item.sender_sid)
                if self.subscriber is not None:
                    self.subscriber.send(item.kind, item.payload)
                continue
            try:
                await self.send_bytes(item.SerializeToString())
            except (ConnectionError, RuntimeError) as exc:
                log.debug("devserver.signal_send_failed", sid=self.sid, error=repr(exc))

    async def _settle(self, sender_sid: str) -> None:
        announced = self._announced_at.get(sender_sid)
        if announced is not None:
            wait_s = announced + ANNOUNCE_SETTLE_S - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)

    async def _close_signal(self) -> None:
        try:
            await self.close_signal()
        except (ConnectionError, RuntimeError) as exc:
            log.debug("devserver.signal_close_failed", sid=self.sid, error=repr(exc))
