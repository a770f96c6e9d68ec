"""A posted batch, checked field by field: what the forwarder sends (docs/ingest.md).

Anything of the wrong shape is a BatchError naming the field (the endpoint answers 400
and writes nothing); an item of a `type` this relay does not know is kept as `unknown`
and rejected on its own, so a newer forwarder's batch still delivers the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from relay.contract.event import NO_PARTICIPANT, Participant

ItemType = Literal["data", "text", "attributes", "speakers", "participant", "unknown"]
ITEM_TYPES = frozenset({"data", "text", "attributes", "speakers", "participant"})
PARTICIPANT_KINDS = frozenset({"standard", "ingress", "egress", "sip", "agent"})
MAX_NAME_CHARS = 256  # identities, topics, ids, room, session, client


class BatchError(ValueError):
    """The batch is malformed (or has too many items): the message names what to fix."""

    def __init__(self, message: str, reason: Literal["malformed", "too_many_items"] = "malformed"):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One thing the browser saw, as posted (checked; not yet a raw item)."""

    seq: int
    ts_ms: float
    type: ItemType
    fields: Mapping[str, Any]
    sender: Participant = NO_PARTICIPANT


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    room: str
    session: str
    client: str
    token: str | None
    dropped: int
    items: tuple[Item, ...]


def parse_batch(body: bytes, *, max_items: int) -> Batch:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BatchError("body must be JSON (a batch object)") from None
    if not isinstance(doc, dict):
        raise BatchError("body must be a JSON object")
    items = doc.get("items")
    if not isinstance(items, list):
        raise BatchError("'items' must be a list")
    if len(items) > max_items:
        raise BatchError(f"too many items: {len(items)} > {max_items}", "too_many_items")
    token = doc.get("token")
    if token is not None and not isinstance(token, str):
        raise BatchError("'token' must be a string")
    dropped = doc.get("dropped", 0)
    if not _is_int(dropped) or dropped < 0:
        raise BatchError("'dropped' must be a non-negative integer")
    return Batch(
        room=_name(doc, "room"),
        session=_name(doc, "session"),
        client=_name(doc, "client"),
        token=token,
        dropped=dropped,
        items=tuple(_item(raw, n) for n, raw in enumerate(items)),
    )


def _item(raw: object, n: int) -> Item:
    where = f"items[{n}]"
    if not isinstance(raw, dict):
        raise BatchError(f"{where} must be an object")
    seq, ts, kind = raw.get("seq"), raw.get("ts"), raw.get("type")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise BatchError(f"{where}.seq must be a non-negative integer")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts < 0:
        raise BatchError(f"{where}.ts must be epoch milliseconds (a number)")
    if not isinstance(kind, str):
        raise BatchError(f"{where}.type must be a string")
    if kind not in ITEM_TYPES:
        return Item(seq, float(ts), "unknown", {})
    check = _CHECKS[kind]
    fields = check(raw, where)
    sender = _participant(raw.get("sender"), f"{where}.sender") if kind != "speakers" else None
    return Item(seq, float(ts), kind, fields, sender or NO_PARTICIPANT)  # type: ignore[arg-type]


def _data(raw: dict[str, Any], where: str) -> dict[str, Any]:
    return {"topic": _str(raw, "topic", where, default=""), "payload": _str(raw, "payload", where)}


def _text(raw: dict[str, Any], where: str) -> dict[str, Any]:
    return {
        "topic": _str(raw, "topic", where),
        "stream_id": _str(raw, "stream_id", where),
        "text": _str(raw, "text", where),
        "attributes": _strings(raw.get("attributes", {}), f"{where}.attributes"),
    }


def _attributes(raw: dict[str, Any], where: str) -> dict[str, Any]:
    return {
        "changed": _strings(raw.get("changed", {}), f"{where}.changed"),
        "attributes": _strings(raw.get("attributes", {}), f"{where}.attributes"),
    }


def _speakers(raw: dict[str, Any], where: str) -> dict[str, Any]:
    identities = raw.get("identities")
    if not isinstance(identities, list) or not all(isinstance(i, str) for i in identities):
        raise BatchError(f"{where}.identities must be a list of strings")
    return {"identities": tuple(identities)}


def _participant_change(raw: dict[str, Any], where: str) -> dict[str, Any]:
    change = raw.get("change")
    if change not in ("joined", "left"):
        raise BatchError(f"{where}.change must be 'joined' or 'left'")
    reason = raw.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BatchError(f"{where}.reason must be a string")
    attributes = _strings(raw.get("attributes", {}), f"{where}.attributes")
    return {"change": change, "reason": reason, "attributes": attributes}


_CHECKS = {
    "data": _data,
    "text": _text,
    "attributes": _attributes,
    "speakers": _speakers,
    "participant": _participant_change,
}


def _participant(raw: object, where: str) -> Participant | None:
    """`{identity, sid?, kind?}` as the browser knows it; null for a server-sent packet."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BatchError(f"{where} must be an object or null")
    identity = _str(raw, "identity", where)
    sid = raw.get("sid")
    if sid is not None and not isinstance(sid, str):
        raise BatchError(f"{where}.sid must be a string or null")
    kind = raw.get("kind", "unknown")
    if not isinstance(kind, str):
        raise BatchError(f"{where}.kind must be a string")
    kind = kind if kind in PARTICIPANT_KINDS else "unknown"
    return Participant(identity=identity, sid=sid or None, kind=kind)


def _str(raw: dict[str, Any], key: str, where: str, *, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise BatchError(f"{where}.{key} must be a string")
    return value


def _strings(raw: object, where: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise BatchError(f"{where} must be an object of strings")
    return raw


def _name(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise BatchError(f"'{key}' must be a non-empty string (at most {MAX_NAME_CHARS} chars)")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
