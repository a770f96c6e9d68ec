"""Benchmark: the relay's CPU per event and memory against the number of rooms it holds.

The livekit Python SDK hands every FFI event to every `rtc.Room` of the process: each
Room subscribes to the one FFI queue, and its listen task wakes for every event, checks
the room handle, and waits on its own queue's join() even for other rooms' events. So
the cost of one data packet grows with the rooms a process holds, busy or not. This
measures it with the real relay over real WebRTC (bench/harness.py: a network namespace
with the dev server, a private Redis and the SDK clients).

For each R in `--rooms`: `relay run` observing R rooms, of which only the first carries
traffic: one publisher (bench/lk_load.py) sends `--rate` LiveAvatar packets per second
into it for `--seconds`; the other R-1 rooms are joined and idle. The relay process's
CPU (utime + stime from /proc/<pid>/stat, all threads, 10 ms ticks) is read when the
traffic starts and when the last event is in Redis; divided by the events written, that
is `cpu_us_per_event`. The idle CPU of the same process over `--idle-seconds` before the
traffic is measured too, and the table also shows the per-event cost with that idle
share taken out. RSS (VmRSS) is read after the traffic.

    .venv/bin/python bench/rooms.py [--rooms 1,10,50] [--rate 500] [--seconds 10]

Needs root (network namespaces) and redis-server. The last lines, one per R:
    rooms=R cpu_us_per_event=X rss_mb=Y
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    LIMITS_OFF,
    Bench,
    LoadClient,
    StreamReader,
    cpu_s,
    rss_mb,
    udp_rcvbuf_errors,
)

TRAFFIC_ROOM = "bench-0"
SETTLE_S = 2.0
WARMUP_RATE = 50.0


@dataclass
class RoomsResult:
    rooms: int
    ready_s: float
    idle_cpu_pct: float
    published: int
    written: int
    window_s: float
    cpu_s: float
    main_cpu_s: float  # the main thread alone: asyncio, the SDK's Python side, the relay
    rss_idle_mb: float
    rss_mb: float
    dropped: dict[str, float]
    udp_drops: int  # the namespace's UDP RcvbufErrors during the traffic

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s / self.written * 1e6 if self.written else float("nan")

    @property
    def main_us_per_event(self) -> float:
        return self.main_cpu_s / self.written * 1e6 if self.written else float("nan")

    @property
    def net_us_per_event(self) -> float:
        """CPU per event without what the process burns idle over the same time."""
        idle_s = self.idle_cpu_pct / 100 * self.window_s
        return (self.cpu_s - idle_s) / self.written * 1e6 if self.written else float("nan")

    @property
    def lost(self) -> int:
        return self.published - self.written


def measure(bench: Bench, pub: LoadClient, rooms: int, args: argparse.Namespace) -> RoomsResult:
    names = [TRAFFIC_ROOM, *(f"bench-{i}" for i in range(1, rooms))]
    started = time.monotonic()
    prefix = f"rooms{rooms}-{uuid.uuid4().hex[:6]}"
    relay = bench.start_relay(names, prefix, 60 + rooms, extra_env=LIMITS_OFF)
    try:
        ready_s = time.monotonic() - started
        reader = StreamReader(bench.redis(), relay.prefix)
        time.sleep(SETTLE_S)  # joins announced, first events written
        warm = publish(bench, pub, f"w{rooms}", WARMUP_RATE, 1.0)
        reader.wait_for(list(warm), max_s=30)

        idle_before, idle_started = cpu_s(relay.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        idle_cpu_pct = (cpu_s(relay.pid) - idle_before) / (time.monotonic() - idle_started) * 100
        rss_idle = rss_mb(relay.pid)

        dropped_before = relay.dropped()
        rcvbuf_before = udp_rcvbuf_errors(relay.pid)
        main_before = cpu_s(relay.pid, relay.pid)
        cpu_before, window_started = cpu_s(relay.pid), time.monotonic()
        sent = publish(bench, pub, f"t{rooms}", args.rate, args.seconds)
        written, _ = reader.wait_for(list(sent), max_s=60)
        cpu_used, window_s = cpu_s(relay.pid) - cpu_before, time.monotonic() - window_started
        main_used = cpu_s(relay.pid, relay.pid) - main_before
        dropped = {
            reason: count - dropped_before.get(reason, 0.0)
            for reason, count in relay.dropped().items()
            if count - dropped_before.get(reason, 0.0)
        }
        return RoomsResult(
            rooms=rooms,
            ready_s=ready_s,
            idle_cpu_pct=idle_cpu_pct,
            published=len(sent),
            written=written,
            window_s=window_s,
            cpu_s=cpu_used,
            main_cpu_s=main_used,
            rss_idle_mb=rss_idle,
            rss_mb=rss_mb(relay.pid),
            dropped=dropped,
            udp_drops=udp_rcvbuf_errors(relay.pid) - rcvbuf_before,
        )
    finally:
        relay.stop()


def publish(bench: Bench, pub: LoadClient, tag: str, rate: float, seconds: float) -> list[str]:
    out = bench.workdir / f"sent-{tag}.json"
    pub.call(seconds * 4 + 60, op="run", tag=tag, rate=rate, seconds=seconds, out=str(out))
    sent: dict[str, float] = json.loads(out.read_text())
    return list(sent)


def main(args: argparse.Namespace) -> int:
    print(
        f"rooms: relay holding R rooms, one carrying {args.rate:g} events/s for "
        f"{args.seconds:g} s, the others idle; R in {args.rooms}; python "
        f"{sys.version.split()[0]}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    per_r_s = 90 + max(args.rooms) + args.seconds * 4 + args.idle_seconds
    results: list[RoomsResult] = []
    with Bench.open(proc_timeout_s=120 + len(args.rooms) * per_r_s) as bench:
        pub = bench.load("publish", [TRAFFIC_ROOM])
        try:
            for rooms in args.rooms:
                results.append(measure(bench, pub, rooms, args))
                print(f"  R={rooms}: done", flush=True)
        finally:
            pub.close()
    report(results)
    return 0


def report(results: Sequence[RoomsResult]) -> None:
    print()
    print(
        f"{'rooms':>6}{'ready s':>9}{'idle CPU%':>10}{'events':>8}{'lost':>6}{'CPU s':>8}"
        f"{'us/event':>10}{'net us/ev':>11}{'main thr':>10}{'RSS idle':>10}{'RSS MB':>8}"
        f"{'UDP drops':>11}"
    )
    for r in results:
        print(
            f"{r.rooms:>6}{r.ready_s:>9.1f}{r.idle_cpu_pct:>10.1f}{r.written:>8}{r.lost:>6}"
            f"{r.cpu_s:>8.2f}{r.cpu_us_per_event:>10.0f}{r.net_us_per_event:>11.0f}"
            f"{r.main_us_per_event:>10.0f}"
            f"{r.rss_idle_mb:>10.0f}{r.rss_mb:>8.0f}{r.udp_drops:>11}"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        extra = last.rooms - first.rooms
        if extra > 0:
            per_room_us = (last.net_us_per_event - first.net_us_per_event) / extra
            per_room_mb = (last.rss_mb - first.rss_mb) / extra
            print(
                f"\nper extra idle room ({first.rooms} -> {last.rooms}): "
                f"+{per_room_us:.1f} us CPU per event, +{per_room_mb:.2f} MB RSS"
            )
    for r in results:
        if r.dropped:
            print(f"R={r.rooms}: relay drops {r.dropped}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(
        "us/event: relay process CPU (all threads) from the first packet sent to the last "
        "entry in Redis / events written; net: minus the idle rate over the same time; main "
        "thr: the main thread's share (asyncio: SDK Python side + relay), us/event; UDP "
        "drops: datagrams dropped on arrival in the namespace (receive buffer full)\n"
    )
    for r in results:
        print(f"rooms={r.rooms} cpu_us_per_event={r.cpu_us_per_event:.0f} rss_mb={r.rss_mb:.0f}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--rooms",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 10, 50],
        help="rooms held by the relay, comma-separated (one run each)",
    )
    parser.add_argument("--rate", type=float, default=500.0, help="events/s into one room")
    parser.add_argument("--seconds", type=float, default=10.0, help="traffic time")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle CPU window")
    args = parser.parse_args(argv)
    if not args.rooms or min(args.rooms) < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--rooms, --rate and --seconds must be positive")
    return args


if __name__ == "__main__":
    try:
        sys.exit(main(parse_args()))
    except KeyboardInterrupt:  # the namespace and every process are gone by now
        print("interrupted", file=sys.stderr)
        sys.exit(130)
