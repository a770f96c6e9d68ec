"""What many tests read: metric samples (before/after deltas of the process's registry)."""

from __future__ import annotations

from prometheus_client import REGISTRY


def metric(name: str, **labels: str) -> float:
    """A sample's current value (0 when it was never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def dropped(reason: str) -> float:
    """`relay_events_dropped_total{reason}` now."""
    return metric("relay_events_dropped_total", reason=reason)
