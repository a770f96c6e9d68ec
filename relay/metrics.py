"""Prometheus collectors, module level. Never a room or participant as a label."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from relay import __version__
from relay.contract.kinds import (
    DEAD_LETTER_REASONS,
    DROP_REASONS,
    LIMIT_REASONS,
    DeadLetterReason,
    DropReason,
    LimitReason,
)

EVENTS_RECEIVED = Counter(
    "relay_events_received_total", "Events decoded and accepted.", ["protocol", "kind"]
)
EVENTS_WRITTEN = Counter("relay_events_written_total", "Events acknowledged by a sink.", ["sink"])
EVENTS_DROPPED = Counter(
    "relay_events_dropped_total", "Raw items or events dropped, by reason.", ["reason"]
)
RATE_LIMITED_BYTES = Counter(
    "relay_rate_limited_bytes_total",
    "Payload bytes refused over a rate limit or byte cap (the items: relay_events_dropped_total).",
    ["reason"],
)
DECODE_ERRORS = Counter(
    "relay_decode_errors_total", "Payloads a decoder could not map.", ["protocol"]
)
DEAD_LETTERS = Counter("relay_dead_letters_total", "Entries written to the DLQ.", ["reason"])
EVENT_LATENCY = Histogram(
    "relay_event_latency_seconds",
    "Receive to sink acknowledgement.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SINK_WRITE_DURATION = Histogram(
    "relay_sink_write_duration_seconds",
    "One batch write.",
    ["sink"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
SINK_WRITE_FAILURES = Counter(
    "relay_sink_write_failures_total", "Batch writes that failed (and were retried).", ["sink"]
)
DUPLICATES_SKIPPED = Counter(
    "relay_duplicates_skipped_total",
    "XADDs the write guard skipped: the id was already in the stream (a retried batch, a "
    "second observer, a replay).",
    ["stream"],
)
LOOP_LAG = Histogram(
    "relay_event_loop_lag_seconds",
    "How late the event loop woke a 50 ms timer: what delays every event behind it.",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
BUFFER_EVENTS = Gauge("relay_buffer_events", "Events accepted and not yet acknowledged.")
BUFFER_CAPACITY_EVENTS = Gauge(
    "relay_buffer_capacity_events", "Events the buffer holds at most (pipeline.buffer_max_events)."
)
ROOMS_OBSERVED = Gauge("relay_rooms_observed", "Rooms this process is connected to.")
ROOMS_WANTED = Gauge("relay_rooms_wanted", "Rooms this process should observe.")
ROOM_RECONNECTS = Counter("relay_room_reconnects_total", "Observer reconnects (SDK or relay).")
ROOM_CONNECT_FAILURES = Counter(
    "relay_room_connect_failures_total", "room.connect() attempts that failed (retried)."
)
LEFT_ROOM_COLLECTION = Histogram(
    "relay_left_room_collection_seconds",
    "The full garbage collection after rooms were left: how long it held the event loop.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
ROOM_CONNECT_DURATION = Histogram(
    "relay_room_connect_duration_seconds",
    "Time for room.connect() to return.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
JOURNAL_BYTES = Gauge("relay_journal_bytes", "Bytes of the journal's segments on disk.")
JOURNAL_CAPACITY_BYTES = Gauge(
    "relay_journal_capacity_bytes",
    "Bytes the journal may hold: journal.max_bytes, or less when the disk has less free.",
)
JOURNAL_REPLAYED = Counter(
    "relay_journal_replayed_total", "Entries read back from the journal at start."
)
JOURNAL_TORN = Counter(
    "relay_journal_torn_records_total",
    "Torn records (cut short or failing their checksum) skipped at start.",
)
JOURNAL_SYNC_DURATION = Histogram(
    "relay_journal_sync_duration_seconds",
    "One fdatasync of the journal (covering every append since the last).",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
)
BUILD_INFO = Info("relay_build", "Build information.")
BUILD_INFO.info({"version": __version__})

# Every reason has a sample from the start, so a rate() or an alert sees the first drop.
_DROPPED = {reason: EVENTS_DROPPED.labels(reason=reason) for reason in DROP_REASONS}
_LIMITED_BYTES = {reason: RATE_LIMITED_BYTES.labels(reason=reason) for reason in LIMIT_REASONS}
_DEAD_LETTERED = {reason: DEAD_LETTERS.labels(reason=reason) for reason in DEAD_LETTER_REASONS}


def dropped(reason: DropReason, count: int = 1) -> None:
    """Count `count` raw items or events lost for `reason`."""
    _DROPPED[reason].inc(count)


def rate_limited(reason: LimitReason, size: int) -> None:
    """One item of `size` payload bytes refused over a limit: a drop, and its bytes."""
    _DROPPED[reason].inc()
    _LIMITED_BYTES[reason].inc(size)


def dead_lettered(reason: DeadLetterReason) -> None:
    _DEAD_LETTERED[reason].inc()


# Conversation analytics (relay/analytics): observed once per session summary written.
TURN_RESPONSE = Histogram(
    "relay_turn_response_seconds",
    "The user stops speaking -> the avatar or agent starts (per turn).",
    ["pair"],
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
)
INTERRUPTIONS = Counter(
    "relay_interruptions_total", "Interruptions in finished sessions, by kind.", ["kind"]
)
SPEAKING_SECONDS = Counter(
    "relay_speaking_seconds_total", "Speaking time in finished sessions, by role.", ["role"]
)
SESSIONS = Counter(
    "relay_sessions_total", "Session summaries written, by end reason.", ["end_reason"]
)
