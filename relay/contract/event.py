"""Event contract v1 (see docs/contract.md and event-v1.schema.json beside this file).

Decoders build `Event`s without `id`/`seq`; the pipeline stamps both when it accepts the
event (`Event.stamped`). Sinks only ever call `to_json()` and never look inside `data`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Literal

CONTRACT_VERSION = 1

Protocol = Literal["liveavatar", "livekit-agents", "livelayer", "livekit", "raw", "relay"]
ParticipantRole = Literal["user", "agent", "avatar", "observer", "unknown"]


# One encoder for every event: building one per call is a measurable share of the cost.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def format_ts(epoch_s: float) -> str:
    """RFC 3339 UTC with milliseconds: 2026-11-21T13:45:01.123Z."""
    whole = int(epoch_s)
    millis = int((epoch_s - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


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
    kind: str
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

    def stamped(self, event_id: str, seq: int) -> Event:
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
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "v": CONTRACT_VERSION,
            "id": self.id,
            "seq": self.seq,
            "ts": format_ts(self.received_at),
            "room": self.room,
        }
        if self.room_sid:
            out["room_sid"] = self.room_sid
        out["session_id"] = self.session_id
        out["participant"] = self.participant.to_dict()
        out["protocol"] = self.protocol
        out["kind"] = self.kind
        out["data"] = self.data
        out["source"] = self.source
        return out

    def to_json(self) -> str:
        return _ENCODER.encode(self.to_dict())


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """Something that could not become an event or could not be written, with the reason.

    Written to the DLQ stream (fields `reason`, `room`, `entry`); `detail` carries what is
    needed to look into it (topic, sender, size, a bounded preview), never a whole payload.
    """

    room: str
    reason: str
    received_at: float
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": CONTRACT_VERSION,
            "ts": format_ts(self.received_at),
            "room": self.room,
            "reason": self.reason,
            "detail": self.detail,
        }

    def to_json(self) -> str:
        return _ENCODER.encode(self.to_dict())
