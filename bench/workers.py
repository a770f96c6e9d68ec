"""Benchmark: pod throughput with `relay run --workers N`, at saturation.

`relay run --workers N` (discovery on, the rooms put in the shared wanted set, so the N
workers share them by lease, max_rooms the even share of each) observes `--rooms` rooms;
`--publishers` SDK publisher processes (bench/lk_load.py) push LiveAvatar packets into
all of them as fast as they can (one awaited publish_data at a time per room, `--rate`
in total is only a ceiling) for `--seconds`. Per run: events written to Redis per second
of wall time (the first to the last window entry's Redis time), the CPU of the relay's
whole process tree (supervisor and workers, /proc utime+stime) per event written, the
publishers' CPU and the machine's idle share over the window (is the rig, not the relay,
the bottleneck?). The runs are interleaved, `--order 1,2,1,2`, so a change of background
load hits both N alike; each (1, 2) pair gives its own ratio.

For sizing (deploy/base/deployment.yaml): `--held R` makes every worker hold R rooms (the
pod is asked for R x N rooms: the `--rooms` busy ones, the others joined and idle as in
bench/rooms.py), and a `--rate` below saturation gives the CPU per event at a
steady load. Before the traffic, with every room held (`relay_leases_held` on the pod's
/metrics), the tree's idle CPU over `--idle-seconds`: `net us/ev` is the CPU per event
with that idle rate taken out. The RSS (VmRSS) of the supervisor and of each worker is
read after the traffic.

    sudo .venv/bin/python bench/workers.py [--rooms 12] [--publishers 2] [--seconds 10]
    sudo .venv/bin/python bench/workers.py --rooms 10 --held 50 --rate 300 --order 1,2,1,2

Needs root (network namespaces) and redis-server. Ends with one line per N (medians)
and the scaling (median of the pairs' ratios):
    workers=N eps=X cpu_us_per_event=Y net_us_per_event=Z idle_cpu_pct=I rooms_per_worker=R
        worker_rss_mb=M supervisor_rss_mb=S
    scaling=R
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import LIMITS_OFF, Bench, LoadClient, Relay, StreamReader, cpu_s, rss_mb

from relay import keys
from relay.config import RedisSettings

WARMUP_RATE = 24.0


@dataclass
class Run:
    workers: int
    published: int
    written: int
    span_s: float  # first to last window entry, Redis's clock
    relay_cpu_s: float  # supervisor + workers
    pub_cpu_s: float
    server_cpu_s: float  # the dev server (one Python process: the SFU of the rig)
    window_s: float
    machine_idle_pct: float
    load_avg: float
    idle_cpu_pct: float  # the relay tree's CPU with every room held and no traffic
    rooms_held: int  # leases the pod holds (every worker's relay_leases_held)
    worker_rss_mb: list[float]  # each worker process, after the traffic
    supervisor_rss_mb: float  # 0 with one worker (`relay run` is the worker itself)

    @property
    def net_us_per_event(self) -> float:
        """CPU per event without what the pod burns idle (its rooms) over the same time."""
        idle_s = self.idle_cpu_pct / 100 * self.span_s
        return (self.relay_cpu_s - idle_s) / self.written * 1e6 if self.written else float("nan")

    @property
    def rooms_per_worker(self) -> float:
        return self.rooms_held / self.workers

    @property
    def eps(self) -> float:
        return self.written / self.span_s if self.span_s > 0 else float("nan")

    @property
    def cpu_us_per_event(self) -> float:
        return self.relay_cpu_s / self.written * 1e6 if self.written else float("nan")


def tree_pids(pid: int) -> list[int]:
    """`pid` and every descendant (the supervisor's workers)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def tree_cpu_s(pid: int) -> float:
    total = 0.0
    for p in tree_pids(pid):
        try:
            total += cpu_s(p)
        except OSError:
            continue
    return total


def tree_rss_mb(pid: int) -> tuple[list[float], float]:
    """(each worker's RSS, the supervisor's): with one worker `pid` is the worker."""
    pids = tree_pids(pid)
    if len(pids) == 1:
        return [rss_mb(pid)], 0.0
    return [rss_mb(p) for p in pids if p != pid], rss_mb(pid)


def leases_held(relay: Relay) -> int:
    """The pod's room leases: every relay_leases_held sample on its /metrics, summed."""
    _, text = relay.get("/metrics")
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("relay_leases_held")
    ]
    return round(sum(values))


def wait_held(relay: Relay, rooms: int, max_s: float) -> int:
    """Until the pod holds every room (the idle ones too) or `max_s`; the leases held."""
    deadline = time.monotonic() + max_s
    while (held := leases_held(relay)) < rooms and time.monotonic() < deadline:
        time.sleep(0.5)
    return held


def machine_idle() -> tuple[float, float]:
    """(idle + iowait jiffies, all jiffies) from /proc/stat's cpu line."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def publish_all(
    bench: Bench, pubs: Sequence[LoadClient], tag: str, rate: float, seconds: float
) -> list[str]:
    """Every publisher at once (each gets rate / publishers); the ids sent."""
    outs = []
    for n, pub in enumerate(pubs):
        out = bench.workdir / f"sent-{tag}-{n}.json"
        cmd = {"op": "run", "tag": f"{tag}p{n}", "rate": rate / len(pubs), "seconds": seconds}
        stdin = pub.proc.popen.stdin
        assert stdin is not None
        stdin.write((json.dumps({**cmd, "out": str(out)}) + "\n").encode())
        stdin.flush()
        outs.append(out)
    sent: list[str] = []
    for pub, out in zip(pubs, outs, strict=True):
        reply = pub.read(seconds * 4 + 60)
        if not reply.get("ok"):
            raise RuntimeError(f"{pub.proc.name}: {reply.get('error')}")
        sent += list(json.loads(out.read_text()))
    return sent


def want_rooms(bench: Bench, prefix: str, busy: Sequence[str], workers: int, held: int) -> int:
    """Put the pod's rooms in the shared wanted set before it starts, as `POST /v1/rooms`
    does (no static list, which may not exceed max_rooms): the busy ones, then idle ones
    up to `held` per worker; how many in all."""
    idle = [f"bench-idle-{i}" for i in range(max(0, held * workers - len(busy)))]
    key = keys.wanted_key(RedisSettings(prefix=prefix))
    entry = json.dumps({"source": "admin", "since": time.time()})
    bench.redis().hset(key, mapping=dict.fromkeys([*busy, *idle], entry))
    return len(busy) + len(idle)


def start(bench: Bench, rooms: Sequence[str], workers: int, held: int) -> tuple[Relay, int]:
    """The relay, and the rooms it is asked for (the busy ones, and idle ones). Each
    worker may hold its even share and no more (max_rooms): without that cap the first
    worker to tick takes every room before the others register, and nothing moves them."""
    prefix = f"workers{workers}-{uuid.uuid4().hex[:6]}"
    total = want_rooms(bench, prefix, rooms, workers, held)
    env = {
        "RELAY_WORKERS": str(workers),
        "RELAY_MAX_ROOMS": str(math.ceil(total / workers)),
        "RELAY_DISCOVERY__ENABLED": "true",
        "RELAY_DISCOVERY__PICKUP_JITTER_S": "0.2",
        "RELAY_DISCOVERY__INCLUDE": json.dumps(["bench-*"]),
        **LIMITS_OFF,  # as fast as they can: a room may pass the limits' defaults
    }
    return bench.start_relay([], prefix, 60 + total, extra_env=env), total


def measure(
    bench: Bench,
    pubs: Sequence[LoadClient],
    rooms: Sequence[str],
    workers: int,
    args: argparse.Namespace,
) -> Run:
    relay, total = start(bench, rooms, workers, args.held)
    try:
        reader = StreamReader(bench.redis(), relay.prefix)
        for attempt in range(6):  # until every room is observed (leases taken, joined)
            warm = publish_all(
                bench,
                pubs,
                f"w{workers}{attempt}{uuid.uuid4().hex[:3]}",
                WARMUP_RATE * len(rooms) / 12,
                1.0,
            )
            found, _ = reader.wait_for(warm, quiet_s=2.0, max_s=20)
            if found == len(warm):
                break
        else:
            raise RuntimeError(f"workers={workers}: not every room observed after warm-up")
        rooms_held = wait_held(relay, total, 60 + total)
        if rooms_held < total:
            raise RuntimeError(f"workers={workers}: {rooms_held} of {total} rooms held")
        idle_before, idle_started = tree_cpu_s(relay.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        idle_s = tree_cpu_s(relay.pid) - idle_before
        idle_cpu_pct = idle_s / (time.monotonic() - idle_started) * 100
        load_avg = os.getloadavg()[0]
        relay_before = tree_cpu_s(relay.pid)
        pub_before = sum(cpu_s(p.pid) for p in pubs)
        server_before = tree_cpu_s(bench.server.proc.pid)
        idle_before, all_before = machine_idle()
        started = time.monotonic()
        sent = publish_all(
            bench, pubs, f"t{workers}{uuid.uuid4().hex[:4]}", args.rate, args.seconds
        )
        window_s = time.monotonic() - started
        idle_after, all_after = machine_idle()
        written, _ = reader.wait_for(sent, max_s=60)
        relay_cpu = tree_cpu_s(relay.pid) - relay_before
        worker_rss, supervisor_rss = tree_rss_mb(relay.pid)
        pub_cpu = sum(cpu_s(p.pid) for p in pubs) - pub_before
        server_cpu = tree_cpu_s(bench.server.proc.pid) - server_before
        stamps = sorted(reader.found[i].entry_ms for i in sent if i in reader.found)
        span_s = (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1 else float("nan")
        return Run(
            workers=workers,
            published=len(sent),
            written=written,
            span_s=span_s,
            relay_cpu_s=relay_cpu,
            pub_cpu_s=pub_cpu,
            server_cpu_s=server_cpu,
            window_s=window_s,
            machine_idle_pct=(idle_after - idle_before) / (all_after - all_before) * 100,
            load_avg=load_avg,
            idle_cpu_pct=idle_cpu_pct,
            rooms_held=leases_held(relay),
            worker_rss_mb=worker_rss,
            supervisor_rss_mb=supervisor_rss,
        )
    finally:
        relay.stop()


def main(args: argparse.Namespace) -> int:
    rooms = [f"bench-{i}" for i in range(args.rooms)]
    print(
        f"workers: relay run --workers N, {args.rooms} busy rooms, {args.publishers} publishers "
        f"as fast as they can (ceiling {args.rate:g}/s) for {args.seconds:g} s; "
        f"{args.held or 'no'} rooms held per worker; order {args.order}; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    runs: list[Run] = []
    per_run_s = 120 + args.seconds * 4 + args.idle_seconds + 2 * args.held * max(args.order)
    with Bench.open(proc_timeout_s=300 + len(args.order) * per_run_s) as bench:
        share = [rooms[n :: args.publishers] for n in range(args.publishers)]
        pubs = [bench.load("publish", names) for names in share]
        try:
            for workers in args.order:
                runs.append(measure(bench, pubs, rooms, workers, args))
                print(f"  N={workers}: {runs[-1].eps:.0f} events/s", flush=True)
        finally:
            for pub in pubs:
                pub.close()
    report(runs)
    return 0


def report(runs: Sequence[Run]) -> None:
    print(
        f"\n{'N':>3}{'load':>6}{'sent':>7}{'written':>8}{'span s':>8}{'events/s':>10}"
        f"{'relay CPU s':>12}{'us/event':>10}{'pub CPU s':>10}{'srv CPU%':>9}{'idle %':>8}"
        f"{'idle CPU%':>10}{'net us/ev':>10}{'rooms/w':>8}{'worker RSS MB':>15}{'sup RSS':>8}"
    )
    for r in runs:
        print(
            f"{r.workers:>3}{r.load_avg:>6.2f}{r.published:>7}{r.written:>8}{r.span_s:>8.2f}"
            f"{r.eps:>10.0f}{r.relay_cpu_s:>12.2f}{r.cpu_us_per_event:>10.0f}"
            f"{r.pub_cpu_s:>10.2f}{r.server_cpu_s / r.span_s * 100:>9.0f}"
            f"{r.machine_idle_pct:>8.1f}{r.idle_cpu_pct:>10.1f}{r.net_us_per_event:>10.0f}"
            f"{r.rooms_per_worker:>8.0f}"
            f"{'/'.join(f'{m:.0f}' for m in r.worker_rss_mb):>15}{r.supervisor_rss_mb:>8.0f}"
        )
    ratios = []
    ones, twos = [r for r in runs if r.workers == 1], [r for r in runs if r.workers == 2]
    for n, (one, two) in enumerate(zip(ones, twos, strict=False)):
        ratios.append(two.eps / one.eps)
        cpu_ratio = two.cpu_us_per_event / one.cpu_us_per_event
        print(
            f"pair {n + 1}: 2 workers / 1 worker = {ratios[-1]:.2f}x events/s, "
            f"CPU per event {cpu_ratio:.2f}x"
        )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(
        "srv CPU%: the dev server's CPU over the span, % of one core (near 100: the rig's "
        "one-process SFU is the bottleneck, not the relay); idle %: the machine's idle "
        "share over the window (near 0: the cores are saturated)\n"
    )
    for workers in sorted({r.workers for r in runs}):
        mine = [r for r in runs if r.workers == workers]
        eps = statistics.median(r.eps for r in mine)
        cpu = statistics.median(r.cpu_us_per_event for r in mine)
        net = statistics.median(r.net_us_per_event for r in mine)
        idle = statistics.median(r.idle_cpu_pct for r in mine)
        rooms = statistics.median(r.rooms_per_worker for r in mine)
        worker_rss = statistics.median(m for r in mine for m in r.worker_rss_mb)
        supervisor_rss = statistics.median(r.supervisor_rss_mb for r in mine)
        print(
            f"workers={workers} eps={eps:.0f} cpu_us_per_event={cpu:.0f} "
            f"net_us_per_event={net:.0f} idle_cpu_pct={idle:.1f} rooms_per_worker={rooms:.0f} "
            f"worker_rss_mb={worker_rss:.0f} "
            f"supervisor_rss_mb={supervisor_rss:.0f}"
        )
    if ratios:
        print(f"scaling={statistics.median(ratios):.2f}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rooms", type=int, default=12, help="busy rooms (with publishers)")
    parser.add_argument(
        "--held", type=int, default=0, help="rooms per worker, idle ones added (0: --rooms)"
    )
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s ceiling, in total")
    parser.add_argument("--seconds", type=float, default=10.0, help="traffic time per run")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle CPU window")
    parser.add_argument(
        "--order",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2, 1, 2],
        help="worker counts, one run each, in this order",
    )
    args = parser.parse_args(argv)
    if args.rooms < 1 or args.publishers < 1 or args.seconds <= 0 or min(args.order) < 1:
        parser.error("--rooms, --publishers, --seconds and --order must be positive")
    if args.held < 0:
        parser.error("--held must be 0 or more")
    return args


if __name__ == "__main__":
    try:
        sys.exit(main(parse_args()))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
