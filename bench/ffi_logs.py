"""Benchmark: how many native log records the livekit SDK forwards to Python per packet.

The SDK's native side calls one Python callback (`livekit.rtc._ffi_client.
ffi_event_callback`) for every FfiEvent, log batches included; Python parses each one
and, for libwebrtc/livekit debug records, throws it away. This runs `relay run`
(bench/harness.py: namespace, dev server, Redis) under a wrapper that counts the
callback's calls by kind (log batch or not: the first byte of the serialized event, the
protobuf tag of the `logs` field) and their bytes, while one publisher sends `--rate`
packets/s for `--seconds` into one room; once with the relay's defaults and once per
`--env` variant (e.g. `RUST_LOG=warn`, `RELAY_LIVEKIT__NATIVE_LOGS=native`). The counts
cover the relay's whole life (connect, warm-up, traffic, leave) over the packets sent.

    sudo .venv/bin/python bench/ffi_logs.py [--rate 300] [--seconds 5] [--env RUST_LOG=warn]

Ends with one line per variant:
    variant=V log_events_per_packet=X log_bytes_per_packet=Y cpu_us_per_event=Z
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import json
import os
import runpy
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Bench, LoadClient, StreamReader, cpu_s
from rooms import TRAFFIC_ROOM, publish

LOGS_TAG = bytes([(18 << 3) | 2, 0x01])  # FfiEvent.logs = 18, length-delimited, as a varint


def counted_relay(out: str) -> None:
    """Inside the namespace: `relay run` with the SDK callback wrapped by a counter."""
    from livekit.rtc import _ffi_client

    original = _ffi_client.ffi_event_callback
    counts = {"events": 0, "event_bytes": 0, "logs": 0, "log_bytes": 0, "records": 0}

    @ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t)  # type: ignore[untyped-decorator]
    def counting(data_ptr: Any, data_len: int) -> None:
        size = int(data_len)
        if ctypes.string_at(data_ptr, 2) == LOGS_TAG:
            counts["logs"] += 1
            counts["log_bytes"] += size
        else:
            counts["events"] += 1
            counts["event_bytes"] += size
        original(data_ptr, data_len)

    _ffi_client.ffi_event_callback = counting  # read by FfiClient() when it initializes
    atexit.register(lambda: Path(out).write_text(json.dumps(counts)))
    sys.argv = ["relay", "run"]
    runpy.run_module("relay", run_name="__main__")


def measure(
    bench: Bench, pub: LoadClient, env: dict[str, str], args: argparse.Namespace
) -> dict[str, float]:
    out = bench.workdir / f"counts-{uuid.uuid4().hex[:6]}.json"
    argv = [sys.executable, __file__, "--inner", str(out)]
    prefix = f"logs-{uuid.uuid4().hex[:6]}"
    relay = bench.start_relay([TRAFFIC_ROOM], prefix, 60, extra_env=env, argv=argv)
    try:
        reader = StreamReader(bench.redis(), relay.prefix)
        time.sleep(2.0)
        warm = publish(bench, pub, f"w{prefix}", 50.0, 1.0)
        reader.wait_for(warm, max_s=30)
        before = cpu_s(relay.pid)
        sent = publish(bench, pub, f"t{prefix}", args.rate, args.seconds)
        written, _ = reader.wait_for(sent, max_s=60)
        used = cpu_s(relay.pid) - before
    finally:
        relay.stop()
    counts = json.loads(out.read_text())
    packets = len(warm) + len(sent)
    return {
        "packets": packets,
        "written": written,
        "logs_per_packet": counts["logs"] / packets,
        "log_bytes_per_packet": counts["log_bytes"] / packets,
        "events_per_packet": counts["events"] / packets,
        "cpu_us_per_event": used / written * 1e6 if written else float("nan"),
    }


def main(args: argparse.Namespace) -> int:
    variants: dict[str, dict[str, str]] = {"default": {}}
    for item in args.env:
        key, _, value = item.partition("=")
        variants[item] = {key: value}
    print(
        f"ffi_logs: {args.rate:g} packets/s for {args.seconds:g} s; load average "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results: dict[str, dict[str, float]] = {}
    with Bench.open(proc_timeout_s=600) as bench:
        pub = bench.load("publish", [TRAFFIC_ROOM])
        try:
            for name, env in variants.items():
                results[name] = measure(bench, pub, env, args)
                print(f"  {name}: {results[name]}", flush=True)
        finally:
            pub.close()
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    for name, r in results.items():
        print(
            f"variant={name} log_events_per_packet={r['logs_per_packet']:.2f} "
            f"log_bytes_per_packet={r['log_bytes_per_packet']:.0f} "
            f"cpu_us_per_event={r['cpu_us_per_event']:.0f}"
        )
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=300.0, help="packets/s into one room")
    parser.add_argument("--seconds", type=float, default=5.0, help="traffic time")
    parser.add_argument("--env", action="append", default=[], help="a variant: NAME=VALUE")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parsed = parse_args()
    if parsed.inner:
        counted_relay(parsed.inner)
    else:
        sys.exit(main(parsed))
