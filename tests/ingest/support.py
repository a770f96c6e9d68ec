"""Batches as the forwarder posts them, and LiveAvatar packets to put in them."""

from __future__ import annotations

import json
import time
from typing import Any

SECRET = "ingest-secret-for-tests-0123456789abcdef"
ROOM = "ingest-room"
SESSION = "sess-1"
AGENT = {"identity": "liveavatar-agent-sess-1", "sid": "PA_agent", "kind": "agent"}


def liveavatar_item(seq: int, event_id: str, text: str, **extra: Any) -> dict[str, Any]:
    """A user transcript from the LiveAvatar agent, as the browser received it."""
    payload = {
        "event_id": event_id,
        "event_type": "user.transcription",
        "session_id": SESSION,
        "text": text,
    }
    item = {
        "seq": seq,
        "ts": time.time() * 1000,
        "type": "data",
        "topic": "agent-response",
        "sender": AGENT,
        "payload": json.dumps(payload),
    }
    return {**item, **extra}


def batch(
    items: list[dict[str, Any]], *, room: str = ROOM, session: str = SESSION, client: str = "c1"
) -> dict[str, Any]:
    return {"room": room, "session": session, "client": client, "items": items}
