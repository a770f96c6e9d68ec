"""`relay run --workers N`: a worker killed with kill -9 is restarted and its rooms come
back; one /metrics for the pod; SIGTERM to the supervisor drains every worker, exit 0."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.e2e.support import StartRelay, Streams, unique
from tests.e2e.test_scaleout import (
    ADMIN,
    TTL_S,
    join,
    owners,
    scaleout_env,
    wait_joined,
    wait_log,
)

pytestmark = pytest.mark.e2e


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
    metrics = await relay.metrics()
    assert metrics[("relay_leases_held", frozenset())] == len(rooms)  # summed over workers
    assert metrics[("relay_rooms_observed", frozenset())] == len(rooms)
    assert (await relay.get("/readyz"))[0] == 200

    spawned = relay.log_events("worker_spawned")
    victim = spawned[0]
    ids = {line["pid"]: line["worker_id"] for line in relay.log_events("scaleout_started")}
    # The pod's admin API is passed to either worker: each says which, both list every room.
    held = await owners(streams, rooms)
    answers = [json.loads((await relay.get("/v1/rooms", token=ADMIN))[1]) for _ in range(2)]
    assert {answer["answered_by"]["worker_id"] for answer in answers} == set(ids.values())
    for answer in answers:
        assert {room["room"]: room["holder"] for room in answer["rooms"]} == held
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
    # Its rooms come back (on the survivor or on the restarted worker).
    await wait_joined(streams, lost, epoch=2, timeout_s=4 * TTL_S + 10)
    assert None not in (await owners(streams, rooms)).values()
    metrics = await relay.metrics()
    assert metrics[("relay_leases_held", frozenset())] == len(rooms)

    stopped = await relay.stop()
    assert stopped.returncode == 0
    finals = [line for line in stopped.logs if line.get("event") == "relay_stopped"]
    assert len(finals) == 2 and all(line["unwritten"] == 0 for line in finals)
    assert stopped.log("supervisor_stopped")["statuses"] == [0, 0]
