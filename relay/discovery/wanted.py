"""The wanted set: the rooms the deployment should observe, in Redis.

A hash `{prefix}:wanted`: room -> JSON {"source", "since", "url"?}. A token handed in for
a url+token room is kept apart, at `{prefix}:token:{<room>}`, with a TTL no longer than
the token's own expiry (read from its `exp` claim); it is never logged. A url+token room
whose token expired cannot be joined: `targets()` leaves it out.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Literal

import orjson
import redis.asyncio as aioredis
import structlog

from relay import keys
from relay.config import RedisSettings
from relay.observer import RoomTarget
from relay.redis_client import awaited

log = structlog.get_logger(__name__)

Source = Literal["static", "admin", "webhook", "reconcile", "control"]
# Sources that name a room LiveKit shows: reconciliation may release them.
DISCOVERED: frozenset[str] = frozenset({"webhook", "reconcile"})
DEFAULT_TOKEN_TTL_S = 6 * 3600  # a token without `exp`


def token_ttl_s(token: str, now_s: float | None = None) -> float:
    """Seconds until the JWT's `exp` (no verification: only its lifetime is read)."""
    now_s = time.time() if now_s is None else now_s
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"]) - now_s
    except (IndexError, ValueError, KeyError, TypeError):
        return float(DEFAULT_TOKEN_TTL_S)


class WantedSet:
    def __init__(self, redis: aioredis.Redis, settings: RedisSettings) -> None:
        self._redis = redis
        self._settings = settings
        self._key = keys.wanted_key(settings)

    async def add(self, target: RoomTarget, source: Source) -> bool:
        """Want `target.room`; False if it was wanted already (its entry is kept, a newer
        token replaces the old one)."""
        entry: dict[str, object] = {"source": source, "since": time.time()}
        if target.url:
            entry["url"] = target.url
        if target.token:
            entry["token"] = True  # the token itself lives in its own key, with a TTL
            ttl_s = token_ttl_s(target.token)
            if ttl_s <= 0:
                log.warning("wanted_token_expired", room=target.room, source=source)
                return False
            await self._redis.set(
                keys.token_key(self._settings, target.room), target.token, px=int(ttl_s * 1000)
            )
        added = await awaited(
            self._redis.hsetnx(self._key, target.room, orjson.dumps(entry).decode())
        )
        if added:
            log.info("room_wanted_shared", room=target.room, source=source)
        return bool(added)

    async def remove(self, room: str) -> bool:
        removed = await awaited(self._redis.hdel(self._key, room))
        await self._redis.delete(keys.token_key(self._settings, room))
        if removed:
            log.info("room_released_shared", room=room)
        return bool(removed)

    async def refresh(self, room: str) -> None:
        """The room is alive: reset its reconcile miss count (a wanted room only)."""
        await awaited(self._redis.hdel(keys.missing_key(self._settings), room))

    async def entries(self) -> dict[str, dict[str, object]]:
        raw = await awaited(self._redis.hgetall(self._key))
        out: dict[str, dict[str, object]] = {}
        for room, value in raw.items():
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError:
                parsed = {}
            out[room.decode()] = parsed if isinstance(parsed, dict) else {}
        return out

    async def target(self, room: str, entry: dict[str, object]) -> RoomTarget | None:
        """The target to join `room` with; None for a url+token room whose token expired."""
        url = entry.get("url")
        url = url if isinstance(url, str) else None
        if not entry.get("token"):
            return RoomTarget(room=room, url=url)
        token = await self._redis.get(keys.token_key(self._settings, room))
        if token is None:
            return None
        return RoomTarget(room=room, url=url, token=token.decode())
