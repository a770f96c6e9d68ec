"""The ingest endpoint's metrics (no room or session label: rooms are unbounded)."""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import Counter

# Why a request or an item was refused (`relay_ingest_rejected_total{reason}`): a request
# refused as a whole counts once, an item refused on its own counts once per item.
RejectReason = Literal[
    "missing_token",  # 401: no token in the Authorization header or the body
    "invalid_token",  # 401: forged, malformed, another audience
    "expired_token",  # 401
    "wrong_room",  # 403: the batch names another room than the token
    "wrong_session",  # 403: the batch names another session than the token
    "wrong_origin",  # 403: the token is bound to another origin
    "origin_refused",  # 403: an Origin not in ingest.allowed_origins (also preflights)
    "too_large",  # 413: body above ingest.max_body_bytes
    "too_many_items",  # 413: more items than ingest.max_items
    "malformed",  # 400: not JSON, or a field of the wrong type
    "rate_limited",  # 429: the token's item budget is spent
    "unknown_type",  # an item of a type this relay does not know (the rest is taken)
    "oversized",  # an item whose payload is above pipeline.max_payload_bytes
]
REJECT_REASONS: tuple[RejectReason, ...] = get_args(RejectReason)
ItemStatus = Literal["accepted", "duplicate"]

INGEST_REJECTED = Counter(
    "relay_ingest_rejected_total", "Ingest requests or items refused.", ["reason"]
)
INGEST_ITEMS = Counter(
    "relay_ingest_items_total", "Ingest items taken (accepted) or answered duplicate.", ["status"]
)
INGEST_CLIENT_DROPPED = Counter(
    "relay_ingest_client_dropped_total",
    "Items the browser forwarders dropped from their full queues (as they reported).",
)

_REJECTED = {reason: INGEST_REJECTED.labels(reason=reason) for reason in REJECT_REASONS}
_ITEMS = {status: INGEST_ITEMS.labels(status=status) for status in get_args(ItemStatus)}


def rejected(reason: RejectReason, count: int = 1) -> None:
    _REJECTED[reason].inc(count)


def taken(status: ItemStatus, count: int = 1) -> None:
    if count:
        _ITEMS[status].inc(count)
