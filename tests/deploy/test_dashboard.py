"""The Grafana dashboard: well formed, its queries read only metrics relay exports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.deploy.manifests import DEPLOY, Obj, find
from tests.deploy.promql import grafana_query_names, summed_deployment_wide

DASHBOARD = DEPLOY / "monitoring" / "relay-dashboard.json"
GRID_WIDTH = 24


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


ANALYTICS_ROW = "Sessions (relay analytics)"  # its panels read `relay analytics`' /metrics


def _panels(dashboard: dict[str, Any], analytics: bool) -> list[dict[str, Any]]:
    """The relay's panels, or those of the analytics row (the last row) on."""
    panels: list[dict[str, Any]] = dashboard["panels"]
    titles = [p["title"] for p in panels]
    start = titles.index(ANALYTICS_ROW)
    return panels[start:] if analytics else panels[:start]


def _queries(dashboard: dict[str, Any], analytics: bool = False) -> list[str]:
    panels = _panels(dashboard, analytics)
    queries = [t["expr"] for p in panels for t in p.get("targets", [])]
    if analytics:
        return queries
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def test_the_panels_are_laid_out_and_query_prometheus(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= GRID_WIDTH, panel
        if panel["type"] in {"row", "text"}:
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert target["expr"].strip(), panel["title"]


def test_the_queries_use_only_defined_variables(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]} | {"__rate_interval"}
    queries = _queries(dashboard) + _queries(dashboard, analytics=True)
    used = set(re.findall(r"\$\{?(\w+)", " ".join(queries)))
    assert used - defined == set()


def test_the_queries_read_only_metrics_relay_exports(
    dashboard: dict[str, Any], exported: set[str]
) -> None:
    read = set().union(*(grafana_query_names(q) for q in _queries(dashboard)))
    assert read - exported == set()
    # What an operator watches (deploy/README.md): traffic, latency, rooms, drops, Redis,
    # buffer, per-pod load.
    wanted = {
        "relay_events_received_total",
        "relay_event_latency_seconds_bucket",
        "relay_rooms_wanted",
        "relay_rooms_observed",
        "relay_events_dropped_total",
        "relay_sink_write_duration_seconds_bucket",
        "relay_buffer_events",
        "relay_buffer_capacity_events",
        "process_cpu_seconds_total",
        # scale-out, load and ingest
        "relay_deployment_rooms_wanted",
        "relay_rooms_coverage_ratio",
        "relay_leases_held",
        "relay_lease_acquired_total",
        "relay_lease_losses_total",
        "relay_webhooks_received_total",
        "relay_webhooks_rejected_total",
        "relay_event_loop_lag_seconds_bucket",
        "relay_ingest_items_total",
        "relay_ingest_rejected_total",
        # per worker (--workers N: the supervisor's series)
        "process_resident_memory_bytes",
        "relay_workers",
        "relay_worker_up",
        "relay_worker_restarts_total",
    }
    assert wanted <= read, f"not on the dashboard: {wanted - read}"


PER_WORKER_ROW = "Load per worker"


def test_the_per_worker_row_shows_each_worker_and_no_panel_sums_a_deployment_wide_gauge(
    dashboard: dict[str, Any],
) -> None:
    panels = _panels(dashboard, analytics=False)
    titles = [p["title"] for p in panels]
    [start] = [n for n, title in enumerate(titles) if title.startswith(PER_WORKER_ROW)]
    end = next(n for n in range(start + 1, len(panels)) if panels[n]["type"] == "row")
    row = panels[start + 1 : end]
    by_worker = {
        p["title"] for p in row if any("{{worker}}" in t["legendFormat"] for t in p["targets"])
    }
    assert by_worker >= {
        "Events/s by worker",
        "CPU by worker",
        "Event-loop lag p99 by worker",
        "Rooms and leases by worker",
    }
    for panel in row:
        for target in panel["targets"]:
            if "{{worker}}" in target["legendFormat"]:
                assert re.search(r"by \((?:[^()]*, )?worker[,)]", target["expr"]), target["expr"]
    for query in _queries(dashboard):
        assert summed_deployment_wide(query) == set(), query


def test_the_analytics_panels_read_what_relay_analytics_exports(
    dashboard: dict[str, Any], analytics_exported: set[str]
) -> None:
    # Compared with `relay analytics`' own scrape: Prometheus gets them from that process.
    read = set().union(*(grafana_query_names(q) for q in _queries(dashboard, analytics=True)))
    assert read - analytics_exported == set()
    wanted = {
        "relay_sessions_total",
        "relay_turn_response_seconds_bucket",
        "relay_interruptions_total",
        "relay_speaking_seconds_total",
        "relay_analytics_behind_seconds",
        "relay_analytics_stream_lag_entries",
        "relay_analytics_pending_entries",
    }
    assert wanted <= read, f"not on the dashboard: {wanted - read}"


def test_production_ships_the_dashboard_file(
    renders: dict[str, list[Obj]], dashboard: dict[str, Any]
) -> None:
    config_map = find(renders["production"], "ConfigMap", "relay-grafana-dashboard")
    assert json.loads(config_map["data"][DASHBOARD.name]) == dashboard
