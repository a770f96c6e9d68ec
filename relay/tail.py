"""`relay tail`: follow the global or one room's stream and print events readably.

It says on stderr which Redis (password masked) and which key it follows before it
waits; a Redis it cannot reach is one line and exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from relay.checks import redact_url
from relay.config import Settings
from relay.keys import events_key, room_key, room_transcripts_key, transcripts_key
from relay.redis_client import create_redis

BLOCK_MS = 1000
SUMMARY_MAX = 80
EXIT_REDIS = 1


async def tail(
    settings: Settings,
    room: str | None,
    from_start: bool,
    count: int | None,
    as_json: bool,
    *,
    transcripts: bool = False,
) -> int:
    """`transcripts`: follow the finalized utterances (relay analytics) instead of events."""
    key = _key(settings, room, transcripts)
    where = redact_url(settings.redis.url.get_secret_value())
    redis = create_redis(settings.redis)
    try:
        try:
            # The last entry now: "$" would be resolved only at the first XREAD, and what
            # arrives before it would be missed although we said we were waiting.
            last: Any = await redis.xrevrange(key, count=1)
        except ResponseError as exc:
            return _fail(f"cannot read {key} on {where}: {exc}")
        except (RedisError, OSError) as exc:
            return _fail(f"cannot reach Redis at {where}: {exc}")
        # An empty key is the usual sign of another prefix (`make demo` writes relay-demo).
        note = "" if last else " (nothing there yet; another prefix? --prefix)"
        start = "0-0" if from_start or not last else last[0][0].decode()
        _say(f"following {key} on {where}{note}, waiting for events (Ctrl-C to stop)")
        try:
            await _follow(redis, key, start, count, as_json)
        except (RedisError, OSError) as exc:
            return _fail(f"lost Redis at {where}: {exc}")
    finally:
        await redis.aclose()
    return 0


async def _follow(
    redis: aioredis.Redis, key: str, last_id: str, count: int | None, as_json: bool
) -> None:
    printed = 0
    while count is None or printed < count:
        reply = await redis.xread({key: last_id}, block=BLOCK_MS, count=100)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                print(render(last_id, fields, as_json), flush=True)
                printed += 1
                if count is not None and printed >= count:
                    return


def _key(settings: Settings, room: str | None, transcripts: bool) -> str:
    if transcripts:
        if room:
            return room_transcripts_key(settings.redis, room)
        return transcripts_key(settings.redis)
    return room_key(settings.redis, room) if room else events_key(settings.redis)


def render(entry_id: str, fields: dict[bytes, bytes], as_json: bool) -> str:
    """The entry's line; an entry that is not an event says so instead of stopping tail."""
    if b"utterance" in fields:
        return _render_utterance(entry_id, fields[b"utterance"], as_json)
    raw = fields.get(b"event")
    if raw is None:
        return f"(entry {entry_id}: no event field)"
    if as_json:
        return raw.decode(errors="replace")
    try:
        event = json.loads(raw)
    except ValueError:
        return f"(entry {entry_id}: event is not JSON)"
    if not isinstance(event, dict):
        return f"(entry {entry_id}: event is not an object)"
    try:
        return format_line(event)
    except (AttributeError, TypeError):  # e.g. `data` or `participant` not an object
        return f"(entry {entry_id}: not a relay event: {raw.decode(errors='replace')[:200]})"


def _render_utterance(entry_id: str, raw: bytes, as_json: bool) -> str:
    """`13:45:01.200 la-1 user:visitor "Can you check my order?" (no final)`."""
    if as_json:
        return raw.decode(errors="replace")
    try:
        u = json.loads(raw)
        note = " (no final)" if u.get("closed_without_final") else ""
        who = f"{u.get('role')}:{u.get('identity') or '-'}"
        return f'{str(u.get("start", ""))[11:23]} {u.get("room")} {who} "{u.get("text")}"{note}'
    except (ValueError, AttributeError):
        return f"(entry {entry_id}: utterance is not a JSON object)"


def _say(message: str) -> None:
    print(f"relay tail: {message}", file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    _say(message)
    return EXIT_REDIS


def format_line(event: dict[str, Any]) -> str:
    """`13:45:01.123 room-1 #12 speech.started avatar:heygen role=avatar`."""
    participant = event.get("participant") or {}
    who = participant.get("identity") or "-"
    role = participant.get("role") or "unknown"
    clock = str(event.get("ts", ""))[11:23]
    summary = summarize(event.get("kind", ""), event.get("data") or {})
    line = f"{clock} {event.get('room')} #{event.get('seq')} {event.get('kind')} {role}:{who}"
    return f"{line} {summary}".rstrip()


def summarize(kind: str, data: dict[str, Any]) -> str:
    """The few fields a person reads first: the text, else the scalar fields."""
    if isinstance(data.get("text"), str):
        text = data["text"].replace("\n", " ")
        if len(text) > SUMMARY_MAX:
            text = text[: SUMMARY_MAX - 1] + "…"
        prefix = f"{data['command']} " if data.get("command") else ""
        suffix = f" [{data['mode']}]" if data.get("mode") else ""
        return f'{prefix}"{text}"{suffix}'
    parts = [f"{key}={value}" for key, value in data.items() if key != "payload"]
    return " ".join(parts)
