"""The supervisor's pure parts: the workers' pages labelled, its own series, and the
workers' command line."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relay import __version__, metrics  # noqa: F401 (the collectors a worker's page shows)
from relay.cli import _without_workers
from relay.config import DiscoverySettings, Settings
from relay.supervisor import Page, Supervisor, label_workers

A = """# HELP relay_leases_held Room leases this process holds.
# TYPE relay_leases_held gauge
relay_leases_held 3.0
# HELP relay_rooms_coverage_ratio coverage
# TYPE relay_rooms_coverage_ratio gauge
relay_rooms_coverage_ratio 1.0
# HELP relay_events_dropped_total drops
# TYPE relay_events_dropped_total counter
relay_events_dropped_total{reason="lease_lost"} 2.0
# HELP relay_event_loop_lag_seconds lag
# TYPE relay_event_loop_lag_seconds histogram
relay_event_loop_lag_seconds_bucket{le="0.01"} 4.0
relay_event_loop_lag_seconds_bucket{le="+Inf"} 5.0
relay_event_loop_lag_seconds_count 5.0
relay_event_loop_lag_seconds_sum 0.5
# HELP relay_build_info Build information.
# TYPE relay_build_info gauge
relay_build_info{version="1.0"} 1.0
"""
B = (
    A.replace("held 3.0", "held 4.0")
    .replace("ratio 1.0", "ratio 0.5")
    .replace('"lease_lost"} 2.0', '"lease_lost"} 5.0')
)
Key = tuple[str, tuple[tuple[str, str], ...]]


def samples(text: str) -> dict[Key, float]:
    got: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in got, f"{key} twice on the page"
            got[key] = s.value
    return got


def page(pages: dict[int, str]) -> str:
    parsed = {n: text_string_to_metric_families(text) for n, text in pages.items()}
    return generate_latest(Page(label_workers(parsed))).decode()


def test_each_workers_samples_keep_their_own_values_under_its_worker_label() -> None:
    text = page({0: A, 1: B})
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types["relay_events_dropped"] == "counter"
    assert types["relay_event_loop_lag_seconds"] == "histogram"
    assert types["relay_leases_held"] == "gauge"
    assert samples(text) == {
        ("relay_leases_held", (("worker", "0"),)): 3,
        ("relay_leases_held", (("worker", "1"),)): 4,
        ("relay_rooms_coverage_ratio", (("worker", "0"),)): 1,
        ("relay_rooms_coverage_ratio", (("worker", "1"),)): 0.5,
        ("relay_events_dropped_total", (("reason", "lease_lost"), ("worker", "0"))): 2,
        ("relay_events_dropped_total", (("reason", "lease_lost"), ("worker", "1"))): 5,
        **{
            (f"relay_event_loop_lag_seconds{suffix}", (*le, ("worker", w))): value
            for w in ("0", "1")
            for suffix, le, value in (
                ("_bucket", (("le", "0.01"),), 4),
                ("_bucket", (("le", "+Inf"),), 5),
                ("_count", (), 5),
                ("_sum", (), 0.5),
            )
        },
        ("relay_build_info", (("version", "1.0"), ("worker", "0"))): 1,
        ("relay_build_info", (("version", "1.0"), ("worker", "1"))): 1,
    }
    # One # TYPE per family, its samples together (what the text format requires).
    assert text.count("# TYPE relay_leases_held gauge") == 1
    assert contiguous(text)


def contiguous(text: str) -> bool:
    """Every family's lines (# HELP, # TYPE, samples) form one block."""
    seen: list[str] = []
    for line in text.splitlines():
        name = line.split()[2] if line.startswith("#") else line.split("{")[0].split()[0]
        family = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        if not seen or seen[-1] != family:
            if family in seen:
                return False
            seen.append(family)
    return True


def test_a_real_workers_page_round_trips_with_its_label() -> None:
    """What a worker serves (its collectors, process metrics included), labelled."""
    own = generate_latest().decode()
    labelled = samples(page({1: own}))
    plain = samples(own)
    relabelled = {
        (name, tuple(sorted((*labels, ("worker", "1"))))): value
        for (name, labels), value in plain.items()
    }
    assert set(labelled) == set(relabelled)
    for key, value in relabelled.items():  # process and gc figures ran on in between
        if key[0].startswith("relay_"):
            assert labelled[key] == value, key
    assert ("process_cpu_seconds_total", (("worker", "1"),)) in labelled
    assert ("relay_build_info", (("version", __version__), ("worker", "1"))) in labelled


def test_a_worker_missing_from_a_scrape_is_missing_from_the_page() -> None:
    got = samples(page({1: B}))
    assert ("relay_leases_held", (("worker", "1"),)) in got
    assert not [key for key in got if ("worker", "0") in key[1]]


def test_the_supervisors_own_series_count_workers_up_and_restarts() -> None:
    settings = Settings(workers=2, discovery=DiscoverySettings(enabled=True))
    supervisor = Supervisor(settings, ["run"])
    first, second = supervisor._children
    first.up, second.up, second.restarts = True, False, 3
    got = samples(generate_latest(Page(supervisor.own_families())).decode())
    assert got == {
        ("relay_workers", ()): 2,
        ("relay_worker_up", (("worker", "0"),)): 1,
        ("relay_worker_up", (("worker", "1"),)): 0,
        ("relay_worker_restarts_total", (("worker", "0"),)): 0,
        ("relay_worker_restarts_total", (("worker", "1"),)): 3,
    }


def test_the_workers_run_the_same_command_without_workers() -> None:
    words = ["--config", "x.toml", "run", "--workers", "3", "--room", "a", "--workers=2"]
    assert _without_workers(words) == ["--config", "x.toml", "run", "--room", "a"]


async def test_a_workers_unreadable_page_leaves_that_worker_out_not_the_scrape() -> None:
    settings = Settings(workers=2, discovery=DiscoverySettings(enabled=True))
    supervisor = Supervisor(settings, ["run"])
    answers = {0: (200, A), 1: (200, "relay_leases_held{worker= 3\n")}

    async def get(child: Any, path: str) -> tuple[int, str]:
        return answers[child.index]

    supervisor._get = get  # type: ignore[method-assign]
    response = await supervisor._metrics(None)  # type: ignore[arg-type]
    assert response.text is not None
    got = samples(response.text)
    assert got[("relay_worker_up", (("worker", "0"),))] == 1
    assert got[("relay_worker_up", (("worker", "1"),))] == 0
    assert ("relay_leases_held", (("worker", "0"),)) in got
    own = {"relay_worker_up", "relay_worker_restarts_total"}  # the supervisor's own series
    assert not [key for key in got if ("worker", "1") in key[1] and key[0] not in own]
