"""`takeover_kill9` of bench/faults.py (root: a network namespace, bench/harness.py).

Three `relay run` with discovery (leases in Redis on a 2 s TTL), each with a journal of
its own, observe `rooms` rooms of the dev server; a LiveAvatar agent in each room
(bench/lk_load.py publish) sends `rate` events/s in all. Each flushes a batch a second
(SLOW_FLUSH), so a buffer holds up to a second of its rooms' events. Once every room is
owned and observed and the agents have published for KILL_AFTER_S, the relay owning the
most rooms (the victim) is SIGKILLed; what its journal holds unacknowledged then is `held`. The
survivors take its rooms when its leases expire (`moved`); then the victim is started
again on its journal and writes what it kept (`replayed`, from its `relay_started`).
Traffic goes on AFTER_S after the kill; all three are stopped with SIGTERM (`unwritten`:
their `relay_stopped`s' sum). The count (accepted, lost, unobserved...) is
relay/dev/takeover.py's `Tally`; gap_ms: the longest takeover gap the rooms announced;
publish_lag_max_ms: how late the agents' last-behind packet left (lk_load's pacing: the
load was what was asked for).
With `standby`, discovery.standby is on: a second relay observes each room, and takes it
with what it kept.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis
from harness import Bench, Relay

from relay.dev.takeover import SLOW_FLUSH, Tally, discovery_env, held_at_kill

KILL_AFTER_S = 10.0  # publishing before the kill
AFTER_S = 20.0  # publishing after it: the takeover (TTL + a join) and a while of normal
READY_S = 60.0


def takeover_kill9(rooms_count: int, rate: float, standby: bool) -> str:
    tag = f"tk9-{uuid.uuid4().hex[:6]}"
    rooms = [f"{tag}-{n}" for n in range(rooms_count)]
    prefix = f"faults-{uuid.uuid4().hex[:6]}"
    env = discovery_env(tag, RELAY_DISCOVERY__PICKUP_JITTER_S="0", RELAY_LOG__LEVEL="info")
    if standby:
        env |= {"RELAY_DISCOVERY__STANDBY": "true", "RELAY_DISCOVERY__STANDBY_KEEP_S": "10"}
    with Bench.open(proc_timeout_s=300) as bench:
        journals = [bench.workdir / f"journal-{n}" for n in range(3)]

        def start(n: int, name: str, extra: dict[str, str]) -> Relay:
            journal = {"RELAY_JOURNAL__PATH": str(journals[n])}
            return bench.start_relay([], prefix, READY_S, env | extra | journal, name)

        relays = [start(n, f"relay-{n}", SLOW_FLUSH) for n in range(3)]
        client = bench.redis()
        for room in rooms:
            client.xadd(f"{prefix}:control", {"op": "join", "room": room})
        ids = [
            logged(bench.workdir / f"relay-{n}.log", "scaleout_started")["worker_id"]
            for n in range(3)
        ]
        held_before = settled_owners(client, prefix, rooms)
        shares = Counter(held_before.values())
        v = max(range(3), key=lambda n: shares[ids[n]])  # the victim: the most rooms
        victim_id = ids[v]
        victims_rooms = [room for room, owner in held_before.items() if owner == victim_id]
        load = bench.load("publish", rooms)
        wait_for(lambda: joined(client, prefix) >= set(rooms), READY_S, "every room observed")
        out = bench.workdir / "sent.json"
        seconds = KILL_AFTER_S + AFTER_S
        command = {"op": "run", "tag": "tk9", "rate": rate, "seconds": seconds, "out": str(out)}
        reply: dict[str, Any] = {}
        publish = threading.Thread(target=lambda: reply.update(load.call(seconds + 60, **command)))
        publish.start()
        time.sleep(KILL_AFTER_S)
        os.kill(relays[v].pid, signal.SIGKILL)
        relays[v].proc.popen.wait(10)
        relays[v].proc.stop()
        held = held_at_kill(journals[v])

        def taken() -> bool:
            now = owners(client, prefix, victims_rooms)
            return all(owner not in (None, victim_id) for owner in now.values())

        wait_for(taken, 30.0, "the victim's rooms taken")
        relays[v] = start(v, "relay-again", SLOW_FLUSH)
        again = logged(bench.workdir / "relay-again.log", "relay_started")
        publish.join()
        load.close()
        time.sleep(3.0)  # the last packets through the relays to Redis
        for relay in relays:
            relay.stop()
        logs = [f"relay-{n}" for n in range(3) if n != v] + ["relay-again"]
        unwritten = sum(
            logged(bench.workdir / f"{n}.log", "relay_stopped")["unwritten"] for n in logs
        )
        events = all_events(client, prefix)
        client.close()
        published = json.loads(out.read_text())
    gaps = [
        int(e["data"].get("gap_ms", 0))
        for e in events
        if e["kind"] == "observer.joined" and e["data"].get("reason") in ("takeover", "standby")
    ]
    return Tally.count(events, held, published).line(
        standby="yes" if standby else "no",
        replayed=again["journal_replayed"],
        moved=len(victims_rooms),
        unwritten=unwritten,
        gap_ms=max(gaps, default=-1),
        publish_lag_max_ms=round(reply.get("lag_max_ms", -1)),
    )


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout_s:.0f}s: {what}")
        time.sleep(0.1)


def logged(path: Path, event: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The first JSON log line of `event` in a relay's log (waiting for it)."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        for line in path.read_text().splitlines():
            if f'"{event}"' in line:
                found.append(json.loads(line))
                return True
        return False

    wait_for(seen, timeout_s, f"{event} in {path.name}")
    return found[0]


def owners(client: redis.Redis, prefix: str, rooms: list[str]) -> dict[str, str | None]:
    values = cast(list[bytes | None], client.mget([f"{prefix}:lease:{{{r}}}" for r in rooms]))
    return {r: v.decode() if v else None for r, v in zip(rooms, values, strict=True)}


def settled_owners(client: redis.Redis, prefix: str, rooms: list[str]) -> dict[str, str | None]:
    """The owners once every room has one, three workers hold rooms and nothing moved for
    two seconds (the rebalance is over)."""
    last: tuple[float, dict[str, str | None]] = (time.monotonic(), {})
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        now = owners(client, prefix, rooms)
        if now != last[1]:
            last = (time.monotonic(), now)
        elif None not in now.values() and len(set(now.values())) == 3 and stable(last[0]):
            return now
        time.sleep(0.1)
    raise RuntimeError(f"owners never settled: {last[1]}")


def stable(since: float) -> bool:
    return time.monotonic() - since >= 2.0


def joined(client: redis.Redis, prefix: str) -> set[str]:
    return {e["room"] for e in all_events(client, prefix) if e["kind"] == "observer.joined"}


def all_events(client: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    """The all-events stream's events, decoded, in stream order."""
    out: list[dict[str, Any]] = []
    low = "-"
    while True:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            client.xrange(f"{prefix}:events", min=low, count=5000),
        )
        out += [json.loads(fields[b"event"]) for _, fields in entries]
        if len(entries) < 5000:
            return out
        low = "(" + entries[-1][0].decode()
