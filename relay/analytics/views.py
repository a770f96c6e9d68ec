"""Reading what the analytics wrote: recent summaries, one by session id or room, and an
open session's utterances so far."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from relay import keys
from relay.analytics.assemble import Doc
from relay.config import RedisSettings

ROOM_SCAN_MAX = 1000  # summaries looked through for a room's latest


class SessionReader:
    def __init__(self, redis: aioredis.Redis, settings: RedisSettings) -> None:
        self.redis = redis
        self.settings = settings

    async def recent(self, count: int) -> list[Doc]:
        """The latest `count` summaries, newest first."""
        entries: Any = await self.redis.xrevrange(keys.sessions_key(self.settings), count=count)
        return [json.loads(fields[b"summary"]) for _id, fields in entries]

    async def by_id(self, session_id: str) -> Doc | None:
        key = keys.session_key(self.settings, session_id)
        raw: Any = await self.redis.hget(key, "summary")  # type: ignore[misc]
        return json.loads(raw) if raw else None

    async def latest_of_room(self, room: str) -> Doc | None:
        entries: Any = await self.redis.xrevrange(
            keys.sessions_key(self.settings), count=ROOM_SCAN_MAX
        )
        for _id, fields in entries:
            if fields.get(b"room", b"").decode() == room:
                summary: Doc = json.loads(fields[b"summary"])
                return summary
        return None

    async def find(self, name: str) -> Doc | None:
        """A summary by session id, else the latest of the room so named."""
        return await self.by_id(name) or await self.latest_of_room(name)

    async def room_utterances(self, room: str, count: int = 1000) -> list[Doc]:
        """The room's latest finalized utterances (also of a session still open), oldest first."""
        key = keys.room_transcripts_key(self.settings, room)
        entries: Any = await self.redis.xrevrange(key, count=count)
        return [json.loads(fields[b"utterance"]) for _id, fields in reversed(entries)]
