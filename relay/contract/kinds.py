"""The contract's closed vocabularies, in one place: protocols, roles, kinds and reasons.

Metrics take their label values from here too, so a new kind or drop reason is added
once and shows up everywhere (with a zero sample from the start: alerts see it).
"""

from __future__ import annotations

from typing import Literal, get_args

Protocol = Literal["liveavatar", "livekit-agents", "livelayer", "livekit", "raw", "relay"]
# How an event reached relay: an observer in the room, or a browser posting to /v1/ingest.
Ingress = Literal["observer", "ingest"]
ParticipantRole = Literal["user", "agent", "avatar", "observer", "unknown"]

EventKind = Literal[
    "speech.started",
    "speech.ended",
    "transcript.partial",
    "transcript.final",
    "agent.state",
    "speakers.active",
    "participant.joined",
    "participant.left",
    "session.started",
    "session.stopped",
    "command",
    "chat.message",
    "observer.joined",
    "observer.reconnecting",
    "observer.resumed",
    "observer.left",
    "observer.limited",
    "event",
    "raw",
]

# Why a raw item or an event did not reach the sinks (`relay_events_dropped_total{reason}`).
DropReason = Literal[
    "room_queue_full",  # the room's inbox was full: a flooding room drops its own items
    "oversized",  # a payload above pipeline.max_payload_bytes (dead-lettered, bounded preview)
    "text_stream_error",  # the SDK aborted a text stream (dead-lettered)
    "text_stream_unfinished",  # the room was left while a text stream was still open
    "connect_failed",  # items the SDK dispatched during a connect() that then failed
    "shutdown",  # submitted after the drain began
    "shutdown_timeout",  # accepted but not written when the shutdown grace ran out
    "forced_exit",  # still buffered when a second signal forced the exit
    "dead_letter_rejected",  # a dead letter that a sink refused for good
    "lease_lost",  # the room's lease could not be renewed in time: its writes stop
    # Over a rate limit or byte cap (limits.*), refused by the SDK handlers before decoding:
    "room_rate",  # the room's events per second
    "participant_rate",  # one participant's (identity's) events per second
    "room_bytes",  # the room's payload bytes per second
    "participant_bytes",  # one participant's payload bytes per second
    # The on-disk journal (journal.*) could not take the event, which is then not accepted:
    "journal_shed",  # the journal above journal.shed_at: a kind of journal.shed_kinds
    "journal_full",  # the journal at its capacity (journal.max_bytes or the disk's free space)
    "journal_write_failed",  # the append failed (ENOSPC, EIO): the event is not accepted
]

LimitReason = Literal["room_rate", "participant_rate", "room_bytes", "participant_bytes"]
# What the observer refuses: counted as a drop and written to the dead-letter stream.
RefusedReason = Literal["oversized", "text_stream_error"]
# Why an entry went to the dead-letter stream (`relay_dead_letters_total{reason}`).
DeadLetterReason = Literal[RefusedReason, "write_rejected", "control_invalid"]

PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)
LIMIT_REASONS: tuple[LimitReason, ...] = get_args(LimitReason)
DEAD_LETTER_REASONS: tuple[DeadLetterReason, ...] = get_args(DeadLetterReason)
