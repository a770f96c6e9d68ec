"""Scale-out metrics. Label values are the Literals below (a zero sample from the start)."""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import Counter, Gauge, Histogram

LeaseLossReason = Literal["renew_failed", "taken", "unwanted", "room_ended", "rebalanced"]
WebhookRejectReason = Literal["signature", "too_large", "bad_body"]
WebhookResult = Literal["applied", "replayed", "filtered", "ignored"]
ControlResult = Literal["applied", "dead_lettered"]
# A planned move: the taker joined before the giver left (`overlapped`), or no taker
# joined in time and the giver left first (`unanswered`: a gap, reported at the join).
HandoverResult = Literal["overlapped", "unanswered"]
LEASE_LOSS_REASONS: tuple[LeaseLossReason, ...] = get_args(LeaseLossReason)

DEPLOYMENT_ROOMS_WANTED = Gauge(
    "relay_deployment_rooms_wanted", "Rooms in the shared wanted set (every replica)."
)
LEASES_HELD = Gauge("relay_leases_held", "Room leases this process holds.")
LEASE_ACQUIRED = Counter(
    "relay_lease_acquired_total",
    "Room leases won, by whether another owner had it before.",
    ["kind"],
)
LEASE_LOSSES = Counter("relay_lease_losses_total", "Room leases given up, by reason.", ["reason"])
ROOMS_FILTERED = Counter(
    "relay_rooms_filtered_total", "Rooms a source named that the room filter refused."
)
WEBHOOKS_RECEIVED = Counter(
    "relay_webhooks_received_total", "Verified LiveKit webhooks, by what was done.", ["result"]
)
WEBHOOKS_REJECTED = Counter(
    "relay_webhooks_rejected_total", "Webhooks refused, by reason.", ["reason"]
)
RECONCILE_RUNS = Counter("relay_reconcile_runs_total", "ListRooms reconciliations run.")
RECONCILE_ERRORS = Counter("relay_reconcile_errors_total", "ListRooms reconciliations failed.")
RECONCILE_DURATION = Histogram(
    "relay_reconcile_duration_seconds",
    "One ListRooms reconciliation.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COVERAGE = Gauge(
    "relay_rooms_coverage_ratio",
    "Wanted rooms with a live lease / wanted rooms, across the deployment (set by the "
    "reconcile leader; 1 on the other replicas and when nothing is wanted: alert on min()).",
)
HANDOVERS = Counter(
    "relay_handovers_total", "Rooms this process handed over (a rebalance), by outcome.", ["result"]
)
SHADOW_TRIMMED = Counter(
    "relay_shadow_trimmed_total",
    "Entries a taker dropped from a room it observed before winning its lease (the oldest, "
    "over discovery.shadow_max_entries; the giver was still in the room then).",
)
CONTROL_ENTRIES = Counter(
    "relay_control_entries_total", "Control stream entries, by outcome.", ["result"]
)

for _kind in ("first", "takeover", "handover"):
    LEASE_ACQUIRED.labels(kind=_kind)
for _reason in LEASE_LOSS_REASONS:
    LEASE_LOSSES.labels(reason=_reason)
for _result in get_args(WebhookResult):
    WEBHOOKS_RECEIVED.labels(result=_result)
for _reject in get_args(WebhookRejectReason):
    WEBHOOKS_REJECTED.labels(reason=_reject)
for _handover in get_args(HandoverResult):
    HANDOVERS.labels(result=_handover)
for _control in get_args(ControlResult):
    CONTROL_ENTRIES.labels(result=_control)
COVERAGE.set(1)


def lease_lost(reason: LeaseLossReason) -> None:
    LEASE_LOSSES.labels(reason=reason).inc()


def webhook_rejected(reason: WebhookRejectReason) -> None:
    WEBHOOKS_REJECTED.labels(reason=reason).inc()


def webhook_received(result: WebhookResult) -> None:
    WEBHOOKS_RECEIVED.labels(result=result).inc()


def control_entry(result: ControlResult) -> None:
    CONTROL_ENTRIES.labels(result=result).inc()
