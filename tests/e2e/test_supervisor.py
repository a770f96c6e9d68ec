"""`relay run --workers N`: a worker killed with kill -9 is restarted and its rooms come
back; one /metrics for the pod with each worker's own series (`worker` label, kept by a
restarted worker, whose counters start again from 0); SIGTERM to the supervisor drains
every worker, exit 0."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

import pytest

from tests.e2e.scaleout import (
    ADMIN,
    TTL_S,
    join,
    owners,
    scaleout_env,
    wait_balanced,
    wait_joined,
    wait_log,
)
from tests.e2e.support import RelayProcess, StartRelay, Streams, unique

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
WORKERS = ("0", "1")


def of_worker(samples: Samples, worker: str) -> Samples:
    """The worker's samples, keyed without the worker label."""
    label = ("worker", worker)
    return {(name, labels - {label}): v for (name, labels), v in samples.items() if label in labels}


async def held_by_worker(relay: RelayProcess, streams: Streams, rooms: list[str]) -> Counter[str]:
    """The rooms each worker slot holds, from the leases in Redis."""
    slot = {line["pid"]: str(line["worker"]) for line in relay.log_events("worker_spawned")}
    ids = {line["worker_id"]: slot[line["pid"]] for line in relay.log_events("scaleout_started")}
    return Counter(ids[owner] for owner in (await owners(streams, rooms)).values() if owner)


def assert_own_figures(metrics: Samples, held: Counter[str]) -> None:
    """Each worker's gauges are its own (what it holds in Redis), not the pod's sum."""
    assert ("relay_leases_held", frozenset()) not in metrics  # no unlabelled sum
    for worker in WORKERS:
        own = of_worker(metrics, worker)
        assert own[("relay_leases_held", frozenset())] == held[worker], worker
        assert own[("relay_rooms_observed", frozenset())] == held[worker], worker
        assert metrics[("relay_worker_up", frozenset({("worker", worker)}))] == 1


async def test_workers_restart_share_one_metrics_and_drain(
    streams: Streams, start_relay: StartRelay
) -> None:
    tag = unique("sup")
    rooms = [f"{tag}-{n}" for n in range(6)]
    relay = start_relay(RELAY_WORKERS="2", RELAY_HTTP__ADMIN_TOKEN=ADMIN, **scaleout_env(tag))
    await relay.wait_listening()
    await wait_log(relay, "scaleout_started", count=2)
    await join(streams, rooms)
    await wait_joined(streams, rooms, epoch=1)
    await wait_balanced(streams, rooms, 2)  # a worker that ticked first hands rooms back
    metrics = await relay.metrics()
    held = await held_by_worker(relay, streams, rooms)
    assert sum(held.values()) == len(rooms)
    assert_own_figures(metrics, held)
    assert metrics[("relay_workers", frozenset())] == 2
    assert (await relay.get("/readyz"))[0] == 200

    spawned = relay.log_events("worker_spawned")
    victim = spawned[0]
    slot = str(victim["worker"])
    ids = {line["pid"]: line["worker_id"] for line in relay.log_events("scaleout_started")}
    # The pod's admin API is passed to either worker: each says which, both list every room.
    holders = await owners(streams, rooms)
    answers = [json.loads((await relay.get("/v1/rooms", token=ADMIN))[1]) for _ in range(2)]
    assert {answer["answered_by"]["worker_id"] for answer in answers} == set(ids.values())
    for answer in answers:
        assert {room["room"]: room["holder"] for room in answer["rooms"]} == holders
    lost = [
        room
        for room, owner in (await owners(streams, rooms)).items()
        if owner == ids[victim["pid"]]
    ]
    assert lost
    os.kill(int(victim["pid"]), signal.SIGKILL)
    await wait_log(relay, "worker_exited")
    await wait_log(relay, "worker_spawned", count=3)
    await wait_log(relay, "scaleout_started", count=3, timeout_s=30)  # the restart is up
    exited = relay.log_events("worker_exited")[0]
    assert (exited["worker"], exited["status"]) == (victim["worker"], -signal.SIGKILL)
    assert relay.log_events("worker_spawned")[2]["worker"] == victim["worker"]  # its slot
    # Its rooms come back (on the survivor or on the restarted worker).
    await wait_joined(streams, lost, epoch=2, timeout_s=4 * TTL_S + 10)
    # The survivor may have taken them all before the restart registered: then it hands
    # the restarted worker its share (rebalancing).
    await wait_balanced(streams, rooms, 2)
    assert None not in (await owners(streams, rooms)).values()
    after = await relay.metrics()
    assert_own_figures(after, await held_by_worker(relay, streams, rooms))
    restarts = {
        w: after[("relay_worker_restarts_total", frozenset({("worker", w)}))] for w in WORKERS
    }
    assert restarts == {w: 1 if w == slot else 0 for w in WORKERS}
    # The restarted slot is a new process under the same label, its counters from 0: what
    # it won minus what it lost is what it holds (the dead process's wins are not there).
    own, before = of_worker(after, slot), of_worker(metrics, slot)
    start: tuple[str, frozenset[tuple[str, str]]] = ("process_start_time_seconds", frozenset())
    assert own[start] > before[start]
    won = sum(v for (name, _), v in own.items() if name == "relay_lease_acquired_total")
    gave_up = sum(v for (name, _), v in own.items() if name == "relay_lease_losses_total")
    assert won - gave_up == own[("relay_leases_held", frozenset())]

    stopped = await relay.stop()
    assert stopped.returncode == 0
    finals = [line for line in stopped.logs if line.get("event") == "relay_stopped"]
    assert len(finals) == 2 and all(line["unwritten"] == 0 for line in finals)
    assert stopped.log("supervisor_stopped")["statuses"] == [0, 0]
