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
    .venv/bin/python bench/failover.py --loss [--rooms 12] [--rate 100] [--seconds 12]

`--loss` measures what is lost instead (bench/lk_load.py publishes LiveAvatar packets, each
with its event_id, into every room): three relays, the one with most rooms SIGKILLed a
third into the conversation, without and with `discovery.standby`; then one relay whose
rooms a second relay takes by rebalancing mid-conversation. Events sent that no stream
holds are lost; each moved room's `observer.joined` gives the gap it announces. Lines:
    standby=off lost_events=N gap_p50_ms=X gap_max_ms=X sent=N rooms_moved=N
        relay_cpu_us_per_event=X
    standby=on ...
    rebalance_lost_events=N sent=N rooms_moved=N

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
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from harness import Bench, Relay, cpu_s, percentile

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


# -- --loss: what a kill or a rebalance loses of a conversation --------------------------


def room_events(client: redis.Redis, prefix: str, room: str) -> list[dict[str, object]]:
    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]], client.xrange(f"{prefix}:room:{{{room}}}")
    )
    return [json.loads(fields[b"event"]) for _, fields in entries]


def wait_standbys(client: redis.Redis, prefix: str, rooms: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    names = [f"{prefix}:shadow:joined:{{{room}}}" for room in rooms]
    while not all(cast(list[bytes | None], client.mget(names))):
        if time.monotonic() > deadline:
            raise RuntimeError("not every room has a standby")
        time.sleep(0.05)


@contextlib.contextmanager
def conversation(
    bench: Bench, rooms: list[str], tag: str, rate: float, seconds: float
) -> Iterator[dict[str, float]]:
    """LiveAvatar packets (each with its event_id) at `rate`/s over `rooms` for `seconds`,
    in a thread; yields, then fills with {event_id: sent_at} once the run ended."""
    load = bench.load("publish", rooms)
    out = bench.workdir / f"sent-{tag}.json"
    sent: dict[str, float] = {}
    command = {"op": "run", "tag": tag, "rate": rate, "seconds": seconds, "out": str(out)}
    runner = threading.Thread(target=lambda: load.call(seconds + 60, **command))
    runner.start()
    try:
        yield sent
    finally:
        runner.join()
        load.close()
        sent.update(json.loads(out.read_text()))


@dataclass
class Loss:
    sent: int
    lost: int
    moved: int
    gaps_ms: list[float]
    cpu_us_per_event: float  # every relay's CPU (all threads) over the run, per event sent


def count_lost(
    client: redis.Redis, prefix: str, rooms: list[str], sent: dict[str, float], moved: list[str]
) -> tuple[int, list[float]]:
    """Events sent that no stream has (by event_id), and the moved rooms' announced gaps."""
    seen: set[object] = set()
    gaps: list[float] = []
    for room in rooms:
        events = room_events(client, prefix, room)
        seen |= {cast(dict[str, object], e["source"]).get("event_id") for e in events}
        if room in moved:
            joined = [e for e in events if e["kind"] == "observer.joined" and e.get("epoch") == 2]
            data = [cast(dict[str, object], e["data"]) for e in joined]
            gaps += [float(cast(float, d["gap_ms"])) for d in data if "gap_ms" in d] or [0.0]
    return sum(1 for event_id in sent if event_id not in seen), gaps


def own_rooms(prefix: str) -> dict[str, str]:
    """Only this trial's rooms: ListRooms also shows the earlier trials' rooms."""
    return {"RELAY_DISCOVERY__INCLUDE": json.dumps([f"{prefix}-*"])}


def kill_loss(bench: Bench, args: argparse.Namespace, standby: bool) -> Loss:
    """Three relays, a conversation in every room, the relay with most rooms SIGKILLed."""
    prefix = f"kill-{'on' if standby else 'off'}-{uuid.uuid4().hex[:6]}"
    rooms = [f"{prefix}-{n:02d}" for n in range(args.rooms)]
    env = discovery_env(args.ttl) | own_rooms(prefix) | {"RELAY_DISCOVERY__PICKUP_JITTER_S": "0"}
    if standby:
        env |= {
            "RELAY_DISCOVERY__STANDBY": "true",
            "RELAY_DISCOVERY__STANDBY_KEEP_S": str(3 * args.ttl),
        }
    relays = [bench.start_relay([], prefix, 30, env, name=f"{prefix}-{n}") for n in range(3)]
    ids = {relay.proc.name: worker_of(bench, relay) for relay in relays}
    client = bench.redis()
    for room in rooms:
        client.xadd(f"{prefix}:control", {"op": "join", "room": room})
    wait_owned(client, prefix, rooms, 30)
    if standby:
        wait_standbys(client, prefix, rooms, 30)
    time.sleep(args.ttl)  # joined, leases settled
    held = owners(client, prefix, rooms)
    counts = Counter(held.values())
    victim = max(relays, key=lambda r: counts.get(ids[r.proc.name], 0))
    moved = [room for room, owner in held.items() if owner == ids[victim.proc.name]]
    started = {relay.pid: cpu_s(relay.pid) for relay in relays}
    with conversation(bench, rooms, prefix, args.rate, args.seconds) as sent:
        time.sleep(args.seconds / 3)
        victim_cpu = cpu_s(victim.pid) - started[victim.pid]  # until the kill
        os.kill(victim.pid, signal.SIGKILL)
    survivors = [relay for relay in relays if relay is not victim]
    cpu = victim_cpu + sum(cpu_s(r.pid) - started[r.pid] for r in survivors)
    time.sleep(args.ttl + 2)  # the last takeovers written
    lost, gaps = count_lost(client, prefix, rooms, sent, moved)
    victim.proc.stop()
    for relay in survivors:
        relay.stop()
    return Loss(len(sent), lost, len(moved), gaps, cpu / max(1, len(sent)) * 1e6)


def rebalance_loss(bench: Bench, args: argparse.Namespace) -> Loss:
    """One relay with every room in conversation; a second starts and takes half."""
    prefix = f"rebalance-{uuid.uuid4().hex[:6]}"
    rooms = [f"{prefix}-{n:02d}" for n in range(args.rooms)]
    env = discovery_env(args.ttl) | own_rooms(prefix)
    env["RELAY_DISCOVERY__REBALANCE_PER_TICK"] = str(args.rooms)
    first = bench.start_relay([], prefix, 30, env, name=f"{prefix}-0")
    client = bench.redis()
    for room in rooms:
        client.xadd(f"{prefix}:control", {"op": "join", "room": room})
    wait_owned(client, prefix, rooms, 30)
    before = owners(client, prefix, rooms)
    with conversation(bench, rooms, prefix, args.rate, args.seconds) as sent:
        time.sleep(args.seconds / 4)
        second = bench.start_relay([], prefix, 30, env, name=f"{prefix}-1")
        wait_balanced(client, prefix, rooms, 2, 30)
    time.sleep(1.0)
    held = owners(client, prefix, rooms)
    moved = [room for room in rooms if held[room] != before[room]]
    lost, gaps = count_lost(client, prefix, rooms, sent, moved)
    first.stop()
    second.stop()
    return Loss(len(sent), lost, len(moved), gaps, 0.0)


def loss_main(args: argparse.Namespace) -> int:
    with Bench.open(proc_timeout_s=600) as bench:
        kills = {standby: kill_loss(bench, args, standby) for standby in (False, True)}
        rebalance = rebalance_loss(bench, args)
    print(f"{args.rooms} rooms, {args.rate:g} events/s for {args.seconds:g} s, TTL {args.ttl:g} s")
    for standby, loss in kills.items():
        gaps = sorted(loss.gaps_ms)
        print(
            f"standby={'on' if standby else 'off'} lost_events={loss.lost} "
            f"gap_p50_ms={percentile(gaps, 50):.0f} gap_max_ms={gaps[-1]:.0f} "
            f"sent={loss.sent} rooms_moved={loss.moved} "
            f"relay_cpu_us_per_event={loss.cpu_us_per_event:.0f}"
        )
    print(
        f"rebalance_lost_events={rebalance.lost} sent={rebalance.sent} "
        f"rooms_moved={rebalance.moved}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="trials of each kind")
    parser.add_argument("--rooms", type=int, default=12)
    parser.add_argument("--ttl", type=float, default=2.0, help="lease TTL (s)")
    parser.add_argument("--loss", action="store_true", help="events lost, not times")
    parser.add_argument("--rate", type=float, default=100.0, help="--loss: events/s in all")
    parser.add_argument("--seconds", type=float, default=12.0, help="--loss: conversation")
    args = parser.parse_args()
    if args.loss:
        return loss_main(args)
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
