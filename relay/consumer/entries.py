"""What both consumers share: a parsed stream entry and a bounded memory of recent ids.

An entry the relay wrote has the fields `kind`, `room`, `id` and `event` (the event's
JSON, docs/contract.md); only `event` is read, the others are there for tools that
filter without parsing.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event read from a stream: the Redis entry id and the parsed event."""

    entry_id: str  # Redis's id of the entry, e.g. "1763732702923-0"
    event: dict[str, Any]

    @property
    def id(self) -> str:
        """The event's deterministic id (`ev_...`): the dedupe key."""
        value: str = self.event["id"]
        return value

    @property
    def seq(self) -> int:
        value: int = self.event["seq"]
        return value

    @property
    def room(self) -> str:
        return str(self.event.get("room", ""))

    @property
    def kind(self) -> str:
        return str(self.event.get("kind", ""))


@dataclasses.dataclass(frozen=True, slots=True)
class BadEntry:
    """An entry that is not a relay event, with the reason; it is acknowledged, not retried.

    Reasons: `deleted` (trimmed by MAXLEN or XDEL before it was handled), `missing_event`,
    `invalid_json`, `not_an_object`, `invalid_id`, `invalid_seq`, and `handler_failed`
    (the handler failed `max_attempts` times)."""

    entry_id: str
    reason: str
    fields: dict[bytes, bytes]


class BadEntryError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_id(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def parse_entry(entry_id: str, fields: dict[bytes, bytes] | None) -> StreamEvent:
    """The event of an entry, or BadEntryError naming what is wrong with it."""
    if not fields:
        # A pending entry that was trimmed away comes back from XREADGROUP with no fields.
        raise BadEntryError("deleted")
    raw = fields.get(b"event")
    if raw is None:
        raise BadEntryError("missing_event")
    try:
        event = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        raise BadEntryError("invalid_json") from None
    if not isinstance(event, dict):
        raise BadEntryError("not_an_object")
    if not isinstance(event.get("id"), str) or not event["id"]:
        raise BadEntryError("invalid_id")
    seq = event.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise BadEntryError("invalid_seq")
    return StreamEvent(entry_id, event)


class RecentIds:
    """The last `size` ids seen, the oldest forgotten first: memory bounded by `size`.

    `size` 0 remembers nothing. A repeat of an id refreshes it (it stays remembered)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"dedupe window must be >= 0, got {size}")
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        if isinstance(event_id, str) and event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        return False

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        if self.size == 0:
            return
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)
