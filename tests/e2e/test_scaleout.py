"""Scale-out against the dev server and a real Redis: rooms spread over relays by leases,
failover on kill -9 and SIGTERM, fencing while Redis is away, the control stream and the
webhook endpoint. Short TTLs keep it fast (lease TTL 2 s: a tick every 0.67 s)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections import Counter
from typing import Any

import pytest

from tests.e2e.support import (
    Deadline,
    RelayProcess,
    StartRelay,
    Streams,
    command_pid,
    unique,
)

pytestmark = pytest.mark.e2e

TTL_S = 2.0
CONNECT_S = 3.0  # what joining a room may take here, on a loaded machine


def scaleout_env(tag: str, **extra: str) -> dict[str, str]:
    return {
        "RELAY_DISCOVERY__ENABLED": "true",
        "RELAY_DISCOVERY__LEASE_TTL_S": str(TTL_S),
        "RELAY_DISCOVERY__LEASE_MARGIN_S": "0.5",
        "RELAY_DISCOVERY__PICKUP_JITTER_S": "0.2",
        "RELAY_DISCOVERY__INCLUDE": json.dumps([f"{tag}-*"]),
        "RELAY_REDIS__SOCKET_TIMEOUT_S": "1",
        **extra,
    }


async def live_workers(streams: Streams) -> int:
    return int(await streams.redis.zcard(f"{streams.prefix}:workers"))


async def wait_workers(streams: Streams, count: int, timeout_s: float = 20.0) -> None:
    deadline = Deadline(timeout_s)
    while await live_workers(streams) != count:
        assert not deadline.passed, f"{await live_workers(streams)} workers, not {count}"
        await asyncio.sleep(0.05)


async def join(streams: Streams, rooms: list[str]) -> None:
    for room in rooms:
        await streams.redis.xadd(f"{streams.prefix}:control", {"op": "join", "room": room})


async def owners(streams: Streams, rooms: list[str]) -> dict[str, str | None]:
    values = await streams.redis.mget([f"{streams.prefix}:lease:{{{r}}}" for r in rooms])
    return {r: v.decode() if v else None for r, v in zip(rooms, values, strict=True)}


def worker_id(relay: RelayProcess) -> str:
    return str(relay.log_events("scaleout_started")[0]["worker_id"])


async def wait_joined(
    streams: Streams, rooms: list[str], epoch: int | None = None, timeout_s: float = 20.0
) -> float:
    """Wait until every room has an observer.joined (of `epoch`); the time it took."""
    started = time.monotonic()

    def joined(events: list[dict[str, Any]]) -> bool:
        return any(
            e["kind"] == "observer.joined" and (epoch is None or e.get("epoch") == epoch)
            for e in events
        )

    for room in rooms:
        left = max(0.1, timeout_s - (time.monotonic() - started))
        await streams.wait_room(room, joined, timeout_s=left, what=f"joined epoch {epoch}")
    return time.monotonic() - started


async def assert_one_writer_at_a_time(streams: Streams, rooms: list[str]) -> None:
    """In each room's stream: epochs never go back, seqs always go up."""
    for room in rooms:
        events = await streams.room_events(room)
        epochs = [e["epoch"] for e in events]
        seqs = [e["seq"] for e in events]
        assert epochs == sorted(epochs), (room, epochs)
        assert all(a < b for a, b in itertools.pairwise(seqs)), (room, seqs)


def kill9(relay: RelayProcess) -> None:
    pid = command_pid(relay.proc)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


async def test_rooms_spread_over_three_relays_and_move_on_kill_and_sigterm(
    streams: Streams, start_relay: StartRelay
) -> None:
    tag = unique("spread")
    rooms = [f"{tag}-{n:02d}" for n in range(30)]
    relays = [start_relay(**scaleout_env(tag)) for _ in range(3)]
    for relay in relays:
        await relay.wait_listening()
    await wait_workers(streams, 3)
    await join(streams, rooms)
    await wait_joined(streams, rooms, epoch=1)
    held = await owners(streams, rooms)
    ids = {worker_id(r): r for r in relays}
    assert set(held.values()) == set(ids)
    assert sorted(Counter(held.values()).values()) == [10, 10, 10]  # ceil(30 / 3) each

    # kill -9: its rooms are taken again within the TTL + a connect, announced.
    victim = relays[0]
    lost = [r for r, owner in held.items() if owner == worker_id(victim)]
    killed_at = time.monotonic()
    kill9(victim)
    await wait_joined(streams, lost, epoch=2, timeout_s=TTL_S + CONNECT_S + 5)
    took_s = time.monotonic() - killed_at
    assert took_s < 2 * TTL_S + CONNECT_S, took_s  # lease + registration expiry, connect
    for room in lost:
        joined = [e for e in await streams.room_events(room) if e["kind"] == "observer.joined"]
        assert joined[-1]["data"]["reason"] == "takeover"
        assert joined[-1]["data"]["gap_ms"] > 0
    held = await owners(streams, rooms)
    assert sorted(Counter(held.values()).values()) == [15, 15]

    # SIGTERM: the leases are handed back at once; the rooms move within 3 s.
    draining, last = relays[1], relays[2]
    moving = [r for r, owner in held.items() if owner == worker_id(draining)]
    epochs = {r: max(e["epoch"] for e in await streams.room_events(r)) for r in moving}
    term_at = time.monotonic()
    stop = asyncio.create_task(draining.stop())
    for room in moving:
        await streams.wait_room(
            room,
            lambda events, room=room: any(  # type: ignore[misc]
                e["kind"] == "observer.joined" and e["epoch"] > epochs[room] for e in events
            ),
            timeout_s=10,
        )
    moved_s = time.monotonic() - term_at
    stopped = await stop
    assert stopped.returncode == 0
    assert moved_s < 3.0, moved_s
    assert stopped.log("relay_stopped")["unwritten"] == 0
    # Nothing it accepted is lost: every event it stamped is in the streams.
    mine = {
        (line["room"], line["epoch"])
        for line in stopped.logs
        if line.get("event") == "lease_acquired"
    }
    written = 0
    for room in rooms:
        written += sum(1 for e in await streams.room_events(room) if (room, e["epoch"]) in mine)
    assert written == stopped.log("relay_stopped")["accepted"]
    assert set((await owners(streams, rooms)).values()) == {worker_id(last)}
    await assert_one_writer_at_a_time(streams, rooms)
