"""The ingest service: an authorized batch -> raw items -> the session's decoder -> the
pipeline, the same decoders, ids, metrics and sinks as observed rooms.

Items become the observer's raw items (relay/contract/raw.py); their events are marked
`ingress="ingest"`. A repeated (client, seq) of a session is answered `duplicate` and not
decoded again; and since ids are deterministic, a repeat that got past the window (a
second relay, a window that forgot) still gets the id it had for events that carry one.

Sessions end when their tokens have expired (swept at most every SWEEP_INTERVAL_S, by the
requests themselves) or when `ingest.max_sessions` newer ones push them out. A room is in
use while ingest holds a session of it or a batch of it is being handed on; when its last
use ends, `on_room_idle(room)` is called (the worker: the pipeline forgets the room's
counters unless it is observed), so rooms only ever posted to do not pile up.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

from relay.config import IngestSettings
from relay.contract.event import Entry, Event
from relay.contract.raw import (
    AttributesItem,
    DataItem,
    ParticipantItem,
    RawItem,
    RoomContext,
    SpeakersItem,
    TextStreamItem,
)
from relay.decode.stage import EntryIntake
from relay.ingest import metrics
from relay.ingest.batch import Batch, Item
from relay.ingest.metrics import RejectReason
from relay.ingest.session import IngestSession
from relay.ingest.tokens import IngestGrant
from relay.lru import LRU
from relay.ratelimit import TokenBucket

RoomIdle = Callable[[str], None]
SWEEP_INTERVAL_S = 10.0  # how often a request looks for sessions whose tokens expired


class Refused(Exception):
    """The request is refused as a whole: HTTP `status`, with `reason` and a message."""

    def __init__(
        self, status: int, reason: RejectReason, message: str, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclasses.dataclass(slots=True)
class Outcome:
    accepted: int = 0
    duplicate: list[int] = dataclasses.field(default_factory=list)
    rejected: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicate": len(self.duplicate),
            "rejected": len(self.rejected),
            "duplicates": self.duplicate,
            "rejections": self.rejected,
        }


class IngestService:
    def __init__(
        self,
        settings: IngestSettings,
        intake: EntryIntake,
        *,
        max_payload_bytes: int,
        on_room_idle: RoomIdle | None = None,
        clock: Callable[[], float] = time.time,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        """`on_room_idle(room)`: ingest no longer uses `room` (module docstring); `clock`:
        the wall clock token expiries are compared with."""
        self.settings = settings
        self._intake = intake
        self._max_payload_bytes = max_payload_bytes
        self._sessions: LRU[tuple[str, str], IngestSession] = LRU(settings.max_sessions)
        self._on_room_idle = on_room_idle
        self._clock = clock
        self._uses: dict[str, int] = {}  # per room: sessions held + batches being handed on
        self._sweep_interval_s = sweep_interval_s
        self._next_sweep = 0.0

    def check(self, grant: IngestGrant, batch: Batch, origin: str | None) -> IngestSession:
        """The batch's session, if the token allows the batch now; else Refused."""
        if batch.room != grant.room:
            raise Refused(403, "wrong_room", "the token is for another room")
        if batch.session != grant.session:
            raise Refused(403, "wrong_session", "the token is for another session")
        if grant.origin is not None and origin != grant.origin:
            raise Refused(403, "wrong_origin", "the token is bound to another origin")
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_interval_s
            self.end_expired_sessions()
        session = self._session(grant, now)
        wait_s = session.bucket.take(len(batch.items), now)
        if wait_s > 0:
            retry = math.ceil(wait_s) if math.isfinite(wait_s) else 60
            raise Refused(429, "rate_limited", "too many items for this token", retry)
        return session

    async def ingest(self, session: IngestSession, batch: Batch) -> Outcome:
        """Decode what is new and hand it to the pipeline; the per-item answer."""
        if batch.dropped:
            metrics.INGEST_CLIENT_DROPPED.inc(batch.dropped)
        outcome = Outcome()
        self._use(session.room)
        try:
            await self._ingest(session, batch, outcome)
        finally:
            self._unuse(session.room)
        return outcome

    async def _ingest(self, session: IngestSession, batch: Batch, outcome: Outcome) -> None:
        async with session.lock:
            entries: list[Entry] = []
            seqs = session.seqs(batch.client)
            ctx = RoomContext(batch.room)
            now = time.time()
            for item in batch.items:
                raw = self._raw_item(item, ctx, now, outcome)
                if raw is None:
                    continue
                if not seqs.take(item.seq):
                    outcome.duplicate.append(item.seq)
                    continue
                outcome.accepted += 1
                entries.extend(_marked(session.decoder.decode(raw)))
            metrics.taken("accepted", outcome.accepted)
            metrics.taken("duplicate", len(outcome.duplicate))
            for entry in entries:
                await self._intake.submit(entry)

    def _raw_item(
        self, item: Item, ctx: RoomContext, now: float, outcome: Outcome
    ) -> RawItem | None:
        reason: RejectReason | None = None
        if item.type == "unknown":
            reason = "unknown_type"
        elif _payload_bytes(item) > self._max_payload_bytes:
            reason = "oversized"
        if reason is not None:
            metrics.rejected(reason)
            outcome.rejected.append({"seq": item.seq, "reason": reason})
            return None
        return to_raw_item(item, ctx, self._received_at(item, now))

    def _received_at(self, item: Item, now: float) -> float:
        """The browser's receive time, unless its clock is off by more than allowed."""
        at = item.ts_ms / 1000
        return at if abs(at - now) <= self.settings.max_clock_skew_s else now

    def _session(self, grant: IngestGrant, now: float) -> IngestSession:
        key = (grant.room, grant.session)
        session = self._sessions.get(key)
        if session is not None:
            session.expires_at = max(session.expires_at, grant.expires_at)  # a refreshed token
            return session
        s = self.settings
        bucket = TokenBucket(s.rate_items_per_s, s.burst_items, now)
        session = IngestSession(
            *key, window=s.dedupe_window, bucket=bucket, expires_at=grant.expires_at
        )
        if len(self._sessions) >= self._sessions.cap:  # the least recently used one goes
            self._end_session(next(iter(self._sessions)))
        self._sessions.put(key, session)
        self._use(grant.room)
        return session

    def end_expired_sessions(self) -> int:
        """End the sessions whose tokens have all expired (none of them can post any more),
        but for one whose batch is being handed on; how many ended."""
        now = self._clock()
        expired = [
            key
            for key in self._sessions
            if (session := self._sessions.peek(key)) is not None
            and session.expires_at <= now
            and not session.lock.locked()
        ]
        for key in expired:
            self._end_session(key)
        return len(expired)

    def _end_session(self, key: tuple[str, str]) -> None:
        if self._sessions.pop(key) is not None:
            self._unuse(key[0])

    def _use(self, room: str) -> None:
        self._uses[room] = self._uses.get(room, 0) + 1

    def _unuse(self, room: str) -> None:
        left = self._uses[room] - 1
        if left:
            self._uses[room] = left
            return
        del self._uses[room]
        if self._on_room_idle is not None:
            self._on_room_idle(room)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    @property
    def rooms_in_use(self) -> int:
        """Rooms with a session held or a batch being handed on."""
        return len(self._uses)

    def uses_room(self, room: str) -> bool:
        return room in self._uses


def to_raw_item(item: Item, ctx: RoomContext, received_at: float) -> RawItem:
    """The raw item the observer would have made of what the browser saw."""
    f, who = item.fields, item.sender
    if item.type == "data":
        payload = f["payload"].encode("utf-8")
        return DataItem(ctx, who, f["topic"], payload, True, received_at)
    if item.type == "text":
        return TextStreamItem(
            ctx, who, f["topic"], f["stream_id"], f["text"], f["attributes"], received_at
        )
    if item.type == "attributes":
        return AttributesItem(ctx, who, f["changed"], f["attributes"], received_at)
    if item.type == "speakers":
        return SpeakersItem(ctx, f["identities"], received_at)
    change, reason, attributes = f["change"], f["reason"], f["attributes"]
    return ParticipantItem(ctx, who, change, reason, received_at, attributes)


def _payload_bytes(item: Item) -> int:
    text = item.fields.get("payload", item.fields.get("text", ""))
    return len(text) if isinstance(text, str) and text.isascii() else len(str(text).encode())


def _marked(events: list[Event]) -> list[Entry]:
    return [dataclasses.replace(event, ingress="ingest") for event in events]
