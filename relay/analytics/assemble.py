"""One room's open session, assembled event by event: a JSON-able dict, so it can live in
Redis between events (relay.analytics.store) and any process can continue it.

Pure functions, no I/O. Speech is recorded as edges (start/end per role and signal) and
paired only when the summary is made, sorted by time: an edge applied late still lands
in its place.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import Any

from relay.analytics.model import (
    DOC_VERSION,
    INTERRUPT_COMMANDS,
    RESPONSE_ROLES,
    ROOM_FINISHED_REASONS,
    SPEAKER_ROLES,
    AnalyticsConfig,
    EndReason,
)

State = dict[str, Any]
Doc = dict[str, Any]
# Kinds that open a session in a room that has none (or whose last one ended).
OPENING_KINDS = frozenset(
    {
        "session.started",
        "participant.joined",
        "speech.started",
        "transcript.partial",
        "transcript.final",
        "chat.message",
        "command",
        "agent.state",
    }
)
FINALIZED_MEMORY = 256


def ts_ms(ts: str) -> int:
    """RFC 3339 (`2025-11-21T13:45:01.123Z`) to epoch milliseconds."""
    return round(datetime.fromisoformat(ts).timestamp() * 1000)


def iso(ms: int) -> str:
    """Epoch milliseconds to the contract's RFC 3339 UTC form."""
    whole, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def new_state(room: str, first_ms: int) -> State:
    return {
        "v": DOC_VERSION,
        "room": room,
        "session_id": None,
        "start_ms": first_ms,
        "started_ms": None,  # session.started, when seen
        "last_ms": first_ms,
        "closed": False,
        "ids": [],
        "counts": {},
        "participants": {},  # identity -> role
        "present": [],  # non-observer identities in the room
        "empty_since_ms": None,
        "open": {},  # "role|segment_id" -> the utterance being assembled
        "finalized": [],  # recent "role|segment_id" whose final is out
        "utterances": [],
        "empty_utterances": 0,
        "edges": [],  # [ms, role, signal, 1 start | 0 end]
        "active_roles": [],  # roles in the last speakers.active
        "interruptions": [],  # [ms, kind, identity] (commands; overlaps come later)
        "gaps": [],  # [start_ms, end_ms, reason]
        "gap_open": None,  # [start_ms, reason]
    }


def session_key(state: State) -> str:
    """The session id, or `<room>@<start ms>` for rooms with no LiveAvatar session."""
    session_id = state["session_id"]
    return str(session_id) if session_id else f"{state['room']}@{state['start_ms']}"


def opens_session(state: State | None, event: Doc) -> bool:
    """Whether `event` begins a session, given the room's state (None or closed)."""
    if event.get("kind") not in OPENING_KINDS:
        return False
    if event.get("kind") == "participant.joined" and _role(event) == "observer":
        return False
    if state is None or not state["closed"]:
        return True
    return event.get("session_id") is None or event.get("session_id") != state["session_id"]


def end_of(event: Doc) -> tuple[EndReason, str | None] | None:
    """The end reason `event` gives its session, if it ends it."""
    kind, data = event.get("kind"), event.get("data") or {}
    if kind == "session.stopped":
        return "session_stopped", data.get("reason")
    if kind == "observer.left" and data.get("reason") in ROOM_FINISHED_REASONS:
        return "room_finished", data.get("reason")
    return None


def apply(state: State, event: Doc, config: AnalyticsConfig) -> list[Doc]:
    """Apply one (new, not duplicate) event; returns the utterances it finalized."""
    at = ts_ms(event["ts"])
    state["last_ms"] = max(state["last_ms"], at)
    kind: str = event["kind"]
    state["counts"][kind] = state["counts"].get(kind, 0) + 1
    if event.get("session_id") and not state["session_id"]:
        state["session_id"] = event["session_id"]
    _note_participant(state, event)
    closed = expire(state, at, config)
    handler = _HANDLERS.get(kind)
    if handler is not None:
        closed.extend(handler(state, event, at))
    return closed


def expire(state: State, now_ms: int, config: AnalyticsConfig) -> list[Doc]:
    """Close the turns with no update for `utterance_timeout_s`, without a final."""
    limit = now_ms - round(config.utterance_timeout_s * 1000)
    stale = [key for key, u in state["open"].items() if u["last_ms"] < limit]
    return [_close(state, key, None, None) for key in stale if key in state["open"]]


def close_all(state: State, at_ms: int) -> list[Doc]:
    """The session ends: every open turn is closed without a final."""
    return [_close(state, key, None, None) for key in list(state["open"])]


def idle_expired(state: State, now_ms: int, config: AnalyticsConfig) -> bool:
    empty_since = state["empty_since_ms"]
    limit = round(config.participants_idle_s * 1000)
    return empty_since is not None and now_ms - empty_since >= limit


def _role(event: Doc) -> str:
    return str((event.get("participant") or {}).get("role") or "unknown")


def _note_participant(state: State, event: Doc) -> None:
    participant = event.get("participant") or {}
    identity, role = participant.get("identity"), participant.get("role")
    if identity and role not in ("observer", "unknown", None):
        state["participants"].setdefault(identity, role)
    if event["kind"] == "participant.joined" and identity and role != "observer":
        state["participants"].setdefault(identity, role or "unknown")
        if identity not in state["present"]:
            state["present"].append(identity)
        state["empty_since_ms"] = None
    elif event["kind"] == "participant.left" and identity in state["present"]:
        state["present"].remove(identity)
        if not state["present"]:
            state["empty_since_ms"] = ts_ms(event["ts"])
    elif identity and role not in ("observer", "unknown", None) and not state["present"]:
        # Someone speaks in a room where nobody was seen joining (or after everyone
        # left): the idle time counts from the last sign of life, not from the leave.
        state["empty_since_ms"] = ts_ms(event["ts"])


def _on_partial(state: State, event: Doc, at: int) -> list[Doc]:
    data = event["data"]
    key = f"{data.get('role')}|{data.get('segment_id')}"
    if key in state["finalized"]:
        return []  # a late update of a segment whose final is out
    turn = state["open"].get(key)
    if turn is None:
        turn = _open(state, event, key, at)
    text = str(data.get("text") or "")
    turn["text"] = turn["text"] + text if data.get("mode") == "delta" else text
    turn["last_ms"] = at
    return []


def _on_final(state: State, event: Doc, at: int) -> list[Doc]:
    data = event["data"]
    key = f"{data.get('role')}|{data.get('segment_id')}"
    if key in state["finalized"]:
        return []  # already closed: the decoders drop such repeats; this holds if not
    if key not in state["open"]:
        _open(state, event, key, at)
    closed = _close(state, key, str(data.get("text") or ""), at)
    return [closed] if closed else []


def _open(state: State, event: Doc, key: str, at: int) -> Doc:
    data = event["data"]
    turn = {
        "role": data.get("role"),
        "identity": _speaker(state, event),
        "protocol": event.get("protocol"),
        "segment_id": data.get("segment_id"),
        "text": "",
        "start_ms": at,
        "last_ms": at,
    }
    state["open"][key] = turn
    return turn


def _speaker(state: State, event: Doc) -> str | None:
    """Who spoke: the sender when it speaks for itself, else the one present with the role
    (the LiveAvatar agent sends the user's transcripts)."""
    role = event["data"].get("role")
    participant = event.get("participant") or {}
    if participant.get("role") == role:
        return str(participant.get("identity") or "") or None
    named = [who for who, r in state["participants"].items() if r == role]
    return named[0] if len(named) == 1 else None


def _close(state: State, key: str, final_text: str | None, at: int | None) -> Doc:
    turn = state["open"].pop(key)
    state["finalized"] = [*state["finalized"][-(FINALIZED_MEMORY - 1) :], key]
    # A final carries the whole text; an empty one (`*.transcription_ended`) keeps the chunks'.
    text = (final_text if final_text and final_text.strip() else turn["text"]).strip()
    end = at if at is not None else turn["last_ms"]
    if not text:
        state["empty_utterances"] += 1
        return {}
    doc = _utterance_doc(state, turn, text, end, closed_without_final=final_text is None)
    state["utterances"].append(doc)
    state["edges"].append([turn["start_ms"], turn["role"], "transcripts", 1])
    state["edges"].append([end, turn["role"], "transcripts", 0])
    return doc


def _utterance_doc(
    state: State, turn: Doc, text: str, end: int, *, closed_without_final: bool
) -> Doc:
    origin = f"{state['room']}|{state['start_ms']}|{turn['role']}|{turn['segment_id']}"
    return {
        "v": DOC_VERSION,
        "utterance_id": "ut_" + hashlib.sha1(origin.encode()).hexdigest()[:20],
        "room": state["room"],
        "session_id": session_key(state),
        "role": turn["role"],
        "identity": turn["identity"],
        "protocol": turn["protocol"],
        "text": text,
        "words": len(text.split()),
        "start": iso(turn["start_ms"]),
        "end": iso(end),
        "duration_ms": end - turn["start_ms"],
        "segment_ids": [turn["segment_id"]],
        "closed_without_final": closed_without_final,
    }


def _on_speech(state: State, event: Doc, at: int) -> list[Doc]:
    role = event["data"].get("role")
    if role not in SPEAKER_ROLES:
        return []
    starting = event["kind"] == "speech.started"
    state["edges"].append([at, role, "speech_events", 1 if starting else 0])
    if not starting:
        return []
    # A new turn of this role closes the one whose final never came.
    stale = [key for key, u in state["open"].items() if u["role"] == role]
    return [doc for key in stale if (doc := _close(state, key, None, None))]


def _on_agent_state(state: State, event: Doc, at: int) -> list[Doc]:
    data = event["data"]
    role = _role(event) if _role(event) in RESPONSE_ROLES else "agent"
    if data.get("state") == "speaking":
        state["edges"].append([at, role, "agent_state", 1])
    elif data.get("previous") == "speaking":
        state["edges"].append([at, role, "agent_state", 0])
    return []


def _on_speakers(state: State, event: Doc, at: int) -> list[Doc]:
    identities = event["data"].get("identities") or []
    roles = {state["participants"].get(who) for who in identities} & set(SPEAKER_ROLES)
    before = set(state["active_roles"])
    for role in sorted(roles - before):
        state["edges"].append([at, role, "active_speakers", 1])
    for role in sorted(before - roles):
        state["edges"].append([at, role, "active_speakers", 0])
    state["active_roles"] = sorted(roles)
    return []


def _on_command(state: State, event: Doc, at: int) -> list[Doc]:
    if event["data"].get("command") in INTERRUPT_COMMANDS:
        who = (event.get("participant") or {}).get("identity") or None
        state["interruptions"].append([at, "command", who])
    return []


def _on_gap_start(state: State, event: Doc, at: int) -> list[Doc]:
    reason = (event.get("data") or {}).get("reason")
    if event["kind"] == "observer.left" and reason in ROOM_FINISHED_REASONS:
        return []
    if state["gap_open"] is None:
        label = "reconnecting" if event["kind"] == "observer.reconnecting" else "observer_left"
        state["gap_open"] = [at, label]
    return []


def _on_gap_end(state: State, event: Doc, at: int) -> list[Doc]:
    if state["gap_open"] is not None:
        start, reason = state["gap_open"]
        state["gaps"].append([start, max(start, at), reason])
        state["gap_open"] = None
    return []


def _on_session_started(state: State, event: Doc, at: int) -> list[Doc]:
    state["started_ms"] = at if state["started_ms"] is None else state["started_ms"]
    return []


_HANDLERS = {
    "transcript.partial": _on_partial,
    "transcript.final": _on_final,
    "speech.started": _on_speech,
    "speech.ended": _on_speech,
    "agent.state": _on_agent_state,
    "speakers.active": _on_speakers,
    "command": _on_command,
    "observer.reconnecting": _on_gap_start,
    "observer.left": _on_gap_start,
    "observer.resumed": _on_gap_end,
    "observer.joined": _on_gap_end,
    "session.started": _on_session_started,
}
