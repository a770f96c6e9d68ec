"""`relay run --workers N`: a worker killed with kill -9 is restarted and its rooms come
back; one /metrics for the pod; SIGTERM to the supervisor drains every worker, exit 0."""

from __future__ import annotations

import os
import signal

import pytest

from tests.e2e.support import StartRelay, Streams, unique
from tests.e2e.test_scaleout import (
    TTL_S,
    join,
    owners,
    scaleout_env,
    wait_balanced,
    wait_joined,
    wait_log,
)

pytestmark = pytest.mark.e2e


async def test_workers_restart_share_one_metrics_and_drain(
    streams: Streams, start_relay: StartRelay
) -> None:
    tag = unique("sup")
    rooms = [f"{tag}-{n}" for n in range(6)]
    relay = start_relay(RELAY_WORKERS="2", **scaleout_env(tag))
    await relay.wait_listening()
    await wait_log(relay, "scaleout_started", count=2)
    await join(streams, rooms)
    await wait_joined(streams, rooms, epoch=1)
    await wait_balanced(streams, rooms, 2)  # a worker that ticked first hands rooms back
    metrics = await relay.metrics()
    assert metrics[("relay_leases_held", frozenset())] == len(rooms)  # summed over workers
    assert metrics[("relay_rooms_observed", frozenset())] == len(rooms)
    assert (await relay.get("/readyz"))[0] == 200

    spawned = relay.log_events("worker_spawned")
    victim = spawned[0]
    ids = {line["pid"]: line["worker_id"] for line in relay.log_events("scaleout_started")}
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
    # The survivor may have taken them all before the restart registered: then it hands
    # the restarted worker its share (rebalancing).
    await wait_balanced(streams, rooms, 2)
    assert None not in (await owners(streams, rooms)).values()
    metrics = await relay.metrics()
    assert metrics[("relay_leases_held", frozenset())] == len(rooms)

    stopped = await relay.stop()
    assert stopped.returncode == 0
    finals = [line for line in stopped.logs if line.get("event") == "relay_stopped"]
    assert len(finals) == 2 and all(line["unwritten"] == 0 for line in finals)
    assert stopped.log("supervisor_stopped")["statuses"] == [0, 0]
