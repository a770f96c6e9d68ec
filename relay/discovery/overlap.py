"""What a new owner leaves out of what it held: what the previous owner wrote already.

An event whose source names it (`dedupe_key`) gets the same id from both observers, and
the write guard skips the repeat. A content-hashed event's id includes the second it was
received (relay/pipeline/ids.py), so two observers that received it on either side of a
second boundary mint two ids, and the guard would let both through. So before writing
what it held, the new owner reads what the room's stream got over the held span and
leaves out each held content-hashed event the stream has with the same content, received
within MATCH_WINDOW_S: each written event answers for one held event, so a real repeat
(the same words twice) is still written.

`observer.limited` notices are each observer's own counts over its own periods, so they
never match by content. The new owner leaves out a held notice whose period ended before
the previous owner's last notice did (that owner announced those drops), and writes the
later ones: drops the previous owner counted but did not live to announce are announced,
at the cost of counting at most one period's overlap twice.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from relay import keys
from relay.config import RedisSettings
from relay.contract.encoding import canonical
from relay.contract.event import Entry, Event

MATCH_WINDOW_S = 1.0  # two observers receive one packet within milliseconds
CLOCK_SLACK_S = 5.0  # stream ids are Redis's clock, received_at the relay's
READ_MAX = 20_000
LIMITED = "observer.limited"


def _key(protocol: str, kind: str, identity: str, data: Any, source: Any) -> bytes:
    return canonical([protocol, kind, identity, data, source])


class WrittenEvents:
    """The content-hashed events a room's stream got, to match held events against."""

    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self._times: dict[bytes, list[float]] = defaultdict(list)
        self._limited_until = float("-inf")  # when the previous owner's last notice was
        for doc in documents:
            if doc["kind"] == LIMITED:
                at = datetime.fromisoformat(doc["ts"]).timestamp()
                self._limited_until = max(self._limited_until, at)
                continue
            identity = (doc.get("participant") or {}).get("identity", "")
            key = _key(doc["protocol"], doc["kind"], identity, doc["data"], doc["source"])
            self._times[key].append(datetime.fromisoformat(doc["ts"]).timestamp())

    def already_written(self, entry: Entry) -> bool:
        """True (and the written event used up) if the stream has this held event."""
        if not isinstance(entry, Event) or entry.dedupe_key:
            return False  # a dead letter; an event the guard recognizes by its id
        if entry.kind == LIMITED:
            return entry.received_at <= self._limited_until
        key = _key(entry.protocol, entry.kind, entry.participant.identity, entry.data, entry.source)
        times = self._times.get(key)
        if not times:
            return False
        nearest = min(times, key=lambda at: abs(at - entry.received_at))
        if abs(nearest - entry.received_at) > MATCH_WINDOW_S:
            return False
        times.remove(nearest)
        return True


async def written_since(
    redis: aioredis.Redis, settings: RedisSettings, room: str, since_s: float
) -> WrittenEvents:
    """The room stream's events written from `since_s` on (epoch seconds, with slack)."""
    start = f"{max(0, int((since_s - CLOCK_SLACK_S) * 1000))}-0"
    entries = await redis.xrange(keys.room_key(settings, room), start, "+", count=READ_MAX)
    documents = [json.loads(fields[b"event"]) for _, fields in entries if b"event" in fields]
    return WrittenEvents(documents)
