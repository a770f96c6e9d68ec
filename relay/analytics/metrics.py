"""The analytics metrics: the conversation ones (collectors in relay.metrics), observed
once per summary written, and the group's lag gauges (here). Label values come from
relay.analytics.model's Literals, never a room or an identity."""

from __future__ import annotations

from typing import Literal

from prometheus_client import Counter, Gauge

from relay.analytics.assemble import Doc
from relay.analytics.lag import GroupLag
from relay.analytics.model import END_REASONS, INTERRUPTION_KINDS, RESPONSE_ROLES, SPEAKER_ROLES
from relay.metrics import INTERRUPTIONS, SESSIONS, SPEAKING_SECONDS, TURN_RESPONSE

PAIRS = tuple(f"user->{role}" for role in RESPONSE_ROLES)
_TURNS = {pair: TURN_RESPONSE.labels(pair=pair) for pair in PAIRS}
_INTERRUPTIONS = {kind: INTERRUPTIONS.labels(kind=kind) for kind in INTERRUPTION_KINDS}
_SPEAKING = {role: SPEAKING_SECONDS.labels(role=role) for role in SPEAKER_ROLES}
_SESSIONS = {reason: SESSIONS.labels(end_reason=reason) for reason in END_REASONS}


def observe_summary(summary: Doc) -> None:
    for turn in summary["turns"]:
        pair = f"user->{turn['response_role']}"
        if turn["latency_ms"] is not None and pair in _TURNS:
            _TURNS[pair].observe(max(0.0, turn["latency_ms"] / 1000))
    for item in summary["interruptions"]["items"]:
        if item["kind"] in _INTERRUPTIONS:
            _INTERRUPTIONS[item["kind"]].inc()
    for role, ms in summary["speaking_ms"].items():
        if role in _SPEAKING:
            _SPEAKING[role].inc(ms / 1000)
    if summary["end_reason"] in _SESSIONS:
        _SESSIONS[summary["end_reason"]].inc()


# How far the group is behind the events stream (relay.analytics.lag), set by the service's
# loop. Only on `relay analytics`' page (a relay pod has no group position to report);
# every analytics process of the group reports the same figures: max(), not sum().
STREAM_LAG = Gauge(
    "relay_analytics_stream_lag_entries",
    "Events stream entries not yet delivered to the analytics group (NaN: Redis cannot count).",
)
PENDING = Gauge(
    "relay_analytics_pending_entries",
    "Entries delivered to the analytics group and not yet acknowledged.",
)
BEHIND = Gauge(
    "relay_analytics_behind_seconds",
    "Age of the oldest event this analytics process has still to handle: not yet delivered "
    "to the group, or in a room it owns and not yet applied (0: none).",
)
ROOMS_OWNED = Gauge(
    "relay_analytics_rooms_owned",
    "Rooms whose assembly this analytics process holds the lease of.",
)


def set_lag(figures: GroupLag | None, own_behind_s: float | None = 0.0) -> None:
    """The last figures read; None (no group, or Redis did not answer): NaN, no stale value.
    `own_behind_s`: the oldest entry not yet applied in the rooms owned here (None: unread)."""
    nan = float("nan")
    lag = None if figures is None else figures.lag
    STREAM_LAG.set(nan if lag is None else lag)
    PENDING.set(nan if figures is None else figures.pending)
    if figures is None or own_behind_s is None:
        BEHIND.set(nan)
    else:
        BEHIND.set(max(figures.behind_s, own_behind_s))


set_lag(None)  # unknown until the service reads them


# Session traces sent over OTLP (analytics.otel, relay.analytics.otel): one per session,
# counted with the export of the batch that holds its root span. Only `relay analytics`.
TraceResult = Literal["ok", "failed"]
TRACES_EXPORTED = Counter(
    "relay_analytics_traces_exported",
    "Session traces sent over OTLP (analytics.otel), by result.",
    ["result"],
)
_TRACES = {result: TRACES_EXPORTED.labels(result=result) for result in ("ok", "failed")}


def traces_exported(result: TraceResult, count: int = 1) -> None:
    _TRACES[result].inc(count)
