"""One ingest session (a token's room + session): its decode state, what it already took,
its item budget, and until when a token of it can post. All bounded."""

from __future__ import annotations

import asyncio
import collections

from relay.decode.room_decoder import RoomDecoder
from relay.lru import LRU
from relay.ratelimit import TokenBucket

CLIENTS_PER_SESSION = 16  # page loads of one session whose sequence numbers are kept


class SeqWindow:
    """The last `cap` client sequence numbers taken from one page load."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._seen: set[int] = set()
        self._order: collections.deque[int] = collections.deque()

    def take(self, seq: int) -> bool:
        """True the first time `seq` comes (and remembers it), False for a repeat."""
        if seq in self._seen:
            return False
        self._seen.add(seq)
        self._order.append(seq)
        if len(self._order) > self._cap:
            self._seen.discard(self._order.popleft())
        return True


class IngestSession:
    def __init__(
        self, room: str, session: str, *, window: int, bucket: TokenBucket, expires_at: float
    ) -> None:
        self.room = room
        self.session = session
        # The latest expiry (epoch s) of the tokens seen for it: after that no batch of it
        # can come, unless a new token for it does.
        self.expires_at = expires_at
        self.decoder = RoomDecoder()
        self.bucket = bucket
        # Held while a batch is decoded and handed on: batches of a session keep their order.
        self.lock = asyncio.Lock()
        self._window = window
        self._clients: LRU[str, SeqWindow] = LRU(CLIENTS_PER_SESSION)

    def seqs(self, client: str) -> SeqWindow:
        seqs = self._clients.get(client)
        if seqs is None:
            seqs = SeqWindow(self._window)
            self._clients.put(client, seqs)
        return seqs
