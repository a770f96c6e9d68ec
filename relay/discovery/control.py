"""The control stream `{prefix}:control`: backends ask to join or leave a room.

Entries (fields): `op` = `join` | `leave`, `room`, and for a room whose token comes from
elsewhere `url` and `token` (the token is stored with a TTL up to its expiry, never
logged nor dead-lettered). Read by the consumer group `relay` (one replica applies each
entry) and acknowledged after it was applied. A bad entry goes to the dead-letter stream
(`reason` = `control_invalid`, the entry without its token, and why) and is acknowledged;
the consumer carries on.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from relay import keys, metrics
from relay import keys as relay_keys
from relay.config import RedisSettings
from relay.contract.event import DeadLetter
from relay.discovery import metrics as m
from relay.discovery.filter import RoomFilter
from relay.discovery.wanted import WantedSet
from relay.observer import RoomTarget

log = structlog.get_logger(__name__)

GROUP = "relay"
BLOCK_MS = 1000
MAX_ROOM_CHARS = 256


class BadControlEntry(ValueError):
    pass


def parse(fields: dict[bytes, bytes]) -> tuple[str, RoomTarget]:
    try:
        text = {k.decode(): v.decode() for k, v in fields.items()}
    except UnicodeDecodeError:
        raise BadControlEntry("fields must be UTF-8") from None
    op, room = text.get("op"), text.get("room", "")
    if op not in ("join", "leave"):
        raise BadControlEntry("op must be 'join' or 'leave'")
    if not room or len(room) > MAX_ROOM_CHARS:
        raise BadControlEntry(f"room must be 1..{MAX_ROOM_CHARS} characters")
    url, token = text.get("url") or None, text.get("token") or None
    if (url is None) != (token is None):
        raise BadControlEntry("give both 'url' and 'token', or neither")
    return op, RoomTarget(room=room, url=url, token=token)


class ControlConsumer:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: RedisSettings,
        wanted: WantedSet,
        room_filter: RoomFilter,
        consumer: str,
        *,
        mints_tokens: bool,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._wanted = wanted
        self._filter = room_filter
        self._consumer = consumer
        self._mints_tokens = mints_tokens
        self._key = keys.control_key(settings)
        # XREADGROUP BLOCK must end well within the socket timeout.
        self._block_ms = max(10, min(BLOCK_MS, int(settings.socket_timeout_s * 500)))

    async def run(self, until: asyncio.Event) -> None:
        while not until.is_set():
            try:
                await self._ensure_group()
                await self._read_once()
            except Exception as exc:  # Redis away: try again shortly
                log.warning("control_read_failed", error=repr(exc))
                await asyncio.sleep(1.0)

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read_once(self) -> None:
        # Our own pending entries first (applied but not acknowledged before a restart).
        for start in ("0", ">"):
            reply = await self._redis.xreadgroup(
                GROUP, self._consumer, {self._key: start}, count=100, block=self._block_ms
            )
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    await self._apply(entry_id, fields)

    async def _apply(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            op, target = parse(fields)
            if op == "join" and target.token is None and not self._mints_tokens:
                raise BadControlEntry("this relay cannot mint tokens: give 'url' and 'token'")
        except BadControlEntry as exc:
            await self._dead_letter(entry_id, fields, str(exc))
        else:
            if op == "leave":
                await self._wanted.remove(target.room)
            elif self._filter.accepts(target.room):
                await self._wanted.add(target, "control")
            else:
                m.ROOMS_FILTERED.inc()
            m.control_entry("applied")
            log.info("control_applied", op=op, room=target.room)
        await self._redis.xack(self._key, GROUP, entry_id)

    async def _dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes], why: str) -> None:
        shown = {
            k.decode(errors="replace"): v.decode(errors="replace")[:200]
            for k, v in fields.items()
            if k != b"token"
        }
        room = shown.get("room", "")
        detail = {"control_id": entry_id.decode(), "error": why, "fields": shown}
        letter = DeadLetter(room, "control_invalid", time.time(), detail)
        await self._redis.xadd(
            relay_keys.dlq_key(self._settings),
            {
                "reason": "control_invalid",
                "room": room,
                "id": letter.id,
                "entry": letter.json_bytes(),
            },
            maxlen=self._settings.dlq_maxlen,
            approximate=True,
        )
        metrics.dead_lettered("control_invalid")
        m.control_entry("dead_lettered")
        log.warning("control_entry_invalid", control_id=entry_id.decode(), error=why)
