"""The supervisor's pure parts: metrics aggregation and the workers' command line."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from relay.cli import _without_workers
from relay.supervisor import aggregate

A = """# HELP relay_leases_held Room leases this process holds.
# TYPE relay_leases_held gauge
relay_leases_held 3.0
# HELP relay_rooms_coverage_ratio coverage
# TYPE relay_rooms_coverage_ratio gauge
relay_rooms_coverage_ratio 1.0
# HELP relay_events_dropped_total drops
# TYPE relay_events_dropped_total counter
relay_events_dropped_total{reason="lease_lost"} 2.0
# HELP relay_build info
# TYPE relay_build info
relay_build_info{version="1.0"} 1.0
"""
B = (
    A.replace("held 3.0", "held 4.0")
    .replace("ratio 1.0", "ratio 0.5")
    .replace('"lease_lost"} 2.0', '"lease_lost"} 5.0')
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_sums_gauges_and_counters_takes_the_minimum_coverage_and_one_build_info() -> None:
    text = aggregate([A, B])
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types["relay_events_dropped"] == "counter"
    assert types["relay_leases_held"] == "gauge"
    got = samples(text)
    assert got[("relay_leases_held", ())] == 7
    assert got[("relay_events_dropped_total", (("reason", "lease_lost"),))] == 7
    assert got[("relay_rooms_coverage_ratio", ())] == 0.5
    assert got[("relay_build_info", (("version", "1.0"),))] == 1


def test_the_workers_run_the_same_command_without_workers() -> None:
    words = ["--config", "x.toml", "run", "--workers", "3", "--room", "a", "--workers=2"]
    assert _without_workers(words) == ["--config", "x.toml", "run", "--room", "a"]


def test_a_dead_workers_counters_stay_in_the_totals() -> None:
    retired = aggregate([A], counters_only=True)
    assert "relay_leases_held" not in retired
    got = samples(aggregate([B, retired], retired_last=True))
    assert got[("relay_events_dropped_total", (("reason", "lease_lost"),))] == 7
    assert got[("relay_leases_held", ())] == 4  # gauges: the live workers only
