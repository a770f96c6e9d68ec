"""Soak: one relay, N rooms at a time for M minutes, rooms churning, Redis blipping.

    sudo .venv/bin/python bench/soak.py [--minutes 10] [--rooms 6] [--rate 5] [--room-s 90]
        [--blips 2] [--blip-s 5] [--sample-s 5] [--memtrace FILE]
        [--relay-env KEY=VALUE ...] [--trim-at-end]

Inside a private namespace (bench/harness.py): the dev server, a private Redis and one
`relay run` (a subprocess, no static rooms, the admin API on). `--rooms` slots each play
rooms one after the other until the M minutes are over: a new room name, `POST /v1/rooms`,
wait until the relay says the room is `connected`, then a LiveAvatar agent
(bench/lk_load.py publish, its own SDK process) publishes `--rate` transcript chunks a
second for `--room-s` seconds (the slots staggered, so rooms end and start all along),
leaves, and once its last event is in the room's stream (or 60 s passed) the room is
removed (`DELETE /v1/rooms/R`): the relay leaves, the dev server forgets the empty room.
`--blips` times, evenly spread, the Redis server is shut down for `--blip-s` seconds and
started again on its saved data (the relay buffers meanwhile). Every `--sample-s` the
relay's RSS (/proc/PID/status VmRSS) and open descriptors (/proc/PID/fd) are sampled.

sent = events whose `publish_data` returned without error; each was published into a
room the relay had joined (the publisher starts after the relay's `connected`) and
before the relay was told to leave (the publisher has left by then). lost = sent events
with no entry carrying their event_id in `<prefix>:events` at the end (after the relay
drained on SIGTERM); duplicates = entries beyond the first for one event_id. Events sent
during a blip count like the others: the relay must buffer and deliver them.

rss_start_mb / fds_start: the first sample after the warm-up (`--warmup-s`, default the
first minute, at most a fifth of the run); rss_end_mb / fds_end: the last sample before
the M minutes ended; rss_kb_per_room_left: their difference over the rooms removed in
between. `--memtrace FILE`: the relay runs under bench/memtrace.py (tracemalloc) and
its Python heap is set against the rooms left. `--relay-env` adds to the relay's
environment (for example `MALLOC_ARENA_MAX=2`). `--trim-at-end`: before the relay stops,
gdb calls glibc's `malloc_trim(0)` in it, and the RSS before and after is printed: what
malloc held freed but had not given back, against what is still in use. One line, then
a table (one sample a minute):

    soak minutes=M rooms=N rss_start_mb=X rss_end_mb=Y fds_start=A fds_end=B lost=N
        duplicates=N sent=N rooms_played=N blips=N rss_max_mb=X fds_max=N
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from harness import Bench, Relay, rss_mb

ADMIN_TOKEN = "soak-admin"  # the namespace's own relay; never leaves the veth link
MEMTRACE = Path(__file__).resolve().parent / "memtrace.py"
JOIN_TIMEOUT_S = 30.0
LAST_EVENT_TIMEOUT_S = 60.0


@dataclass
class Sample:
    at_s: float  # since the start of the run
    rss_mb: float
    fds: int
    rooms: int


@dataclass
class Soak:
    bench: Bench
    relay: Relay
    args: argparse.Namespace
    started: float
    sent: dict[str, list[str]] = field(default_factory=dict)  # room -> event ids sent
    left: list[float] = field(default_factory=list)  # time.time() of each room's DELETE
    wall_started: float = field(default_factory=time.time)  # `started` on the wall clock
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def deadline(self) -> float:
        return self.started + float(self.args.minutes) * 60

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.relay.http + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def room_state(self, room: str) -> str | None:
        rooms = self.admin("GET", "/v1/rooms")["rooms"]
        return next((r["state"] for r in rooms if r["room"] == room), None)

    def play_slot(self, slot: int) -> None:
        """Rooms one after the other until the deadline; the first after a stagger."""
        lifetime = self.args.room_s
        time.sleep(slot * lifetime / self.args.rooms)
        generation = 0
        while (left := self.deadline - time.monotonic()) > 10:
            room = f"soak-{slot}-{generation}-{uuid.uuid4().hex[:4]}"
            try:
                self.play_room(room, min(lifetime, left - 5))
            except Exception as exc:  # reported at the end, the other slots go on
                with self.lock:
                    self.errors.append(f"{room}: {type(exc).__name__}: {exc}")
                with contextlib.suppress(OSError, ValueError):
                    self.admin("DELETE", f"/v1/rooms/{room}")
                time.sleep(5.0)  # no busy loop when the rig is broken
            generation += 1

    def play_room(self, room: str, seconds: float) -> None:
        self.admin("POST", "/v1/rooms", {"room": room})
        until = time.monotonic() + JOIN_TIMEOUT_S
        while self.room_state(room) != "connected":
            if time.monotonic() > until:
                raise RuntimeError("the relay did not join")
            time.sleep(0.2)
        out = self.bench.workdir / f"sent-{room}.json"
        load = self.bench.load("publish", [room])
        try:
            reply = load.call(
                seconds + 60, op="run", tag=room, rate=self.args.rate, seconds=seconds, out=str(out)
            )
        finally:
            load.close()
        ids = list(json.loads(out.read_text()))
        with self.lock:
            self.sent[room] = ids
        if reply.get("errors"):
            with self.lock:
                self.errors.append(
                    f"{room}: {reply['errors']} publish errors: {reply['first_error']}"
                )
        self.wait_written(room, ids[-1] if ids else None)
        self.admin("DELETE", f"/v1/rooms/{room}")
        with self.lock:
            self.left.append(time.time())

    def wait_written(self, room: str, last_id: str | None) -> None:
        """Until the room's stream has its last event (Redis may be away for a blip)."""
        until = time.monotonic() + LAST_EVENT_TIMEOUT_S
        client = self.bench.redis()
        try:
            while last_id is not None and time.monotonic() < until:
                try:
                    entries = client.xrange(f"{self.relay.prefix}:room:{{{room}}}")
                except (redis.RedisError, OSError):
                    entries = []
                for _, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], entries):
                    if json.loads(fields[b"event"])["source"].get("event_id") == last_id:
                        return
                time.sleep(0.5)
        finally:
            client.close()


def blip(bench: Bench, at: float, blip_s: float, log: list[str]) -> None:
    time.sleep(max(0.0, at - time.monotonic()))
    bench.redis_server.stop()  # SHUTDOWN SAVE: what was written survives
    time.sleep(blip_s)
    bench.redis_server.start()
    log.append(f"blip {blip_s:.0f}s")


def sample(soak: Soak) -> Sample:
    pid = soak.relay.pid
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    try:
        rooms = len(soak.admin("GET", "/v1/rooms")["rooms"])
    except (urllib.error.URLError, OSError, ValueError):
        rooms = -1
    return Sample(time.monotonic() - soak.started, rss_mb(pid), fds, rooms)


def count(bench: Bench, prefix: str, sent: dict[str, list[str]]) -> tuple[int, int, int]:
    """(sent, lost, duplicates) from the all-events stream."""
    client = bench.redis()
    seen = Counter[str]()
    last = "-"
    while entries := cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        client.xrange(f"{prefix}:events", min=last, count=10_000),
    ):
        for _, fields in entries:
            event_id = json.loads(fields[b"event"])["source"].get("event_id")
            if event_id:
                seen[event_id] += 1
        last = "(" + entries[-1][0].decode()
    client.close()
    ids = [event_id for room_ids in sent.values() for event_id in room_ids]
    lost = sum(1 for event_id in ids if event_id not in seen)
    duplicates = sum(n - 1 for n in seen.values())
    return len(ids), lost, duplicates


def left_room_collections(relay: Relay) -> tuple[float, float] | None:
    """How many collections after rooms left the relay ran, and their total pause (s)."""
    status, text = relay.get("/metrics")
    if status != 200:
        return None
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("relay_left_room_collection_seconds_"):
            values[name.removeprefix("relay_left_room_collection_seconds_")] = float(value)
    if "count" not in values:
        return None
    return values["count"], values.get("sum", 0.0)


def trim(pid: int) -> tuple[float, float] | None:
    """RSS before and after gdb makes the process call malloc_trim(0); None without gdb."""
    before = rss_mb(pid)
    call = ["gdb", "-p", str(pid), "-batch", "-ex", "call (int) malloc_trim(0)"]
    try:
        subprocess.run(call, capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"soak trim failed: {exc!r}")
        return None
    return before, rss_mb(pid)


def rooms_left(left: list[float], after: float, until: float) -> int:
    return sum(1 for at in left if after < at <= until)


def report_memtrace(path: Path, left: list[float], warmup_s: float) -> None:
    """The Python heap (tracemalloc) against VmRSS and the rooms left, from --memtrace."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    after = [line for line in lines if line["at_s"] >= warmup_s]
    if len(after) < 2:
        print(f"memtrace: {len(lines)} samples, too few after the warm-up")
        return
    first, last = after[0], after[-1]
    rooms = rooms_left(left, first["time"], last["time"])
    traced = last["traced_mb"] - first["traced_mb"]
    print(
        f"memtrace minutes={(last['at_s'] - first['at_s']) / 60:.1f} rooms_left={rooms} "
        f"traced_growth_mb={traced:.2f} traced_kb_per_room={traced * 1024 / max(1, rooms):.1f} "
        f"objects_growth={last['objects'] - first['objects']} "
        f"rss_growth_mb={last['rss_mb'] - first['rss_mb']:.1f} "
        f"tracemalloc_growth_mb={last['tracemalloc_mb'] - first['tracemalloc_mb']:.1f}"
    )
    print("| at_min | rss_mb | traced_mb | tracemalloc_mb | objects | rooms_left |")
    print("| --- | --- | --- | --- | --- | --- |")
    for line in lines:
        print(
            f"| {line['at_s'] / 60:.1f} | {line['rss_mb']:.1f} | {line['traced_mb']:.2f} "
            f"| {line['tracemalloc_mb']:.1f} | {line['objects']} "
            f"| {rooms_left(left, 0, line['time'])} |"
        )
    grown = {k: v - first["types"].get(k, 0) for k, v in last["types"].items()}
    top = sorted(grown.items(), key=lambda kv: -kv[1])[:8]
    print("object counts grown (of the 20 most numerous types):", dict(top))
    names = sorted(set(first.get("livekit", {})) | set(last.get("livekit", {})))
    livekit = {n: (first["livekit"].get(n, 0), last["livekit"].get(n, 0)) for n in names}
    print("livekit objects alive (after the warm-up, at the end):", livekit)
    base, latest = path.with_suffix(".base.snap"), path.with_suffix(".last.snap")
    if base.exists() and latest.exists():
        ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
        old = tracemalloc.Snapshot.load(str(base)).filter_traces(ignore)
        new = tracemalloc.Snapshot.load(str(latest)).filter_traces(ignore)
        for stat in new.compare_to(old, "traceback")[:8]:
            frames = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in stat.traceback]
            print(
                f"traced growth {stat.size_diff / 1024:+.1f} kB {stat.count_diff:+d} blocks "
                f"at {' < '.join(reversed(frames[-6:]))}"
            )


def main(args: argparse.Namespace) -> int:
    total_s = args.minutes * 60
    warmup_s = args.warmup_s if args.warmup_s >= 0 else min(60.0, total_s / 5)
    env = {
        "RELAY_HTTP__ADMIN_TOKEN": ADMIN_TOKEN,
        "RELAY_PIPELINE__RETRY_MAX_S": "1",  # back to Redis soon after a blip
        **dict(pair.split("=", 1) for pair in args.relay_env),
    }
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with Bench.open(proc_timeout_s=total_s + 600) as bench:
        prefix = f"soak-{uuid.uuid4().hex[:6]}"
        argv = None
        if args.memtrace:
            memtrace = Path(args.memtrace).resolve()
            memtrace.unlink(missing_ok=True)
            env["RELAY_MEMTRACE_WARMUP_S"] = str(warmup_s)
            argv = [sys.executable, str(MEMTRACE), str(memtrace), str(args.sample_s * 6), "run"]
        ready_s = 180 if args.memtrace else 60  # tracemalloc slows the start a lot
        relay = bench.start_relay([], prefix, ready_timeout_s=ready_s, extra_env=env, argv=argv)
        soak = Soak(bench, relay, args, time.monotonic())
        slots = [
            threading.Thread(target=soak.play_slot, args=(n,), daemon=True)
            for n in range(args.rooms)
        ]
        blips: list[str] = []
        blippers = [
            threading.Thread(
                target=blip,
                args=(
                    bench,
                    soak.started + total_s * (k + 1) / (args.blips + 1),
                    args.blip_s,
                    blips,
                ),
                daemon=True,
            )
            for k in range(args.blips)
        ]
        for thread in slots + blippers:
            thread.start()
        samples: list[Sample] = []
        while time.monotonic() < soak.deadline:
            samples.append(sample(soak))
            time.sleep(args.sample_s)
        for thread in slots + blippers:
            thread.join(LAST_EVENT_TIMEOUT_S + 120)
        collections = left_room_collections(relay)
        trimmed = trim(relay.pid) if args.trim_at_end else None
        status = relay.stop()
        sent, lost, duplicates = count(bench, prefix, soak.sent)

    after = [s for s in samples if s.at_s >= warmup_s] or samples
    first, last = after[0], after[-1]
    print(
        f"soak minutes={args.minutes:g} rooms={args.rooms} rss_start_mb={first.rss_mb:.1f} "
        f"rss_end_mb={last.rss_mb:.1f} fds_start={first.fds} fds_end={last.fds} lost={lost} "
        f"duplicates={duplicates} sent={sent} rooms_played={len(soak.sent)} "
        f"blips={len(blips)} rss_max_mb={max(s.rss_mb for s in samples):.1f} "
        f"fds_max={max(s.fds for s in samples)} relay_exit={status}"
    )
    rooms = rooms_left(soak.left, soak.wall_started + first.at_s, soak.wall_started + last.at_s)
    rss_kb = (last.rss_mb - first.rss_mb) * 1024 / max(1, rooms)
    print(f"soak rooms_left={rooms} rss_kb_per_room_left={rss_kb:.0f} (after the warm-up)")
    print("| minute | rss_mb | fds | rooms |")
    print("| --- | --- | --- | --- |")
    minute = -1
    for s in samples:
        if int(s.at_s // 60) > minute or s is samples[-1]:
            minute = int(s.at_s // 60)
            print(f"| {s.at_s / 60:.1f} | {s.rss_mb:.1f} | {s.fds} | {s.rooms} |")
    if collections is not None:
        runs, total_s = collections
        print(
            f"soak left_room_collections={runs:.0f} "
            f"pause_mean_ms={total_s * 1000 / max(1, runs):.1f} (relay/rooms/collector.py)"
        )
    if trimmed:
        before, after_trim = trimmed
        print(
            f"soak trim rss_before_mb={before:.1f} rss_after_mb={after_trim:.1f} "
            f"released_mb={before - after_trim:.1f} (malloc_trim(0), the rooms gone)"
        )
    if args.memtrace:
        report_memtrace(Path(args.memtrace), soak.left, warmup_s)
    for error in soak.errors[:20]:
        print(f"error: {error}")
    if len(soak.errors) > 20:
        print(f"... {len(soak.errors) - 20} more errors")
    return 0 if lost == 0 and not soak.errors else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rooms", type=int, default=6, help="rooms at a time")
    parser.add_argument("--rate", type=float, default=5.0, help="events/s per room")
    parser.add_argument("--room-s", type=float, default=90.0, help="a room's conversation")
    parser.add_argument("--blips", type=int, default=2)
    parser.add_argument("--blip-s", type=float, default=5.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=-1.0, help="default: see above")
    parser.add_argument(
        "--memtrace", metavar="FILE", help="run the relay under bench/memtrace.py, lines to FILE"
    )
    parser.add_argument(
        "--relay-env", metavar="KEY=VALUE", action="append", default=[], help="see above"
    )
    parser.add_argument("--trim-at-end", action="store_true", help="see above")
    sys.exit(main(parser.parse_args()))
