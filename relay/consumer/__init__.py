"""A consumer kit for the relay's streams (docs/consumer.md).

- `StreamConsumer`: a consumer group on `relay:events` (or any relay stream): own pending
  entries first, dedupe on `id` within a window, XACK after the handler returns,
  XAUTOCLAIM of what a dead consumer left pending.
- `RoomFollower`: one room's stream in `seq` order, repeats and late entries dropped and
  reported, gaps reported.

Delivery is at least once: exactly once needs the store's own idempotence (the event
`id` as a unique key); `examples/sqlite_loader.py` shows it.
"""

from relay.consumer.entries import BadEntry, RecentIds, StreamEvent, parse_entry
from relay.consumer.group import ConsumerStats, StreamConsumer
from relay.consumer.room import RoomEvent, RoomFollower, Skipped

__all__ = [
    "BadEntry",
    "ConsumerStats",
    "RecentIds",
    "RoomEvent",
    "RoomFollower",
    "Skipped",
    "StreamConsumer",
    "StreamEvent",
    "parse_entry",
]
