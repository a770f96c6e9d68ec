"""`ShadowIntake`: what the observers of this process hand on, held back for the rooms it
observes without their lease (a hand-over's taker, before the giver let go).

Entries of a shadowed room stay here, in order, until the room's lease is won
(`promote`: they go to the pipeline, stamped with the new owner's epoch and seqs, then
the room's entries go straight through) or the shadow ends (`discard`). What the giver
also received and wrote carries the same deterministic ids, so the write guard skips it:
the overlap is written once, and nothing said between the giver's leave and the taker's
lease is lost. At most `max_entries` are held per room (the oldest go first, counted:
the giver was still in the room when they arrived).
"""

from __future__ import annotations

from collections import deque

from relay.contract.event import Entry
from relay.decode.stage import EntryIntake
from relay.discovery import metrics as m


class ShadowIntake:
    def __init__(self, pipeline: EntryIntake, max_entries: int) -> None:
        self._pipeline = pipeline
        self._max_entries = max_entries
        self._held: dict[str, deque[Entry]] = {}
        self._promoting: set[str] = set()

    def hold(self, room: str) -> None:
        """From now on the room's entries are held."""
        self._held.setdefault(room, deque())

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
        if len(queue) > self._max_entries and entry.room not in self._promoting:
            queue.popleft()
            m.SHADOW_TRIMMED.inc()

    async def promote(self, room: str) -> int:
        """The lease is won: what was held goes to the pipeline in order (entries that
        arrive meanwhile queue behind it), then the room goes straight through."""
        queue = self._held.get(room)
        if queue is None:
            return 0
        self._promoting.add(room)
        count = 0
        try:
            while queue:
                await self._pipeline.submit(queue.popleft())
                count += 1
        finally:
            self._promoting.discard(room)
            del self._held[room]
        return count

    def discard(self, room: str) -> int:
        """The shadow ended without the lease: what was held goes (the owner wrote it)."""
        return len(self._held.pop(room, ()))
