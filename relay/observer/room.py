"""RoomObserver: one hidden, receive-only participant in one room.

This module is the join / re-join / leave state machine and the connection's own events
(observer.joined, reconnecting, resumed, left); relay.observer.handlers turns what the SDK
hands over into raw items. Both only put raw items in the room's inbox: what happens to
them next (decoding, the pipeline) is the decode stage's business, not the observer's.

`room.connect()` is never cancelled (a cancelled connect makes the SDK SIGTERM the process
later): it is bounded by `RoomOptions.connect_timeout` and, when the observer is stopped
mid-connect, awaited to its end and then left.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Literal

import structlog
from livekit import rtc

from relay import metrics
from relay.backoff import backoff_s
from relay.config import LimitsSettings, LiveKitSettings, PipelineSettings
from relay.contract.raw import ObserverItem, RawItem, RoomContext
from relay.observer.convert import enum_name, sdk_callback
from relay.observer.handlers import TEXT_STREAM_TOPICS, RoomHandlers
from relay.observer.inbox import RoomInbox
from relay.observer.sdk_internals import route_events_to_room
from relay.observer.sdk_room import ObserverRoom
from relay.observer.token import RoomTarget, next_observer_identity

log = structlog.get_logger(__name__)

__all__ = ["TEXT_STREAM_TOPICS", "RoomObserver"]
ObserverState = Literal["idle", "connecting", "connected", "reconnecting", "stopped"]
ObserverChange = Literal["joined", "reconnecting", "resumed", "left"]
# Disconnects that end the observation: re-joining would re-create a deleted room (LiveKit
# creates rooms on join) or undo an operator's removal of the observer.
FINAL_DISCONNECTS = frozenset({"ROOM_DELETED", "ROOM_CLOSED", "PARTICIPANT_REMOVED"})
# A connection that held this long resets the re-join backoff; one dropped sooner (a room
# that refuses us at once) keeps backing off instead of looping.
STABLE_CONNECTION_S = 30.0
# How long to wait for the room's sid after a connect that did not carry it.
ROOM_SID_WAIT_S = 0.5
RoomFactory = Callable[[], ObserverRoom]


class RoomObserver:
    def __init__(
        self,
        target: RoomTarget,
        inbox: RoomInbox,
        livekit: LiveKitSettings,
        pipeline: PipelineSettings,
        *,
        clock: Callable[[], float] = time.time,
        room_factory: RoomFactory = ObserverRoom,
        worker_index: int = 0,
        rate_limits: LimitsSettings | None = None,
    ) -> None:
        """`worker_index`: this process's slot (`Settings.worker_index`), in its identity;
        `rate_limits`: the room's and its participants' (default: `LimitsSettings()`)."""
        self.target = target
        self.state: ObserverState = "idle"
        # Why the observation ended on its own (a FINAL_DISCONNECTS reason), else None.
        self.ended_by: str | None = None
        # The last failed connect's error, and since when (monotonic) connects have been
        # failing in a row (None once connected): operators see a room that cannot join.
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self._livekit = livekit
        self._limits = pipeline
        self._clock = clock
        self._room_factory = room_factory
        self._inbox = inbox
        self._handlers = RoomHandlers(
            inbox, pipeline, clock, lambda: self.state == "reconnecting", rate_limits
        )
        self._stop = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._joined_once = False
        # When the connection was lost (SDK reconnecting or gave up), for observer.resumed.
        self._lost_at: float | None = None
        self._disconnect_reason = "unknown"
        self._identity = next_observer_identity(livekit.observer_identity, worker=worker_index)
        self._log = log.bind(room=target.room)

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Observe until `stop()`: join, re-join after the SDK gives up, leave. What was
        received is in the inbox when this returns."""
        try:
            await self._observe()
        finally:
            self.state = "stopped"
            await self._handlers.close_streams()

    def stop(self) -> None:
        self._stop.set()

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    async def _observe(self) -> None:
        failures = 0  # connects failed or dropped before STABLE_CONNECTION_S, in a row
        while not self._stop.is_set():
            room = self._new_room()
            held = await self._connect_holding(room)
            if held is None:
                metrics.ROOM_CONNECT_FAILURES.inc()
                await self._back_off(failures)
                failures += 1
                continue
            joined_at = time.monotonic()
            self._handlers.room = room
            self._announce_joined()
            for item in held:  # made before connect() returned the room's sid: add it
                self._inbox.put(dataclasses.replace(item, ctx=self._handlers.ctx))
            self._handlers.report(self._handlers.presence.reconcile(room.remote_participants))
            await self._wait_until_lost_or_stopped()
            self._handlers.room = None
            if self._stop.is_set():
                await room.disconnect()
                break
            if self._disconnect_reason in FINAL_DISCONNECTS:
                self.ended_by = self._disconnect_reason
                self._log.info("room_ended", reason=self.ended_by)
                break
            # The SDK gave up reconnecting: the relay re-joins with a fresh Room.
            self._mark_lost(self._disconnect_reason)
            if time.monotonic() - joined_at >= STABLE_CONNECTION_S:
                failures = 0  # it held: re-join at once
            else:
                await self._back_off(failures)
                failures += 1
        if self._joined_once:
            self._emit_observer("left", (self.ended_by or "stopped").lower())

    async def _back_off(self, attempt: int) -> None:
        lk = self._livekit
        delay_s = backoff_s(attempt, lk.rejoin_backoff_initial_s, lk.rejoin_backoff_max_s)
        await self._sleep_unless_stopped(delay_s)

    def _announce_joined(self) -> None:
        if not self._joined_once:
            self._joined_once = True
            since = self.target.unobserved_since
            gap_ms = None if since is None else max(0, self._gap_ms(since))
            self._emit_observer("joined", self.target.joined_reason, gap_ms)
        else:
            self._announce_resumed()

    def _announce_resumed(self) -> None:
        if self._lost_at is not None:
            metrics.ROOM_RECONNECTS.inc()
            self._emit_observer("resumed", None, gap_ms=self._gap_ms(self._lost_at))
            self._lost_at = None

    def _mark_lost(self, reason: str) -> None:
        self.state = "reconnecting"
        if self._lost_at is None:
            self._lost_at = self._clock()
            self._emit_observer("reconnecting", reason.lower())

    async def _connect_holding(self, room: ObserverRoom) -> list[RawItem] | None:
        """connect(), holding what arrives meanwhile: the held items once joined, else None."""
        self._inbox.hold()
        connected = await self._connect(room)  # cancelled: the inbox's drain counts the held
        held = self._inbox.release()
        if not connected:
            metrics.dropped("connect_failed", len(held))
            return None
        return held

    async def _connect(self, room: ObserverRoom) -> bool:
        url, token = self.target.credentials(self._livekit, self._identity)
        options = rtc.RoomOptions(
            auto_subscribe=False,
            connect_timeout=self._livekit.connect_timeout_s,
            data_stream=rtc.DataStreamOptions(
                max_payload_byte_length=self._limits.max_payload_bytes
            ),
        )
        self.state = "connecting"
        started = time.monotonic()
        # Shielded: cancelling run() must never cancel the native connect.
        connect = asyncio.ensure_future(room.connect(url, token, options))
        try:
            await asyncio.shield(connect)
        except rtc.ConnectError as exc:
            self.state = "reconnecting" if self._joined_once else "connecting"
            self._log.warning("room_connect_failed", error=str(exc))
            self.last_error = str(exc)
            self.failing_since = self.failing_since or time.monotonic()
            return False
        except asyncio.CancelledError:
            await self._leave_after_connect(connect, room)
            raise
        metrics.ROOM_CONNECT_DURATION.observe(time.monotonic() - started)
        # Before any await: a disconnect the SDK dispatches from here on must be seen.
        self._disconnected.clear()
        if self._livekit.sdk_fixes:
            route_events_to_room(room)  # a packet then wakes its own room only
        ctx = RoomContext(room=self.target.room, room_sid=await _room_sid(room))
        self._handlers.ctx = ctx
        self.state = "connected"
        self.failing_since = None
        self._log.info("room_joined", identity=self._identity, sid=ctx.room_sid)
        return True

    async def _leave_after_connect(self, connect: asyncio.Future[None], room: rtc.Room) -> None:
        """Cancelled mid-connect: let the connect finish, then leave the room. Further
        cancellations wait too (the caller re-raises the first one)."""
        while not connect.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({connect})  # never cancels `connect`, never raises its error
        if connect.exception() is None:
            await room.disconnect()

    async def _wait_until_lost_or_stopped(self) -> None:
        stop = asyncio.create_task(self._stop.wait())
        lost = asyncio.create_task(self._disconnected.wait())
        try:
            await asyncio.wait({stop, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            lost.cancel()

    async def _sleep_unless_stopped(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=delay_s)

    def _gap_ms(self, lost_at: float) -> int:
        return int((self._clock() - lost_at) * 1000)

    # -- the connection's own events (SDK handlers: synchronous, tiny) -------------------

    def _new_room(self) -> ObserverRoom:
        room = self._room_factory()
        self._handlers.attach(room)  # text stream handlers before connect(), one per topic
        room.on("reconnecting", sdk_callback(self._on_reconnecting))
        room.on("reconnected", sdk_callback(self._on_reconnected))
        room.on("disconnected", sdk_callback(self._on_disconnected))
        return room

    def _on_reconnecting(self) -> None:
        self._mark_lost("signal_lost")

    def _on_reconnected(self) -> None:
        self.state = "connected"
        self._announce_resumed()  # first, as after a re-join: then what changed meanwhile
        handlers = self._handlers
        if handlers.room is not None:
            handlers.report(handlers.presence.reconcile(handlers.room.remote_participants))

    def _on_disconnected(self, reason: rtc.DisconnectReason.ValueType) -> None:
        self._disconnect_reason = enum_name(rtc.DisconnectReason, reason) or "unknown"
        self._disconnected.set()

    # -- helpers -----------------------------------------------------------------------

    def _emit_observer(
        self, change: ObserverChange, reason: str | None, gap_ms: int | None = None
    ) -> None:
        self._log.info("observer_" + change, reason=reason, gap_ms=gap_ms)
        item = ObserverItem(self._handlers.ctx, change, reason, gap_ms, self._clock())
        self._inbox.put(item)


async def _room_sid(room: rtc.Room) -> str | None:
    """The room's sid (public API: resolved by the connect, or by a room update soon after)."""
    try:
        return await asyncio.wait_for(room.sid, timeout=ROOM_SID_WAIT_S) or None
    except TimeoutError:
        return None
