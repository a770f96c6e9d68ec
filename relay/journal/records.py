"""The journal's record format: one accepted entry, framed so a torn tail is detected.

    u32 body length | u32 crc32 of the body | body
    body = u8 type (1 event, 2 dead letter) | f64 received_at | the entry's JSON

An event's JSON is the document the sinks write (`Event.encoded`), byte for byte, so a
replayed event keeps its id, seq and epoch; `received_at` is kept at full precision for
the latency metric. A dead letter's JSON is its `to_dict()`.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import orjson

from relay.contract.event import DeadLetter, Entry, Event, Participant

_FRAME = struct.Struct("<II")  # body length, crc32
_HEAD = struct.Struct("<Bd")  # type, received_at
_EVENT, _DEAD_LETTER = 1, 2
# Far above any entry (payloads are capped at pipeline.max_payload_bytes): a longer length
# field is garbage, not a record.
MAX_BODY_BYTES = 16 * 1024 * 1024


def encode_record(entry: Entry) -> bytes:
    if isinstance(entry, Event):
        body = _HEAD.pack(_EVENT, entry.received_at) + entry.json_bytes()
    else:
        body = _HEAD.pack(_DEAD_LETTER, entry.received_at) + entry.json_bytes()
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def scan(data: bytes) -> tuple[list[bytes], int]:
    """The bodies of the whole records at the start of `data`, and the bytes they span:
    anything after (a record cut short or failing its checksum) is a torn tail."""
    bodies: list[bytes] = []
    offset, end = 0, len(data)
    while offset + _FRAME.size <= end:
        length, crc = _FRAME.unpack_from(data, offset)
        start = offset + _FRAME.size
        if length < _HEAD.size or length > MAX_BODY_BYTES or start + length > end:
            break
        body = data[start : start + length]
        if zlib.crc32(body) != crc:
            break
        bodies.append(body)
        offset = start + length
    return bodies, offset


def decode_body(body: bytes) -> Entry:
    """The entry a record body holds; ValueError when it is not one (a bug or disk rot:
    the checksum passed)."""
    kind, received_at = _HEAD.unpack_from(body)
    document = body[_HEAD.size :]
    fields: dict[str, Any] = orjson.loads(document)
    if kind == _EVENT:
        return _event(fields, received_at, document)
    if kind == _DEAD_LETTER:
        room, reason, detail = fields["room"], fields["reason"], fields["detail"]
        if "id" not in fields:  # written by a relay before dead letters had ids
            return DeadLetter(room, reason, received_at, detail)
        return DeadLetter(room, reason, received_at, detail, fields["id"])
    raise ValueError(f"unknown record type {kind}")


def _event(fields: dict[str, Any], received_at: float, document: bytes) -> Event:
    who = fields["participant"]
    participant = Participant(who["identity"], who["sid"], who["kind"], who["role"])
    return Event(
        room=fields["room"],
        protocol=fields["protocol"],
        kind=fields["kind"],
        data=fields["data"],
        received_at=received_at,
        participant=participant,
        source=fields["source"],
        session_id=fields["session_id"],
        room_sid=fields.get("room_sid"),
        id=fields["id"],
        seq=fields["seq"],
        encoded=document,
        ingress=fields.get("ingress", "observer"),
        epoch=fields.get("epoch"),
    )
