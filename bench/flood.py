"""Benchmark: what a flooded room costs the other rooms of the same relay, limits on and off.

One `relay run` observes `--rooms` rooms carrying normal traffic (bench/lk_load.py
publish mode, `--rate` LiveAvatar packets/s in total) and one more room flooded by one
participant publishing as fast as its awaited `publish_data` returns (up to
`--flood-ceiling`/s), both for `--seconds`. Per variant (`--order`, default off,on; a
fresh relay each, one namespace, dev server, Redis and publishers for all): the others'
publish-to-Redis latency (the entry id's ms time minus `sent_at`, as bench/e2e.py), how
many of theirs are lost, the flood's rate, what of it was written and what the limits
dropped (`relay_events_dropped_total`, the four limit reasons), the relay's CPU.
`limits=on` runs the defaults unless `--env RELAY_LIMITS__...=V` says otherwise;
`limits=off` runs with RELAY_LIMITS__ENABLED=false.

    sudo .venv/bin/python bench/flood.py [--rooms 5] [--rate 100] [--seconds 10] [--order off,on]

Needs root (network namespaces) and redis-server. The last lines, one per variant:
    flood limits=on others_p50_ms=X others_p99_ms=X others_lost=N flood_eps=F
        flooded_written=W flooded_dropped=D     (one line)
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

from harness import LIMITS_OFF, Bench, LoadClient, StreamReader, cpu_s, percentile

FLOODED = "bench-flood"
LIMIT_REASONS = ("participant_rate", "participant_bytes", "room_rate", "room_bytes")
SETTLE_S = 2.0


@dataclass
class FloodResult:
    variant: str
    others_sent: int
    others_found: int
    others_p50_ms: float
    others_p99_ms: float
    others_lag_max_ms: float
    flood_sent: int
    flood_s: float
    flooded_written: int
    flooded_dropped: int
    dropped: dict[str, float]
    relay_cpu_pct: float

    @property
    def flood_eps(self) -> float:
        return self.flood_sent / self.flood_s if self.flood_s else 0.0


def publish_both(
    bench: Bench, others: LoadClient, flood: LoadClient, tag: str, args: argparse.Namespace
) -> tuple[dict[str, float], dict[str, object], dict[str, float], dict[str, object]]:
    """The flood and the others' traffic at once, for the same `--seconds`."""
    flood_out = bench.workdir / f"flood-{tag}.json"
    others_out = bench.workdir / f"others-{tag}.json"
    command = {"op": "run", "tag": f"{tag}f", "rate": args.flood_ceiling}
    command |= {"seconds": args.seconds, "out": str(flood_out), "flood": True}
    stdin = flood.proc.popen.stdin
    assert stdin is not None
    stdin.write((json.dumps(command) + "\n").encode())
    stdin.flush()
    timeout_s = args.seconds * 4 + 60
    other_reply = others.call(
        timeout_s,
        op="run",
        tag=f"{tag}o",
        rate=args.rate,
        seconds=args.seconds,
        out=str(others_out),
    )
    flood_reply = flood.read(timeout_s)
    if not flood_reply.get("ok"):
        raise RuntimeError(f"flood publisher: {flood_reply.get('error')}")
    return (
        json.loads(others_out.read_text()),
        other_reply,
        json.loads(flood_out.read_text()),
        flood_reply,
    )


def measure(
    bench: Bench,
    others: LoadClient,
    flood: LoadClient,
    rooms: Sequence[str],
    variant: str,
    args: argparse.Namespace,
) -> FloodResult:
    env = dict(LIMITS_OFF) if variant == "off" else dict(args.env)
    prefix = f"flood{variant}-{uuid.uuid4().hex[:6]}"
    relay = bench.start_relay([FLOODED, *rooms], prefix, 60 + len(rooms), extra_env=env)
    try:
        reader = StreamReader(bench.redis(), relay.prefix)
        time.sleep(SETTLE_S)
        warm = others.call(60, op="run", tag=f"w{variant}", rate=5 * len(rooms), seconds=1.0,
                           out=str(bench.workdir / "warm.json"))  # fmt: skip
        assert warm["ok"]
        reader.wait_for(list(json.loads((bench.workdir / "warm.json").read_text())), max_s=30)
        before = relay.dropped()
        cpu_before, started = cpu_s(relay.pid), time.monotonic()
        sent, reply, flooded, flood_reply = publish_both(bench, others, flood, variant, args)
        reader.wait_for(list(sent), max_s=60)
        # The flood's tail too: what the relay had not received yet when the others' was in.
        reader.wait_for(list(flooded), quiet_s=3.0, max_s=60)
        cpu_pct = (cpu_s(relay.pid) - cpu_before) / (time.monotonic() - started) * 100
        after = relay.dropped()
        dropped = {r: after.get(r, 0.0) - before.get(r, 0.0) for r in after}
        dropped = {r: n for r, n in dropped.items() if n}
        latencies = sorted(
            reader.found[i].entry_ms - at * 1000 for i, at in sent.items() if i in reader.found
        )
        return FloodResult(
            variant=variant,
            others_sent=len(sent),
            others_found=len(latencies),
            others_p50_ms=percentile(latencies, 0.5) if latencies else float("nan"),
            others_p99_ms=percentile(latencies, 0.99) if latencies else float("nan"),
            others_lag_max_ms=float(str(reply["lag_max_ms"])),
            flood_sent=len(flooded),
            flood_s=float(str(flood_reply["elapsed_s"])),
            flooded_written=sum(1 for i in flooded if i in reader.found),
            flooded_dropped=int(sum(dropped.get(r, 0.0) for r in LIMIT_REASONS)),
            dropped=dropped,
            relay_cpu_pct=cpu_pct,
        )
    finally:
        relay.stop()


def main(args: argparse.Namespace) -> int:
    rooms = [f"bench-{i}" for i in range(args.rooms)]
    load = os.getloadavg()
    print(
        f"flood: one room flooded (ceiling {args.flood_ceiling:g}/s) beside {args.rooms} rooms "
        f"at {args.rate:g} events/s in all, {args.seconds:g} s, order {','.join(args.order)}; "
        f"limits=on env {args.env or 'defaults'}; load average {load[0]:.2f} on "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    results: list[FloodResult] = []
    proc_timeout_s = 300 + len(args.order) * (args.seconds * 6 + 240)
    with Bench.open(proc_timeout_s) as bench:
        others = bench.load("publish", rooms)
        flood = bench.load("publish", [FLOODED])
        try:
            for variant in args.order:
                results.append(measure(bench, others, flood, rooms, variant, args))
                print(f"  limits={variant}: done", flush=True)
        finally:
            others.close()
            flood.close()
    report(results, args)
    return 0


def report(results: Sequence[FloodResult], args: argparse.Namespace) -> None:
    print(
        f"\n{'limits':>6} | {'others: sent':>12}{'lost':>6}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'pub lag':>9} | {'flood: sent':>11}{'/s':>7}{'written':>9}{'dropped':>9} | "
        f"{'relay cpu':>9}  drops by reason"
    )
    for r in results:
        print(
            f"{r.variant:>6} | {r.others_sent:>12}{r.others_sent - r.others_found:>6}"
            f"{r.others_p50_ms:>8.1f}{r.others_p99_ms:>8.1f}{r.others_lag_max_ms:>7.0f}ms | "
            f"{r.flood_sent:>11}{r.flood_eps:>7.0f}{r.flooded_written:>9}{r.flooded_dropped:>9} | "
            f"{r.relay_cpu_pct:>8.0f}%  {r.dropped or '-'}"
        )
    for r in results:
        if r.others_lag_max_ms > 100:
            print(
                f"limits={r.variant}: the others' publisher fell {r.others_lag_max_ms:.0f} ms "
                "behind its schedule: the machine is saturated (the flood and the relay "
                "share its cores with the dev server and the publishers)"
            )
    print()
    for r in results:
        print(
            f"flood limits={r.variant} others_p50_ms={r.others_p50_ms:.1f} "
            f"others_p99_ms={r.others_p99_ms:.1f} others_lost={r.others_sent - r.others_found} "
            f"flood_eps={r.flood_eps:.0f} flooded_written={r.flooded_written} "
            f"flooded_dropped={r.flooded_dropped}"
        )


def _env(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("RELAY_"):
        raise argparse.ArgumentTypeError(f"not NAME=VALUE with a RELAY_ name: {text!r}")
    return name, value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rooms", type=int, default=5, help="rooms with normal traffic")
    parser.add_argument("--rate", type=float, default=100.0, help="their events/s in all")
    parser.add_argument("--seconds", type=float, default=10.0, help="traffic and flood time")
    parser.add_argument("--flood-ceiling", type=float, default=20000.0, help="flood events/s")
    parser.add_argument(
        "--order", type=lambda s: s.split(","), default=["off", "on"], help="variants, in order"
    )
    parser.add_argument(
        "--env", type=_env, action="append", default=[], help="limits=on: RELAY_...=VALUE"
    )
    args = parser.parse_args(argv)
    if set(args.order) - {"on", "off"} or args.rooms < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--order: on/off; --rooms, --rate, --seconds: positive")
    return args


if __name__ == "__main__":
    try:
        sys.exit(main(parse_args()))
    except KeyboardInterrupt:  # the namespace and every process are gone by now
        print("interrupted", file=sys.stderr)
        sys.exit(130)
