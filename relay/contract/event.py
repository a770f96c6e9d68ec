"""Event contract v1 (see docs/contract.md and event-v1.schema.json beside this file).

Decoders build `Event`s without `id`/`seq`; the pipeline stamps both when it accepts the
event (`Event.stamped`), and with them the event's JSON, encoded once. Sinks only ever
write `json_bytes()` and never look inside `data`.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

from relay.contract.encoding import canonical, document, encode
from relay.contract.kinds import DeadLetterReason, EventKind, Ingress, ParticipantRole, Protocol

CONTRACT_VERSION = 1


# The last second formatted, (epoch second, "2026-11-21T13:45:01"): events come in bursts
# within a second, and strftime is most of the cost. One tuple, so a reader in another
# thread never sees a second with another second's text.
_last_second: tuple[int, str] = (-1, "")


def format_ts(epoch_s: float) -> str:
    """RFC 3339 UTC with milliseconds: 2026-11-21T13:45:01.123Z."""
    global _last_second
    whole = int(epoch_s)
    millis = int((epoch_s - whole) * 1000)
    second, text = _last_second
    if second != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _last_second = (whole, text)
    return f"{text}.{millis:03d}Z"


@dataclasses.dataclass(frozen=True, slots=True)
class Participant:
    identity: str
    sid: str | None = None
    kind: str = "unknown"  # standard, agent, sip, ingress, egress, unknown
    role: ParticipantRole = "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "sid": self.sid, "kind": self.kind, "role": self.role}


NO_PARTICIPANT = Participant(identity="", role="unknown")


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One normalized event. `id` and `seq` are empty until the pipeline stamps them."""

    room: str
    protocol: Protocol
    kind: EventKind
    data: dict[str, Any]
    received_at: float  # epoch seconds, when the relay received the raw item
    participant: Participant = NO_PARTICIPANT
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    session_id: str | None = None
    room_sid: str | None = None
    # The part of the deterministic id that identifies the source event (see relay.pipeline.ids).
    dedupe_key: str = ""
    id: str = ""
    seq: int = 0
    # The event's JSON, set by `stamped` (what the sinks write).
    encoded: bytes = b""
    # How the event reached relay; written only when not "observer" (the JSON stays
    # byte for byte what it was for observed events). Never part of the id.
    ingress: Ingress = "observer"
    # The writer's fencing epoch for this room (scale-out leases); None: no lease.
    epoch: int | None = None

    def encoded_parts(self) -> tuple[bytes, bytes]:
        """`data` and `source`, canonically encoded: the id is minted from these bytes and
        the entry is built from them (relay.contract.encoding)."""
        return canonical(self.data), canonical(self.source)

    def stamped(
        self,
        event_id: str,
        seq: int,
        parts: tuple[bytes, bytes] | None = None,
        epoch: int | None = None,
    ) -> Event:
        """This event with its id, seq and epoch, and its JSON built from the encoded parts
        (`encoded_parts()`, encoded now when not given). The id never depends on epoch."""
        head = self._head(event_id, seq, epoch)
        data, source = parts if parts is not None else self.encoded_parts()
        # A direct call: dataclasses.replace costs twice as much on this per-event path.
        return Event(
            self.room,
            self.protocol,
            self.kind,
            self.data,
            self.received_at,
            self.participant,
            self.source,
            self.session_id,
            self.room_sid,
            self.dedupe_key,
            event_id,
            seq,
            document(head, data, source),
            self.ingress,
            epoch,
        )

    def _head(self, event_id: str, seq: int, epoch: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "v": CONTRACT_VERSION,
            "id": event_id,
            "seq": seq,
        }
        if epoch is not None:
            out["epoch"] = epoch
        out["ts"] = format_ts(self.received_at)
        out["room"] = self.room
        if self.room_sid:
            out["room_sid"] = self.room_sid
        out["session_id"] = self.session_id
        out["participant"] = self.participant  # orjson writes the dataclass's fields in order
        out["protocol"] = self.protocol
        out["kind"] = self.kind
        if self.ingress != "observer":
            out["ingress"] = self.ingress
        return out

    def to_dict(self) -> dict[str, Any]:
        out = self._head(self.id, self.seq, self.epoch)
        out["participant"] = self.participant.to_dict()
        out["data"] = self.data
        out["source"] = self.source
        return out

    def json_bytes(self) -> bytes:
        """The event's JSON: encoded once when stamped, else now."""
        if self.encoded:
            return self.encoded
        return document(self._head(self.id, self.seq, self.epoch), *self.encoded_parts())

    def to_json(self) -> str:
        return self.json_bytes().decode("utf-8", "replace")


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """Something that could not become an event or could not be written, with the reason.

    Written to the DLQ stream (fields `reason`, `room`, `id`, `entry`); `detail` carries
    what is needed to look into it (topic, sender, size, a bounded preview), never a whole
    payload. `id` is made once, when the letter is: a retried batch and a replayed journal
    carry the same one, so the write guard writes the letter once.
    """

    room: str
    reason: DeadLetterReason
    received_at: float
    detail: dict[str, Any]
    id: str = dataclasses.field(default_factory=lambda: f"dl_{uuid.uuid4().hex}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": CONTRACT_VERSION,
            "id": self.id,
            "ts": format_ts(self.received_at),
            "room": self.room,
            "reason": self.reason,
            "detail": self.detail,
        }

    def json_bytes(self) -> bytes:
        return encode(self.to_dict())

    def to_json(self) -> str:
        return self.json_bytes().decode("utf-8", "replace")


Entry = Event | DeadLetter  # what the pipeline buffers and the sinks write
