"""LiveLayer widgets (docs/protocols.md section 3): data packets with NO topic keyed by `type`.

Its transcripts and agent state also arrive the LiveKit Agents way (`agents.py`); captions
share the room's segment dedupe and agent state its last-state memory with those.
"""

from __future__ import annotations

from typing import Any

from relay.contract.event import Event
from relay.contract.kinds import Protocol
from relay.contract.raw import AttributesItem, DataItem
from relay.decode.events import Message, Transcript, agent_state_events, emit_transcript, new_event
from relay.decode.payloads import (
    clean_str,
    get_flag,
    get_id,
    get_str,
    parse_json_text,
    segment_dedupe_key,
)
from relay.decode.state import RoomState

PROTOCOL: Protocol = "livelayer"
ENVELOPE_KEYS = frozenset({"type"})
PAGE_CONTEXT_ATTRIBUTE = "agent.context"

AGENT_TO_PAGE = frozenset(
    {
        "agent_caption",
        "agent_state",
        "emit_event",
        "avatar_stream_ready",
        "avatar_active",
        "avatar_idle",
        "bot_ready",
        "agent_error",
        "idle_warning",
        "idle_timeout",
        "navigate",
        "scroll_to",
        "scroll_page",
        "click",
        "fill_form",
        "focus_field",
        "submit_form",
        "request_page_context",
        "request_routes",
        "advance_step",
        "go_back",
        "submit_flow",
        "task_field_updated",
        "task_completed",
    }
)
# What the page tells the agent: commands (`user_message` carries the user's typed text).
PAGE_TO_AGENT = frozenset(
    {
        "page_context",
        "page_context_pending",
        "routes",
        "form_submitted",
        "form_submit_blocked",
        "form_submit_uncertain",
        "user_message",
    }
)
TYPES = AGENT_TO_PAGE | PAGE_TO_AGENT


def decode_message(
    item: DataItem, obj: dict[str, Any], msg_type: str, state: RoomState
) -> list[Event]:
    message = Message(item, PROTOCOL, obj, msg_type, ENVELOPE_KEYS, {"topic": "", "type": msg_type})
    if msg_type == "agent_caption":
        return _caption(message, state)
    if msg_type == "agent_state":
        agent_state = get_str(obj, "state")
        if not agent_state:
            return [message.invalid("state")]
        return agent_state_events(item, PROTOCOL, agent_state, state, dict(message.source))
    if msg_type in PAGE_TO_AGENT:
        return [message.command()]
    return [message.generic()]


def _caption(message: Message, state: RoomState) -> list[Event]:
    """`agent_caption {id, text, final}`: the agent's cumulative caption of one segment."""
    text = get_str(message.obj, "text")
    if text is None:
        return [message.invalid("text")]
    final = get_flag(message.obj, "final")
    key = f"{PROTOCOL}:agent"
    given = get_id(message.obj, "id")
    segment_id = state.turns.segment_id(key, message.item.received_at, final, given)
    transcript = Transcript(role="agent", text=text, segment_id=segment_id, final=final)
    dedupe_key = segment_dedupe_key(segment_id, final, text)
    source = dict(message.source)
    return emit_transcript(message.item, PROTOCOL, transcript, state, source, dedupe_key)


def decode_attributes(item: AttributesItem) -> list[Event]:
    """The page context the widget publishes as the `agent.context` attribute (JSON)."""
    value = item.changed.get(PAGE_CONTEXT_ATTRIBUTE)
    if not isinstance(value, str) or not value:
        return []
    parsed = parse_json_text(value)
    context = parsed.obj if parsed.obj is not None else clean_str(value)
    data = {"type": PAGE_CONTEXT_ATTRIBUTE, "payload": {"context": context}}
    source = {"attribute": PAGE_CONTEXT_ATTRIBUTE}
    return [new_event(item, PROTOCOL, "event", data, source=source)]
