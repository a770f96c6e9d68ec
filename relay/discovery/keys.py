"""The discovery keys, under the relay's prefix. Braces keep a room's keys in one slot."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar, cast

from relay.config import RedisSettings

T = TypeVar("T")


def wanted(s: RedisSettings) -> str:
    return f"{s.prefix}:wanted"


def missing(s: RedisSettings) -> str:
    """room -> reconcile rounds in a row that ListRooms did not show it."""
    return f"{s.prefix}:wanted:missing"


def token(s: RedisSettings, room: str) -> str:
    return f"{s.prefix}:token:{{{room}}}"


def lease(s: RedisSettings, room: str) -> str:
    return f"{s.prefix}:lease:{{{room}}}"


def epoch(s: RedisSettings, room: str) -> str:
    return f"{s.prefix}:epoch:{{{room}}}"


def seq(s: RedisSettings, room: str) -> str:
    """The highest seq any owner of the room may have stamped (reserved in blocks)."""
    return f"{s.prefix}:seq:{{{room}}}"


def seen(s: RedisSettings, room: str) -> str:
    """When an owner last acquired or renewed the room's lease (epoch ms): a takeover's gap."""
    return f"{s.prefix}:seen:{{{room}}}"


def workers(s: RedisSettings) -> str:
    """Sorted set: worker id -> when its registration expires (ms)."""
    return f"{s.prefix}:workers"


def reconcile_lease(s: RedisSettings) -> str:
    return f"{s.prefix}:lease:reconcile"


def webhook_seen(s: RedisSettings, event_id: str) -> str:
    return f"{s.prefix}:webhook:{event_id}"


def control(s: RedisSettings) -> str:
    return f"{s.prefix}:control"


async def awaited(reply: Awaitable[T] | T) -> T:
    """redis-py types hash commands for the sync and async clients at once: await the
    async one's reply with its own type."""
    return await cast(Awaitable[T], reply)
