"""Every Redis key the relay uses, from the templates in RedisSettings."""

from __future__ import annotations

from relay.config import RedisSettings


def events_key(settings: RedisSettings) -> str:
    return settings.events_key.format(prefix=settings.prefix)


def room_key(settings: RedisSettings, room: str) -> str:
    # The template wraps the room in braces: a Redis Cluster hash tag.
    return settings.room_key.format(prefix=settings.prefix, room=room)


def dlq_key(settings: RedisSettings) -> str:
    return settings.dlq_key.format(prefix=settings.prefix)
