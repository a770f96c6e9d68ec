"""Benchmark: the livekit SDK's own memory per room joined and left, without the relay.

The soak (bench/soak.py) sees the relay's RSS grow with every room it joins and leaves,
far more than its Python heap does. This tells whose that is: one plain SDK process (no
relay code) joins a new room as a hidden, receive-only participant (as the relay's
observer does), receives `--packets` data packets from a second participant of the same
process, and leaves both, `--cycles` times; its RSS (VmRSS) is read after each cycle.
`--parallel P` plays P such rooms at once per cycle; `--hold-s S` spreads a room's
packets over S seconds (the soak's rooms live 30 s).
`--keep` keeps a reference to every disconnected `rtc.Room` (what a disconnected room
costs while something still holds it). `--trim` calls glibc's malloc_trim(0) after each
cycle; `MALLOC_ARENA_MAX` etc. pass through the environment.

    sudo .venv/bin/python bench/sdk_churn.py [--cycles 80] [--packets 150] [--trim]
        [--parallel 1] [--hold-s 0]

Inside the bench's network namespace with the dev server (bench/harness.py). One line:
    sdk_churn cycles=N parallel=P hold_s=S packets=K rss_start_mb=X rss_end_mb=Y
        kb_per_room=Z trim=yes|no malloc_arena_max=M
(start: after the first `--warmup` cycles; kb_per_room: the growth over the rooms after).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Bench, rss_mb

CONNECT_TIMEOUT_S = 10.0


async def churn(args: argparse.Namespace) -> list[float]:
    """Inside the namespace: the RSS after each cycle (MB)."""
    from livekit import rtc  # the inner process only
    from lk_load import token  # the load clients' tokens: hidden observer, agent publisher

    url, packets = args.inner, args.packets
    kept: list[rtc.Room] = []
    libc = ctypes.CDLL("libc.so.6")
    options = rtc.RoomOptions(auto_subscribe=False, connect_timeout=CONNECT_TIMEOUT_S)

    async def one_room(name: str) -> None:
        observer, publisher = rtc.Room(), rtc.Room()
        received = asyncio.Event()
        count = 0

        def on_data(packet: rtc.DataPacket) -> None:
            nonlocal count
            count += 1
            if count >= packets:
                received.set()

        observer.on("data_received", on_data)
        # Never cancelled (a cancelled connect upsets the SDK): connect_timeout bounds it.
        await observer.connect(url, token(name, "observer", hidden=True), options)
        await publisher.connect(url, token(name, "agent", hidden=False), options)
        for n in range(packets):
            payload = json.dumps({"n": n, "text": "word " * 8}).encode()
            await publisher.local_participant.publish_data(payload, topic="agent-response")
            await asyncio.sleep(args.hold_s / max(1, packets))
        if packets:
            await asyncio.wait_for(received.wait(), 30)
        await publisher.disconnect()
        await observer.disconnect()
        if args.keep:
            kept.append(observer)

    samples = []
    for cycle in range(args.cycles):
        names = [f"churn-{cycle}-{n}-{uuid.uuid4().hex[:4]}" for n in range(args.parallel)]
        await asyncio.gather(*(one_room(name) for name in names))
        if args.trim:
            libc.malloc_trim(0)
        samples.append(rss_mb(os.getpid()))
    return samples


def main(args: argparse.Namespace) -> int:
    with Bench.open(proc_timeout_s=1800) as bench:
        env = {
            **os.environ,
            "LIVEKIT_API_KEY": bench.server.api_key,
            "LIVEKIT_API_SECRET": bench.server.api_secret,
        }
        argv = [sys.executable, __file__, "--inner", bench.server.ws_url]
        argv += ["--cycles", str(args.cycles), "--packets", str(args.packets)]
        argv += ["--parallel", str(args.parallel), "--hold-s", str(args.hold_s)]
        argv += ["--trim"] if args.trim else []
        argv += ["--keep"] if args.keep else []
        proc = bench.ns.spawn(
            argv, name="sdk_churn", timeout_s=1800, env=env, stderr=bench.log("sdk_churn")
        )
        out, _ = proc.popen.communicate(timeout=1800)
        if proc.popen.returncode != 0:
            print(f"sdk_churn inner process failed: exit {proc.popen.returncode}")
            return 1
    samples = json.loads(out.decode().strip().splitlines()[-1])
    start, end = samples[args.warmup - 1], samples[-1]
    per_room = (end - start) * 1024 / ((len(samples) - args.warmup) * args.parallel)
    print(
        f"sdk_churn cycles={len(samples)} parallel={args.parallel} hold_s={args.hold_s:g} "
        f"packets={args.packets} rss_start_mb={start:.1f} "
        f"rss_end_mb={end:.1f} kb_per_room={per_room:.0f} trim={'yes' if args.trim else 'no'}"
        f" keep={'yes' if args.keep else 'no'}"
        f" malloc_arena_max={os.environ.get('MALLOC_ARENA_MAX', 'unset')}"
    )
    every = max(1, len(samples) // 8)
    print(" ".join(f"{n + 1}:{mb:.1f}" for n, mb in enumerate(samples) if n % every == 0))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=80)
    parser.add_argument("--packets", type=int, default=150, help="per room")
    parser.add_argument("--warmup", type=int, default=10, help="cycles before rss_start")
    parser.add_argument("--parallel", type=int, default=1, help="rooms at once")
    parser.add_argument("--hold-s", type=float, default=0.0, help="a room's life")
    parser.add_argument("--keep", action="store_true", help="hold each disconnected room")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) after each cycle")
    parser.add_argument("--inner", metavar="URL", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.inner:
        print(json.dumps(asyncio.run(churn(parsed))))
        sys.exit(0)
    sys.exit(main(parsed))
