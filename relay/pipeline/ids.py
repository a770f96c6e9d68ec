"""Deterministic event ids: the same source event observed twice gets the same id.

Two ways to name an event:

- The decoder sets `Event.dedupe_key` when the source carries its own identity (a
  LiveAvatar `event_id`, a text stream id, a transcript segment id + state). The id is
  then a hash of (room, protocol, kind, dedupe_key) and nothing else: a repeat of the key
  IS the same event seen again (browser retry, replay after a reconnect, a second replica
  after a lease takeover), so it gets the same id and consumers drop it.
- Otherwise the id hashes what the event says: (room, protocol, kind, participant
  identity, canonical JSON of `data` and `source`, the 1-second bucket of `received_at`).
  Two distinct events can say exactly the same thing in the same second (a user says
  "yes" twice), so the n-th occurrence of a hash within its bucket gets a suffix:
  `ev_<hash>`, `ev_<hash>-2`, `ev_<hash>-3`. Two observers that saw the same sequence
  agree on every id.

Trade-off of the content hash: it only agrees across observers whose receive times fall
in the same second, and an observer that joins (or reconnects) in the middle of a bucket
that already held a repeat numbers the later occurrences from 1, so it may give a repeat
the id the other observer gave the first one. Sources that can carry an identity should
set `dedupe_key`.

The ingress (observer or browser ingest, `Event.ingress`) is never hashed: the same
LiveAvatar `event_id` gets the same id whichever way it came. A content-hashed event
hashes its receive time's second, which for ingest is the browser's receive time: it
matches the observer's id only when both clocks put it in the same second, so consumers
should not expect content-hashed events to pair up across ingresses.

Occurrence counts are kept per room (and ingress) for the current and the previous bucket only, so
memory follows the event rate, not the uptime; `forget_room` drops a room's state.
"""

from __future__ import annotations

import hashlib
import math

from relay.contract.encoding import canonical
from relay.contract.event import Event
from relay.lru import LRU

ID_PREFIX = "ev_"
DIGEST_BYTES = 10  # 20 hex characters: 80 bits, no collision in any realistic stream
MAX_ROOMS = 10_000  # rooms whose occurrence counts are kept (least recently used go first)


def _digest(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=DIGEST_BYTES).hexdigest()


class _Occurrences:
    """How often each content hash was minted in a room's latest two 1-second buckets."""

    __slots__ = ("bucket", "current", "previous")

    def __init__(self, bucket: int) -> None:
        self.bucket = bucket
        self.current: dict[str, int] = {}
        self.previous: dict[str, int] = {}

    def count(self, base: str, bucket: int) -> int:
        """Record one more occurrence of `base` in `bucket`; return its number (1, 2, ...)."""
        if bucket > self.bucket:
            self.previous = self.current if bucket == self.bucket + 1 else {}
            self.current = {}
            self.bucket = bucket
        if bucket == self.bucket:
            seen = self.current
        elif bucket == self.bucket - 1:
            seen = self.previous
        else:
            # Older than both kept buckets: too late to compare with what came before.
            return 1
        occurrence = seen.get(base, 0) + 1
        seen[base] = occurrence
        return occurrence


class IdMinter:
    """Mints `Event.id`s for one process. Not thread-safe (one event loop)."""

    def __init__(self, *, max_rooms: int = MAX_ROOMS) -> None:
        self._rooms: LRU[str, _Occurrences] = LRU(max_rooms)

    def mint(self, event: Event, data: bytes, source: bytes) -> str:
        """The event's id; `data` and `source` are its canonically encoded parts
        (`Event.encoded_parts()`), the same bytes the entry is built from.

        The hash input is a JSON array of the parts (an unambiguous encoding: no separator
        can be forged), byte for byte what earlier versions hashed."""
        if event.dedupe_key:
            key = [event.room, event.protocol, event.kind, event.dedupe_key]
            return ID_PREFIX + _digest(canonical(key))
        bucket = math.floor(event.received_at)
        head = canonical([event.room, event.protocol, event.kind, event.participant.identity])
        base = _digest(b"%s,%s,%s,%d]" % (head[:-1], data, source, bucket))
        # Counted per ingress: the observer and a browser that saw the same sequence each
        # number its repeats from 1, as separate observers do.
        scope = event.room if event.ingress == "observer" else f"{event.room}\0{event.ingress}"
        occurrence = self._occurrences(scope, bucket).count(base, bucket)
        if occurrence == 1:
            return ID_PREFIX + base
        return f"{ID_PREFIX}{base}-{occurrence}"

    def forget_room(self, room: str) -> None:
        """Drop a room's occurrence counts, of every ingress (the room was left)."""
        self._rooms.pop(room)
        self._rooms.pop(f"{room}\0ingest")

    @property
    def rooms_tracked(self) -> int:
        return len(self._rooms)

    def _occurrences(self, room: str, bucket: int) -> _Occurrences:
        state = self._rooms.get(room)
        if state is None:
            state = _Occurrences(bucket)
            self._rooms.put(room, state)
        return state
