"""The SDK handlers of one observed room: what the SDK hands over, as raw items.

The SDK's event handlers must be synchronous and it swallows what they raise: each one
here stamps the receive time, turns the SDK's objects into a raw item and puts it in the
room's inbox, and returns. Text streams are read in a task each; their handlers must be
registered before `connect()`, one per topic (`attach`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from livekit import rtc

from relay import metrics
from relay.config import LimitsSettings, PipelineSettings
from relay.contract.kinds import RefusedReason
from relay.contract.raw import (
    AttributesItem,
    DataItem,
    LimitedItem,
    ParticipantItem,
    RejectedItem,
    RoomContext,
    SpeakersItem,
    TextStreamItem,
    TranscriptionItem,
)
from relay.observer.convert import (
    enum_name,
    identified_only,
    oversized_detail,
    sdk_callback,
    text_stream_detail,
    to_participant,
    to_segment,
)
from relay.observer.inbox import RoomInbox
from relay.observer.limits import RoomLimiter
from relay.observer.presence import Presence, PresenceChange
from relay.observer.sdk_room import ObserverRoom

TEXT_STREAM_TOPICS = ("lk.transcription", "lk.chat")

log = structlog.get_logger(__name__)


class RoomHandlers:
    def __init__(
        self,
        inbox: RoomInbox,
        limits: PipelineSettings,
        clock: Callable[[], float],
        reconnecting: Callable[[], bool],
        rate_limits: LimitsSettings | None = None,
    ) -> None:
        """`reconnecting()`: the observer is away (participant churn is reconciled later).
        `rate_limits`: per room and per participant, checked before an item is built."""
        self.ctx = RoomContext(room=inbox.room)  # with the sid once joined (the observer's)
        self.room: ObserverRoom | None = None  # the joined room, for text stream senders
        self.presence = Presence()
        self._inbox = inbox
        self._limits = limits
        self._clock = clock
        self._reconnecting = reconnecting
        self._streams: set[asyncio.Task[None]] = set()
        self._limiter = RoomLimiter(rate_limits or LimitsSettings(), clock())
        self._summary_timer: asyncio.TimerHandle | None = None

    def attach(self, room: ObserverRoom) -> None:
        """Register every handler on a new room, before its connect()."""
        room.on("data_received", sdk_callback(self._on_data))
        room.on("participant_connected", sdk_callback(self._on_participant_connected))
        room.on("participant_disconnected", sdk_callback(self._on_participant_disconnected))
        room.on("participant_attributes_changed", sdk_callback(self._on_attributes))
        room.on("active_speakers_changed", sdk_callback(self._on_active_speakers))
        room.on("transcription_received", sdk_callback(self._on_transcription))
        for topic in TEXT_STREAM_TOPICS:
            room.register_text_stream_handler(topic, self._on_text_stream)

    def report(self, changes: list[PresenceChange]) -> None:
        """Presence changes as raw items (a join's attributes too: the SDK raises attribute
        events only when they change)."""
        now = self._clock()
        for c in changes:
            self._inbox.put(ParticipantItem(self.ctx, c.who, c.change, c.reason, now, c.attributes))
            if c.attributes:
                self._inbox.put(AttributesItem(self.ctx, c.who, c.attributes, c.attributes, now))

    async def close_streams(self) -> None:
        """The room was left: text streams still open are cut (counted as unfinished), and
        what the limits dropped since the last summary is summarized now."""
        self._summarize(left=True)
        for task in list(self._streams):
            task.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)

    # -- the handlers: synchronous, tiny ---------------------------------------------

    def _on_data(self, packet: rtc.DataPacket) -> None:
        now = self._clock()
        sender = to_participant(packet.participant)
        # An oversized packet costs what its dead letter keeps, not its whole size.
        if not self._admit(sender.identity, min(len(packet.data), self._limits.max_payload_bytes)):
            return
        topic = packet.topic or ""
        if len(packet.data) > self._limits.max_payload_bytes:
            self._refuse("oversized", now, oversized_detail(sender, topic, packet.data))
            return
        reliable = packet.kind == rtc.DataPacketKind.KIND_RELIABLE
        self._inbox.put(DataItem(self.ctx, sender, topic, packet.data, reliable, now))

    def _on_participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        self.report(self.presence.connected(participant))

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        if self._reconnecting():
            return  # reconnect churn: reconciled once the connection is back
        reason = enum_name(rtc.DisconnectReason, participant.disconnect_reason)
        self.report(self.presence.left(participant.identity, reason))

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        who = to_participant(participant)
        if not self._admit(who.identity, sum(len(k) + len(v) for k, v in changed.items())):
            return
        attrs = dict(participant.attributes)
        self._inbox.put(AttributesItem(self.ctx, who, dict(changed), attrs, self._clock()))

    def _on_active_speakers(self, speakers: list[rtc.Participant]) -> None:
        identities = [speaker.identity for speaker in speakers]
        self._inbox.put(SpeakersItem(self.ctx, identities, self._clock()))

    def _on_transcription(
        self,
        segments: list[rtc.TranscriptionSegment],
        participant: rtc.Participant | None,
        publication: rtc.TrackPublication | None,
    ) -> None:
        sender = to_participant(participant)
        if not self._admit(sender.identity, sum(len(segment.text) for segment in segments)):
            return
        converted = [to_segment(segment) for segment in segments]
        track_sid = publication.sid if publication is not None else None
        self._inbox.put(TranscriptionItem(self.ctx, sender, track_sid, converted, self._clock()))

    def _on_text_stream(self, reader: rtc.TextStreamReader, sender_identity: str) -> None:
        # Over a limit, the stream is not read at all (closing unsubscribes its chunks).
        if not self._admit(sender_identity, reader.info.size or 0):
            reader.close()
            return
        task = asyncio.create_task(self._read_text_stream(reader, sender_identity))
        self._streams.add(task)
        task.add_done_callback(lambda done: self._text_stream_done(done, reader))

    def _text_stream_done(self, task: asyncio.Task[None], reader: rtc.TextStreamReader) -> None:
        self._streams.discard(task)
        reader.close()  # else its SDK subscription lives as long as the process
        if task.cancelled():  # the room was left before the stream ended
            metrics.dropped("text_stream_unfinished")

    async def _read_text_stream(self, reader: rtc.TextStreamReader, sender_identity: str) -> None:
        """The text so far after each chunk (the decoder decides what a partial is worth),
        then the whole stream with the trailer's attributes."""
        info = reader.info
        known = self.room.participant(sender_identity) if self.room else None
        sender = to_participant(known) if known else identified_only(sender_identity)

        def item(text: str, attributes: dict[str, str], chunks: int | None) -> TextStreamItem:
            return TextStreamItem(
                self.ctx,
                sender,
                info.topic,
                info.stream_id,
                text,
                attributes,
                self._clock(),
                chunks,
            )

        header = dict(info.attributes or {})
        text, chunks = "", 0
        try:
            async for chunk in reader:
                if not self._admit(sender_identity, len(chunk)):
                    return  # cut: not read further (the done callback closes the reader)
                text, chunks = text + chunk, chunks + 1
                self._inbox.put(item(text, header, chunks))
        except rtc.StreamError as exc:  # aborted, oversized, or the room went away
            detail = text_stream_detail(info, sender_identity, str(exc))
            self._refuse("text_stream_error", self._clock(), detail)
            return
        self._inbox.put(item(text, dict(info.attributes or {}), None))

    def _admit(self, identity: str, size: int) -> bool:
        """Within the room's and the participant's limits (counted, summarized if not)."""
        if self._limiter.admit(identity, size, self._clock()) is None:
            return True
        if self._summary_timer is None:  # the period's first drop: its summary is due
            loop = asyncio.get_running_loop()
            self._summary_timer = loop.call_later(self._limiter.period_s, self._summarize)
        return False

    def _summarize(self, left: bool = False) -> None:
        """One line a period per room for what the limits dropped, never one a packet, and
        one (`left`) for what was dropped since the last when the room is left."""
        if self._summary_timer is not None:
            self._summary_timer.cancel()
            self._summary_timer = None
        summary = self._limiter.take_summary()
        if summary is None:
            return
        top = dict(summary.top_participants)
        log.warning(
            "room_rate_limited",
            room=self.ctx.room,
            period_s=summary.period_s,
            dropped=summary.dropped,
            reasons=summary.reasons,
            dropped_bytes=summary.dropped_bytes,
            top_participants=top,
            left=left,
        )
        # The stream's notice of the loss, in the room's order (the limits drop before the
        # inbox, so it has room for this). take_summary() gave fresh dicts: no copies.
        notice = LimitedItem(
            self.ctx, summary.period_s, summary.reasons, summary.dropped_bytes, top, left,
            self._clock(),
        )  # fmt: skip
        self._inbox.put(notice)

    def _refuse(self, reason: RefusedReason, now: float, detail: dict[str, object]) -> None:
        """Refused here, dead-lettered by the decode stage: in order with the room's events."""
        metrics.dropped(reason)
        self._inbox.put(RejectedItem(self.ctx, reason, detail, now))
