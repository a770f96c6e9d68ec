"""Benchmark: how long a room goes without an owner when one of 3 relays dies or drains.

Inside a private namespace (bench/harness.py): the dev server, a private Redis, three
`relay run` with `discovery.enabled` sharing `--rooms` rooms (joined through the control
stream). Each trial stops the relay holding the most rooms, with `kill -9` or SIGTERM
(alternating), and measures, for each of its rooms, the time from the signal to the
first event written by the new owner (the Redis stream entry id's time, Redis's clock in
ms, minus the wall clock at the signal: one machine, one clock). A fresh relay replaces
the stopped one and gets its share (rebalancing: the time from its start, as its
`scaleout_started` line, until no relay holds more than ceil(rooms / 3) leases is
measured too) before the next trial.

    .venv/bin/python bench/failover.py [--trials 3] [--rooms 12] [--ttl 2]

Needs root (network namespaces) and redis-server. The last line is machine-readable:
    kill_p50_s=X kill_max_s=X term_p50_s=X term_max_s=X rebalance_p50_s=X rebalance_max_s=X
    ttl_s=X
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from harness import Bench, Relay, percentile

POLL_S = 0.02


def discovery_env(ttl_s: float) -> dict[str, str]:
    return {
        "RELAY_DISCOVERY__ENABLED": "true",
        "RELAY_DISCOVERY__LEASE_TTL_S": str(ttl_s),
        "RELAY_DISCOVERY__LEASE_MARGIN_S": str(ttl_s / 4),
        "RELAY_DISCOVERY__PICKUP_JITTER_S": "0.2",
        "RELAY_REDIS__SOCKET_TIMEOUT_S": "1",
        "RELAY_LOG__LEVEL": "info",
    }


def owners(client: redis.Redis, prefix: str, rooms: list[str]) -> dict[str, str | None]:
    values = cast(list[bytes | None], client.mget([f"{prefix}:lease:{{{room}}}" for room in rooms]))
    return {room: v.decode() if v else None for room, v in zip(rooms, values, strict=True)}


def worker_of(bench: Bench, relay: Relay) -> str:
    """The relay's worker id, from its `scaleout_started` log line."""
    log = bench.workdir / f"{relay.proc.name}.log"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if '"scaleout_started"' in line:
                return str(json.loads(line)["worker_id"])
        time.sleep(0.05)
    raise RuntimeError(f"{relay.proc.name}: no scaleout_started line")


def wait_owned(client: redis.Redis, prefix: str, rooms: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while None in owners(client, prefix, rooms).values():
        if time.monotonic() > deadline:
            raise RuntimeError("not every room has an owner")
        time.sleep(0.05)


def wait_balanced(
    client: redis.Redis, prefix: str, rooms: list[str], relays: int, timeout_s: float
) -> None:
    """Every room owned, no relay above ceil(rooms / relays): the fresh relay got its share."""
    share = -(-len(rooms) // relays)
    deadline = time.monotonic() + timeout_s
    while True:
        held = owners(client, prefix, rooms)
        if None not in held.values() and max(Counter(held.values()).values()) <= share:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not balanced: {Counter(held.values())}")
        time.sleep(0.05)


def first_event_after(
    client: redis.Redis, prefix: str, room: str, epoch: int, timeout_s: float
) -> float:
    """The entry-id time (s) of the room's first event with an epoch above `epoch`."""
    deadline = time.monotonic() + timeout_s
    key = f"{prefix}:room:{{{room}}}"
    while time.monotonic() < deadline:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrevrange(key, count=20))
        for entry_id, fields in entries:
            event = json.loads(fields[b"event"])
            if event.get("epoch", 0) > epoch and event["kind"] == "observer.joined":
                return int(entry_id.split(b"-")[0]) / 1000
        time.sleep(POLL_S)
    raise RuntimeError(f"{room}: no new owner in {timeout_s:.0f}s")


def trial(
    bench: Bench,
    relays: list[Relay],
    ids: dict[str, str],
    prefix: str,
    rooms: list[str],
    how: str,
    ttl_s: float,
) -> list[float]:
    client = bench.redis()
    held = owners(client, prefix, rooms)
    counts = Counter(held.values())
    victim = max(relays, key=lambda r: counts.get(ids[r.proc.name], 0))
    lost = [room for room, owner in held.items() if owner == ids[victim.proc.name]]
    epochs = {room: int(cast(bytes, client.get(f"{prefix}:epoch:{{{room}}}"))) for room in lost}
    signalled_at = time.time()
    os.kill(victim.pid, signal.SIGKILL if how == "kill" else signal.SIGTERM)
    times = [
        first_event_after(client, prefix, room, epochs[room], 4 * ttl_s + 20) - signalled_at
        for room in lost
    ]
    with contextlib.suppress(subprocess.TimeoutExpired):  # a second SIGTERM forces an exit
        victim.proc.popen.wait(15)
    victim.proc.stop()
    relays.remove(victim)
    print(
        f"{how}: {len(lost)} rooms, max {max(times):.2f}s, p50 {percentile(sorted(times), 50):.2f}s"
    )
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="trials of each kind")
    parser.add_argument("--rooms", type=int, default=12)
    parser.add_argument("--ttl", type=float, default=2.0, help="lease TTL (s)")
    args = parser.parse_args()
    prefix = f"failover-{uuid.uuid4().hex[:6]}"
    rooms = [f"{prefix}-{n:03d}" for n in range(args.rooms)]
    results: dict[str, list[float]] = {"kill": [], "term": [], "rebalance": []}
    with Bench.open(proc_timeout_s=600) as bench:
        env = discovery_env(args.ttl)
        relays: list[Relay] = []
        ids: dict[str, str] = {}
        serial = iter(range(1000))

        def add_relay() -> None:
            relay = bench.start_relay([], prefix, 30, env, name=f"relay-{next(serial)}")
            ids[relay.proc.name] = worker_of(bench, relay)
            relays.append(relay)

        for _ in range(3):
            add_relay()
        client = bench.redis()
        for room in rooms:
            client.xadd(f"{prefix}:control", {"op": "join", "room": room})
        wait_owned(client, prefix, rooms, 30)
        for n in range(2 * args.trials):
            how = "kill" if n % 2 == 0 else "term"
            time.sleep(args.ttl)  # leases settled
            results[how] += trial(bench, relays, ids, prefix, rooms, how, args.ttl)
            add_relay()
            started = time.monotonic()
            wait_balanced(client, prefix, rooms, len(relays), 30)
            results["rebalance"].append(time.monotonic() - started)
        for relay in relays:
            relay.stop()
    kill, term = sorted(results["kill"]), sorted(results["term"])
    rebalance = sorted(results["rebalance"])
    print(
        f"kill_p50_s={percentile(kill, 50):.2f} kill_max_s={kill[-1]:.2f} "
        f"term_p50_s={percentile(term, 50):.2f} term_max_s={term[-1]:.2f} "
        f"rebalance_p50_s={percentile(rebalance, 50):.2f} rebalance_max_s={rebalance[-1]:.2f} "
        f"ttl_s={args.ttl:g}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
