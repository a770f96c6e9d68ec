"""Helpers of the scale-out end-to-end tests: relays with discovery on short TTLs, the
leases and workers as Redis shows them, kill -9."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import signal
import time
from collections import Counter
from typing import Any

from relay.dev.takeover import TTL_S as TTL_S  # re-exported: the tests read it here
from relay.dev.takeover import discovery_env
from tests.e2e.support import Deadline, RelayProcess, Streams, command_pid

ADMIN = "scaleout-admin-token-0123456789"
CONNECT_S = 3.0  # what joining a room may take here, on a loaded machine
scaleout_env = discovery_env  # the env of a relay with discovery on short leases


async def live_workers(streams: Streams) -> int:
    return int(await streams.redis.zcard(f"{streams.prefix}:workers"))


async def wait_workers(streams: Streams, count: int, timeout_s: float = 20.0) -> None:
    deadline = Deadline(timeout_s)
    while await live_workers(streams) != count:
        assert not deadline.passed, f"{await live_workers(streams)} workers, not {count}"
        await asyncio.sleep(0.05)


async def wait_balanced(
    streams: Streams, rooms: list[str], workers: int, timeout_s: float = 20.0
) -> dict[str, str | None]:
    """Wait until every room has an owner, none holds more than ceil(rooms / workers), and
    the owners stayed so for two ticks (no hand-back in progress); the owners."""
    share = math.ceil(len(rooms) / workers)
    deadline = Deadline(timeout_s)
    settled: tuple[float, dict[str, str | None]] | None = None
    while True:
        held = await owners(streams, rooms)
        if None not in held.values() and max(Counter(held.values()).values()) <= share:
            if settled is None or settled[1] != held:
                settled = (time.monotonic(), held)
            elif time.monotonic() - settled[0] >= 2 * TTL_S / 3:
                return held
        else:
            settled = None
        assert not deadline.passed, f"not balanced: {Counter(held.values())}"
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


async def wait_log(
    relay: RelayProcess, event: str, count: int = 1, timeout_s: float = 15.0
) -> None:
    deadline = Deadline(timeout_s)
    while len(relay.log_events(event)) < count:
        assert not deadline.passed, f"no {count} {event!r}: {relay.text[-20:]}"
        await asyncio.sleep(0.05)
