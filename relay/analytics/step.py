"""One transition of a room's analytics state: an event, or the clock (a sweep). Pure:
it returns what to store and what to write, and relay.analytics.store applies it in one
Redis transaction."""

from __future__ import annotations

import dataclasses

from relay.analytics.assemble import (
    Doc,
    State,
    apply,
    close_all,
    end_of,
    expire,
    idle_expired,
    new_state,
    opens_session,
    ts_ms,
)
from relay.analytics.model import AnalyticsConfig, EndReason
from relay.analytics.summarize import summarize

TOMBSTONE_FIELDS = ("v", "room", "session_id", "start_ms", "last_ms", "closed", "ids")


@dataclasses.dataclass(slots=True)
class Step:
    state: State | None  # to store (None: nothing changed)
    utterances: list[Doc] = dataclasses.field(default_factory=list)
    summaries: list[Doc] = dataclasses.field(default_factory=list)
    duplicate: bool = False


def on_event(state: State | None, event: Doc, config: AnalyticsConfig) -> Step:
    """Apply `event` to the room's state (None: the room has none yet)."""
    if state is not None and event["id"] in state["ids"]:
        return Step(None, duplicate=True)
    at = ts_ms(event["ts"])
    step = Step(state)
    if state is not None and not state["closed"] and idle_expired(state, at, config):
        # Everyone had left long enough before this event: that session is over.
        _finish(step, state["empty_since_ms"], "participants_left", None)
    current = step.state
    if current is None or current["closed"]:
        if not opens_session(current, event):
            if current is not None:
                _remember(current, event["id"], config)
            step.state = current
            return step
        fresh = new_state(event["room"], at)
        fresh["ids"] = current["ids"] if current else []
        step.state = current = fresh
    _remember(current, event["id"], config)
    step.utterances.extend(apply(current, event, config))
    ending = end_of(event)
    if ending is not None:
        _finish(step, at, *ending)
    return step


def on_clock(state: State | None, now_ms: int, config: AnalyticsConfig) -> Step:
    """What the passing of time does: turns time out, an emptied room's session ends."""
    if state is None or state["closed"]:
        return Step(None)
    step = Step(state, expire(state, now_ms, config))
    if idle_expired(state, now_ms, config):
        _finish(step, state["empty_since_ms"], "participants_left", None)
    elif not step.utterances:
        step.state = None  # nothing changed: no write
    return step


def _finish(step: Step, end_ms: int, reason: EndReason, detail: str | None) -> None:
    state = step.state
    assert state is not None and not state["closed"]
    step.utterances.extend(close_all(state, end_ms))
    step.summaries.append(summarize(state, end_ms, reason, detail))
    state["closed"] = True
    step.state = {field: state[field] for field in TOMBSTONE_FIELDS}
    step.state["session_id"] = step.summaries[-1]["session_id"]


def _remember(state: State, event_id: str, config: AnalyticsConfig) -> None:
    ids: list[str] = state["ids"]
    ids.append(event_id)
    if len(ids) > config.dedupe_ids:
        del ids[: len(ids) - config.dedupe_ids]


def on_events(state: State | None, events: list[Doc], config: AnalyticsConfig) -> Step:
    """Several events of one room in order, as one step (one transaction)."""
    total = Step(None, duplicate=bool(events))
    current = state
    for event in events:
        step = on_event(current, event, config)
        total.duplicate = total.duplicate and step.duplicate
        total.utterances.extend(step.utterances)
        total.summaries.extend(step.summaries)
        if step.state is not None:
            current = total.state = step.state
    return total
