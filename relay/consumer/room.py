"""`RoomFollower`: one room's events in `seq` order, repeats dropped, gaps reported.

It reads the room's stream (`{prefix}:room:{<room>}`) with plain XREAD from an entry id
(no group: every follower sees everything) and applies one rule per event:

1. an `id` seen within the dedupe window is a repeat (a retried batch, a replay): dropped
   and reported as `duplicate`;
2. an `observer.joined` whose `seq` is not above the last one starts a new run: the
   writer's counter started again (the relay observed the room anew, or another replica
   took it over); it is yielded with `new_run`;
3. any other event whose `seq` is not above the last one is a late entry (written by a
   writer that no longer owns the room, or a repeat under another id): dropped and
   reported as `late`;
4. otherwise it is yielded; if its `seq` skips numbers, `missing` says how many.

The comparison lives in `order_key()`: when the writers stamp an owner epoch it becomes
(epoch, seq) and the rules stay the same. Nothing is buffered or re-sorted: the relay
writes each room in `seq` order, so anything out of order is a repeat or late.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import redis.asyncio as aioredis

from relay import keys
from relay.config import RedisSettings
from relay.consumer.entries import BadEntryError, RecentIds, StreamEvent, decode_id, parse_entry

SkipReason = Literal["duplicate", "late", "bad_entry"]


@dataclasses.dataclass(frozen=True, slots=True)
class RoomEvent:
    entry_id: str
    event: dict[str, Any]
    seq: int
    missing: int = 0  # seq numbers skipped right before this event (0: none)
    new_run: bool = False  # an observer.joined that restarted the count


@dataclasses.dataclass(frozen=True, slots=True)
class Skipped:
    entry_id: str
    reason: SkipReason
    event: dict[str, Any] | None  # None for a bad entry
    detail: str = ""  # for a bad entry, why (see BadEntry); for `late`, the last seq


OnSkip = Callable[[Skipped], None]


def order_key(event: StreamEvent) -> int:
    """What a room's events are ordered by: the writer's per-room counter."""
    return event.seq


class RoomFollower:
    """Follow one room's stream from `start_id` ("0-0": what it holds, "$": new only).

    Redis errors are raised from `events()`; a new follower from `last_id` resumes."""

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        *,
        start_id: str = "0-0",
        block_ms: int = 1000,
        count: int = 100,
        dedupe_window: int = 10_000,
        on_skip: OnSkip | None = None,
    ) -> None:
        self.stream = stream
        self.last_id = start_id  # the last entry read: resume from here
        self.last_seq: int | None = None
        self.skipped: dict[SkipReason, int] = {"duplicate": 0, "late": 0, "bad_entry": 0}
        self.gaps = 0  # events yielded with missing > 0
        self._redis = redis
        self._block_ms = block_ms
        self._count = count
        self._recent = RecentIds(dedupe_window)
        self._on_skip = on_skip
        self._stopped = asyncio.Event()

    @classmethod
    def for_room(
        cls, redis: aioredis.Redis, settings: RedisSettings, room: str, **options: Any
    ) -> RoomFollower:
        return cls(redis, keys.room_key(settings, room), **options)

    def stop(self) -> None:
        """End `events()`: within `block_ms` when it waits."""
        self._stopped.set()

    async def events(self) -> AsyncIterator[RoomEvent]:
        """The room's events, in order, until `stop()`."""
        if self.last_id == "$":
            # XREAD's "$" is resolved at each call: between two blocking reads that time
            # out, an entry would be missed. Start after the entry that is last now.
            last: Any = await self._redis.xrevrange(self.stream, count=1)
            self.last_id = decode_id(last[0][0]) if last else "0-0"
        while not self._stopped.is_set():
            reply: Any = await self._redis.xread(
                {self.stream: self.last_id}, count=self._count, block=self._block_ms
            )
            for _stream, entries in reply or []:
                for raw_id, fields in entries:
                    self.last_id = decode_id(raw_id)
                    item = self.accept(self.last_id, fields)
                    if item is not None:
                        yield item
                    if self._stopped.is_set():
                        return

    def accept(self, entry_id: str, fields: dict[bytes, bytes] | None) -> RoomEvent | None:
        """Apply the ordering rules (module docstring) to one entry: the event to yield,
        or None if it is dropped (and reported)."""
        try:
            event = parse_entry(entry_id, fields)
        except BadEntryError as exc:
            self._skip(Skipped(entry_id, "bad_entry", None, exc.reason))
            return None
        if event.id in self._recent:
            self._skip(Skipped(entry_id, "duplicate", event.event))
            return None
        key, last = order_key(event), self.last_seq
        behind = last is not None and key <= last
        new_run = behind and event.kind == "observer.joined"
        if behind and not new_run:
            self._skip(Skipped(entry_id, "late", event.event, f"last seq {last}"))
            return None
        missing = key - last - 1 if last is not None and not new_run else 0
        self._recent.add(event.id)
        self.last_seq = key
        if missing:
            self.gaps += 1
        return RoomEvent(entry_id, event.event, event.seq, missing, new_run)

    def _skip(self, skipped: Skipped) -> None:
        self.skipped[skipped.reason] += 1
        if self._on_skip is not None:
            self._on_skip(skipped)
