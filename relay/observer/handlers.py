"""The SDK handlers of one observed room: what the SDK hands over, as raw items.

The SDK's event handlers must be synchronous and it swallows what they raise: each one
here stamps the receive time, turns the SDK's objects into a raw item and puts it in the
room's inbox, and returns. Text streams are read in a task each; their handlers must be
registered before `connect()`, one per topic (`attach`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from livekit import rtc

from relay import metrics
from relay.config import PipelineSettings
from relay.contract.kinds import RefusedReason
from relay.contract.raw import (
    AttributesItem,
    DataItem,
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
from relay.observer.presence import Presence, PresenceChange
from relay.observer.sdk_room import ObserverRoom

TEXT_STREAM_TOPICS = ("lk.transcription", "lk.chat")


class RoomHandlers:
    def __init__(
        self,
        inbox: RoomInbox,
        limits: PipelineSettings,
        clock: Callable[[], float],
        reconnecting: Callable[[], bool],
    ) -> None:
        """`reconnecting()`: the observer is away (participant churn is reconciled later)."""
        self.ctx = RoomContext(room=inbox.room)  # with the sid once joined (the observer's)
        self.room: ObserverRoom | None = None  # the joined room, for text stream senders
        self.presence = Presence()
        self._inbox = inbox
        self._limits = limits
        self._clock = clock
        self._reconnecting = reconnecting
        self._streams: set[asyncio.Task[None]] = set()

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
        """The room was left: text streams still open are cut (counted as unfinished)."""
        for task in list(self._streams):
            task.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)

    # -- the handlers: synchronous, tiny ---------------------------------------------

    def _on_data(self, packet: rtc.DataPacket) -> None:
        now = self._clock()
        sender = to_participant(packet.participant)
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
        converted = [to_segment(segment) for segment in segments]
        track_sid = publication.sid if publication is not None else None
        sender = to_participant(participant)
        self._inbox.put(TranscriptionItem(self.ctx, sender, track_sid, converted, self._clock()))

    def _on_text_stream(self, reader: rtc.TextStreamReader, sender_identity: str) -> None:
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
                text, chunks = text + chunk, chunks + 1
                self._inbox.put(item(text, header, chunks))
        except rtc.StreamError as exc:  # aborted, oversized, or the room went away
            detail = text_stream_detail(info, sender_identity, str(exc))
            self._refuse("text_stream_error", self._clock(), detail)
            return
        self._inbox.put(item(text, dict(info.attributes or {}), None))

    def _refuse(self, reason: RefusedReason, now: float, detail: dict[str, object]) -> None:
        """Refused here, dead-lettered by the decode stage: in order with the room's events."""
        metrics.dropped(reason)
        self._inbox.put(RejectedItem(self.ctx, reason, detail, now))
