"""`relay tail`: follow the global or one room's stream and print events readably."""

from __future__ import annotations

import json
from typing import Any

from relay.config import Settings
from relay.keys import events_key, room_key
from relay.redis_client import create_redis

BLOCK_MS = 1000
SUMMARY_MAX = 80


async def tail(
    settings: Settings, room: str | None, from_start: bool, count: int | None, as_json: bool
) -> int:
    redis = create_redis(settings.redis)
    key = room_key(settings.redis, room) if room else events_key(settings.redis)
    last_id = "0-0" if from_start else "$"
    printed = 0
    try:
        while count is None or printed < count:
            reply = await redis.xread({key: last_id}, block=BLOCK_MS, count=100)
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    raw = fields.get(b"event") or fields.get("event") or b"{}"
                    print(raw.decode() if as_json else format_line(json.loads(raw)), flush=True)
                    printed += 1
                    if count is not None and printed >= count:
                        return 0
    finally:
        await redis.aclose()
    return 0


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
