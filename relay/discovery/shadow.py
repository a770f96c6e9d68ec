"""`ShadowIntake`: what the observers of this process hand on, held back for the rooms it
observes without their lease (a hand-over's taker, before the giver let go).

Entries of a shadowed room stay here, in order, until the room's lease is won
(`promote`: they go to the pipeline, stamped with the new owner's epoch and seqs, then
the room's entries go straight through) or the shadow ends (`discard`). What the giver
also received and wrote carries the same deterministic ids, so the write guard skips it:
the overlap is written once, and nothing said between the giver's leave and the taker's
lease is lost. At most `max_entries` are held per room (the oldest go first, counted:
the giver was still in the room when they arrived).

A hot standby (`discovery.standby`) holds a room the same way for as long as its owner
lives, keeping only what arrived in the last `keep_s` seconds (its `observer.joined`
is kept: it says since when the standby observed): when the owner dies the standby wins
the lease and writes what it kept, so what the owner received but never wrote, and what
was said until the standby's lease, is written; what the owner did write is skipped.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from relay.contract.event import Entry, Event
from relay.discovery import metrics as m


class EntryIntake(Protocol):
    """Where held entries go once the lease is won (the pipeline)."""

    async def submit(self, entry: Entry) -> None: ...


class ShadowIntake:
    def __init__(self, pipeline: EntryIntake, max_entries: int) -> None:
        self._pipeline = pipeline
        self._max_entries = max_entries
        self._held: dict[str, deque[Entry]] = {}
        self._keep_s: dict[str, float] = {}  # standby rooms: how long entries are kept
        self._pinned: dict[str, Entry] = {}  # standby rooms: their observer.joined
        self._promoting: set[str] = set()
        self.clock = time.time

    def hold(self, room: str, keep_s: float | None = None) -> None:
        """From now on the room's entries are held: all of them (a hand-over's taker), or
        those of the last `keep_s` seconds (a standby)."""
        self._held.setdefault(room, deque())
        if keep_s is not None:
            self._keep_s[room] = keep_s

    def holds(self, room: str) -> bool:
        return room in self._held

    def held(self, room: str) -> int:
        return len(self._held.get(room, ()))

    async def submit(self, entry: Entry) -> None:
        queue = self._held.get(entry.room)
        if queue is None:
            await self._pipeline.submit(entry)
            return
        queue.append(entry)
        if entry.room in self._promoting:
            return
        keep_s = self._keep_s.get(entry.room)
        if keep_s is not None:
            if isinstance(entry, Event) and entry.kind == "observer.joined":
                self._pinned.setdefault(entry.room, entry)
            oldest = self.clock() - keep_s
            while queue and queue[0].received_at < oldest:
                queue.popleft()  # the owner wrote it long ago: not counted
        if len(queue) > self._max_entries:
            queue.popleft()
            m.SHADOW_TRIMMED.inc()

    def oldest(self, room: str) -> float | None:
        """When the oldest entry held for `room` was received (epoch seconds)."""
        queue = self._held.get(room)
        if (pinned := self._pinned.get(room)) is not None:
            return pinned.received_at  # kept although older than anything in the queue
        return queue[0].received_at if queue else None

    async def promote(self, room: str, skip: Callable[[Entry], bool] | None = None) -> int:
        """The lease is won: what was held goes to the pipeline in order (entries that
        arrive meanwhile queue behind it), except what `skip` says the previous owner
        wrote (relay/discovery/overlap.py), then the room goes straight through. Returns
        how many held entries were written."""
        queue = self._held.get(room)
        if queue is None:
            return 0
        self._keep_s.pop(room, None)
        joined = self._pinned.pop(room, None)
        if joined is not None and all(entry is not joined for entry in queue):
            queue.appendleft(joined)
        self._promoting.add(room)
        count = 0
        try:
            while queue:
                entry = queue.popleft()
                if skip is not None and skip(entry):
                    continue
                await self._pipeline.submit(entry)
                count += 1
        finally:
            self._promoting.discard(room)
            del self._held[room]
        return count

    def discard(self, room: str) -> int:
        """The shadow ended without the lease: what was held goes (the owner wrote it)."""
        self._keep_s.pop(room, None)
        self._pinned.pop(room, None)
        return len(self._held.pop(room, ()))
