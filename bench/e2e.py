"""Benchmark: a client's `publish_data` to the relay's entry in Redis, beside a plain SDK
subscriber receiving the same packets (the floor), over real WebRTC.

Inside a private network namespace (bench/harness.py): the dev server, a private Redis,
`relay run` observing `--rooms` rooms, a publisher process (bench/lk_load.py) with one
SDK client per room, and a floor subscriber process with one hidden, receive-only SDK
client per room (what the relay's observer is, minus the relay). For each rate (events
per second in total, spread evenly over the rooms) the publisher sends LiveAvatar
`avatar.transcription.chunk` packets on `agent-response` for `--seconds`, each carrying
`sent_at` = `time.time()` taken just before its `publish_data` call. Every process runs
on this machine, so they share one clock.

- relay latency: the Redis stream entry id's time (Redis's clock when it ran the
  relay's XADD, in whole milliseconds) minus `sent_at`. Millisecond resolution, truncated:
  it reads up to 1 ms low (0.5 ms on average). A flush interval, if configured, is part
  of it (none by default: a batch goes out at once).
- relay SDK receive: the event's `ts` (the relay's SDK callback, ms) minus `sent_at`.
- floor latency: `time.time()` in the floor subscriber's `data_received` callback minus
  `sent_at`.
- lost: published minus found in Redis (matched on the event's `source.event_id`).
- CPU per event: each process's CPU (all threads, user + system, from /proc) during the
  publish window divided by the events published in it; the relay's beside the floor's
  is what the relay costs on top of the SDK.
- event-loop lag: the relay's `relay_event_loop_lag_seconds` over the window (a 50 ms
  timer's lateness): the share of wake-ups later than 1 and 3 ms, and the bucket holding
  the 99th percentile.

    .venv/bin/python bench/e2e.py [--seconds 10] [--rates 100,1000,2000] [--rooms 10]
                                  [--journal off|interval|always]

`--journal` runs the relay with its on-disk journal (journal.fsync interval or always)
in a temporary directory; the CPU line then says `journal=MODE`.

Needs root (network namespaces) and redis-server. The last lines, one per rate, are
machine-readable:
    rate=N relay_p50_ms=X relay_p99_ms=X floor_p50_ms=X floor_p99_ms=X lost=N
    rate=N relay_cpu_us_per_event=X floor_cpu_us_per_event=Y ratio=R
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    LIMITS_OFF,
    Bench,
    LoadClient,
    Relay,
    StreamReader,
    command_pid,
    cpu_s,
    percentile,
    rss_mb,
    udp_drops,
    udp_rcvbuf_errors,
)

WARMUP_RATE_PER_ROOM = 5.0
Reply = dict[str, Any]


@dataclass
class RateResult:
    rate: int
    published: int
    achieved_eps: float
    publish_errors: int
    lag_max_ms: float
    relay_ms: list[float]
    recv_ms: list[float]
    floor_ms: list[float]
    extra_ms: list[float]  # per event seen by both: relay->Redis minus floor
    drain_s: float
    dropped: dict[str, float]
    cpu_pct: dict[str, float] = field(default_factory=dict)
    cpu_us_per_event: dict[str, float] = field(default_factory=dict)
    lag: dict[float, float] = field(default_factory=dict)  # bucket bound -> wake-ups in it
    udp_drops: dict[str, int] = field(default_factory=dict)
    rcvbuf_errors: int = 0

    @property
    def lost(self) -> int:
        return self.published - len(self.relay_ms)

    @property
    def floor_lost(self) -> int:
        return self.published - len(self.floor_ms)


class Run:
    """One namespace, one relay, one publisher, one floor subscriber for every rate."""

    def __init__(
        self, bench: Bench, relay: Relay, pub: LoadClient, floor: LoadClient, quiet_s: float
    ) -> None:
        self.bench, self.relay, self.pub, self.floor = bench, relay, pub, floor
        self.quiet_s = quiet_s
        self.reader = StreamReader(bench.redis(), relay.prefix)
        self.floor_seen: dict[str, float] = {}
        self.pids = {
            "relay": relay.pid,
            "devserver": command_pid(bench.server.proc),
            "publisher": pub.pid,
            "floor": floor.pid,
            "redis": command_pid(bench.redis_server.proc),
        }

    def publish(self, tag: str, rate: float, seconds: float) -> tuple[dict[str, float], Reply]:
        out = self.bench.workdir / f"sent-{tag}.json"
        reply = self.pub.call(
            seconds * 4 + 60, op="run", tag=tag, rate=rate, seconds=seconds, out=str(out)
        )
        sent: dict[str, float] = json.loads(out.read_text())
        return sent, reply

    def floor_received(self, ids: Sequence[str], quiet_s: float = 2.0, max_s: float = 30.0) -> None:
        """Collect the floor's receipts until it has every id or nothing new comes."""
        started = last_new = time.monotonic()
        out = self.bench.workdir / "floor.json"
        while True:
            reply = self.floor.call(30, op="dump", out=str(out))
            if reply["dumped"]:
                self.floor_seen.update(json.loads(out.read_text()))
                last_new = time.monotonic()
            now = time.monotonic()
            have = sum(1 for i in ids if i in self.floor_seen)
            if have == len(ids) or now - last_new > quiet_s or now - started > max_s:
                return
            time.sleep(0.2)

    def warm_up(self, rooms: int) -> None:
        """A few packets per room first: every sender announced, every path exercised."""
        sent, _ = self.publish("warm", WARMUP_RATE_PER_ROOM * rooms, 1.0)
        found, _ = self.reader.wait_for(list(sent), max_s=30)
        self.floor_received(list(sent))
        if found < len(sent):
            print(f"warning: warm-up: {len(sent) - found} of {len(sent)} not in Redis")

    def measure(self, rate: int, seconds: float) -> RateResult:
        tag = f"r{rate}"
        dropped_before = self.relay.dropped()
        lag_before = self.relay.loop_lag_buckets()
        cpu_before = {name: cpu_s(pid) for name, pid in self.pids.items()}
        drops_before, rcvbuf_before = udp_drops(self.pids), udp_rcvbuf_errors(self.relay.pid)
        started = time.monotonic()
        sent, reply = self.publish(tag, rate, seconds)
        window = time.monotonic() - started
        cpu_used = {name: cpu_s(pid) - cpu_before[name] for name, pid in self.pids.items()}
        cpu_pct = {name: used / window * 100 for name, used in cpu_used.items()}
        cpu_per_event = {name: used / max(1, len(sent)) * 1e6 for name, used in cpu_used.items()}
        lag_after = self.relay.loop_lag_buckets()
        lag = {bound: n - lag_before.get(bound, 0.0) for bound, n in lag_after.items()}
        _, drain_s = self.reader.wait_for(list(sent), self.quiet_s, max_s=self.quiet_s + 120)
        self.floor_received(list(sent))
        drops = {name: n - drops_before[name] for name, n in udp_drops(self.pids).items()}
        dropped_after = self.relay.dropped()
        relay_ms, recv_ms, floor_ms, extra_ms = [], [], [], []
        for event_id, sent_at in sent.items():
            written = self.reader.found.get(event_id)
            floor = self.floor_seen.get(event_id)
            if written is not None:
                relay_ms.append(written.entry_ms - sent_at * 1000)
                recv_ms.append(written.received_ms - sent_at * 1000)
            if floor is not None:
                floor_ms.append(floor * 1000)
            if written is not None and floor is not None:
                extra_ms.append(relay_ms[-1] - floor * 1000)
        return RateResult(
            rate=rate,
            published=len(sent),
            achieved_eps=len(sent) / reply["elapsed_s"],
            publish_errors=reply["errors"],
            lag_max_ms=reply["lag_max_ms"],
            relay_ms=sorted(relay_ms),
            recv_ms=sorted(recv_ms),
            floor_ms=sorted(floor_ms),
            extra_ms=sorted(extra_ms),
            drain_s=drain_s,
            dropped={
                k: v - dropped_before.get(k, 0.0)
                for k, v in dropped_after.items()
                if v - dropped_before.get(k, 0.0)
            },
            cpu_pct=cpu_pct,
            cpu_us_per_event=cpu_per_event,
            lag=lag,
            udp_drops=drops,
            rcvbuf_errors=udp_rcvbuf_errors(self.relay.pid) - rcvbuf_before,
        )


def main(args: argparse.Namespace) -> int:
    rooms = [f"bench-{i}" for i in range(args.rooms)]
    proc_timeout_s = 300 + len(args.rates) * (args.seconds * 5 + args.quiet_seconds + 180)
    print(
        f"e2e: {args.rooms} rooms, {args.seconds:g} s per rate, rates {args.rates} events/s "
        f"in total; python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    results: list[RateResult] = []
    with Bench.open(proc_timeout_s) as bench:
        journal_dir = tempfile.mkdtemp(prefix="bench-journal-")
        journal_env = {}
        if args.journal != "off":
            journal_env = {"RELAY_JOURNAL__PATH": journal_dir, "RELAY_JOURNAL__FSYNC": args.journal}
        relay = bench.start_relay(
            rooms,
            f"bench-{uuid.uuid4().hex[:8]}",
            60 + 2 * len(rooms),
            extra_env={**LIMITS_OFF, **journal_env},
        )
        floor = bench.load("subscribe", rooms)
        pub = bench.load("publish", rooms)
        try:
            run = Run(bench, relay, pub, floor, args.quiet_seconds)
            run.warm_up(len(rooms))
            for rate in args.rates:
                results.append(run.measure(rate, args.seconds))
                print(f"  rate {rate}: done", flush=True)
            relay_rss = rss_mb(relay.pid)
        finally:
            pub.close()
            floor.close()
            status = relay.stop()
            shutil.rmtree(journal_dir, ignore_errors=True)
    report(results, relay_rss, status, args.journal)
    return 0


def _ratio(r: RateResult) -> float:
    return r.cpu_us_per_event["relay"] / max(1e-9, r.cpu_us_per_event["floor"])


def _lag(buckets: dict[float, float]) -> tuple[float, float, float]:
    """Share of wake-ups later than 1 ms and 3 ms, and the upper bound (ms) of the bucket
    holding the 99th percentile (cumulative buckets, as Prometheus keeps them)."""
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return 0.0, 0.0, 0.0
    over1 = 1 - buckets.get(0.001, 0.0) / total
    over3 = 1 - buckets.get(0.003, 0.0) / total
    p99 = next(bound for bound in sorted(buckets) if buckets[bound] >= 0.99 * total)
    return over1, over3, p99 * 1000


def _ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q):.1f}"


def report(
    results: Sequence[RateResult], relay_rss: float, relay_status: int | None, journal: str
) -> None:
    print()
    print(
        f"{'rate':>6}{'sent/s':>8}{'sent':>7}{'lost':>6}{'fl.lost':>8} | "
        f"{'relay->Redis ms p50/p95/p99/max':>32} | {'relay SDK recv p50/p99':>22} | "
        f"{'floor ms p50/p95/p99/max':>26} | {'relay-floor p50/p99':>19}"
    )
    for r in results:
        relay = "/".join(_ms(r.relay_ms, q) for q in (50, 95, 99, 100))
        recv = "/".join(_ms(r.recv_ms, q) for q in (50, 99))
        floor = "/".join(_ms(r.floor_ms, q) for q in (50, 95, 99, 100))
        extra = "/".join(_ms(r.extra_ms, q) for q in (50, 99))
        print(
            f"{r.rate:>6}{r.achieved_eps:>8.0f}{r.published:>7}{r.lost:>6}{r.floor_lost:>8} | "
            f"{relay:>32} | {recv:>22} | {floor:>26} | {extra:>19}"
        )
    print(f"\nCPU during the publish window, % of one core ({os.cpu_count()} cores):")
    names = list(results[0].cpu_pct) if results else []
    print(f"{'rate':>6}" + "".join(f"{n:>11}" for n in names) + f"{'pub lag max':>13}")
    for r in results:
        cpu = "".join(f"{r.cpu_pct[n]:>11.0f}" for n in names)
        print(f"{r.rate:>6}{cpu}{r.lag_max_ms:>10.0f} ms")
    print("\nCPU per event published (us, all threads), and the relay's event-loop lag:")
    print(
        f"{'rate':>6}" + "".join(f"{n:>11}" for n in names) + f"{'relay/floor':>13}"
        f"{'lag>1ms':>9}{'lag>3ms':>9}{'lag p99 <=':>12}"
    )
    for r in results:
        cpu = "".join(f"{r.cpu_us_per_event[n]:>11.0f}" for n in names)
        over1, over3, p99 = _lag(r.lag)
        print(f"{r.rate:>6}{cpu}{_ratio(r):>13.2f}{over1:>8.1%}{over3:>9.1%}{p99:>10.1f} ms")
    print("\nUDP datagrams dropped on arrival (socket receive buffer full), by receiver:")
    print(f"{'rate':>6}" + "".join(f"{n:>11}" for n in names) + f"{'namespace':>13}")
    for r in results:
        drops = "".join(f"{r.udp_drops.get(n, 0):>11}" for n in names)
        print(f"{r.rate:>6}{drops}{r.rcvbuf_errors:>13}")
    for r in results:
        notes = []
        if r.publish_errors:
            notes.append(f"{r.publish_errors} publish_data errors")
        if r.dropped:
            notes.append(f"relay drops {r.dropped}")
        if r.lost:
            notes.append(f"still missing {r.drain_s:.0f} s after the window")
        if r.achieved_eps < 0.95 * r.rate:
            notes.append(
                f"the publisher reached {r.achieved_eps:.0f}/s, not {r.rate}/s: the machine "
                "is saturated (see CPU), latencies include queueing common to relay and floor"
            )
        if notes:
            print(f"rate {r.rate}: " + "; ".join(notes))
    print(
        f"relay RSS at the end {relay_rss:.0f} MB; relay exit status {relay_status}; "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    print(
        "relay->Redis: Redis entry id ms - sent_at (ms resolution, truncated); relay SDK "
        "recv: event ts - sent_at; floor: plain SDK subscriber's callback - sent_at; "
        "relay-floor: per event seen by both\n"
    )
    for r in results:
        print(
            f"rate={r.rate} relay_p50_ms={_ms(r.relay_ms, 50)} "
            f"relay_p99_ms={_ms(r.relay_ms, 99)} floor_p50_ms={_ms(r.floor_ms, 50)} "
            f"floor_p99_ms={_ms(r.floor_ms, 99)} lost={r.lost}"
        )
        print(
            f"rate={r.rate} relay_cpu_us_per_event={r.cpu_us_per_event['relay']:.0f} "
            f"floor_cpu_us_per_event={r.cpu_us_per_event['floor']:.0f} ratio={_ratio(r):.2f}"
            f" journal={journal}"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="publish time per rate")
    parser.add_argument(
        "--rates",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[100, 1000, 2000],
        help="events/s in total across the rooms, comma-separated",
    )
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--journal", choices=("off", "interval", "always"), default="off")
    parser.add_argument(
        "--quiet-seconds",
        type=float,
        default=15.0,
        help="after a window, how long nothing new may arrive before the rest count as lost",
    )
    args = parser.parse_args(argv)
    if args.rooms < 1 or args.seconds <= 0 or not args.rates or min(args.rates) <= 0:
        parser.error("--rooms, --seconds and every rate must be positive")
    return args


if __name__ == "__main__":
    try:
        sys.exit(main(parse_args()))
    except KeyboardInterrupt:  # the namespace and every process are gone by now
        print("interrupted", file=sys.stderr)
        sys.exit(130)
