"""Benchmark: what a fault does to accepted events, counted from the streams.

    .venv/bin/python bench/faults.py [--rate 1000] [--rooms 10] [--outage-s 30]
    sudo .venv/bin/python bench/faults.py --faults sfu_restart [--sfu-rooms 4] [--sfu-rate 40]
        [--sfu-down-s 5]
    sudo .venv/bin/python bench/faults.py --faults takeover_kill9 [--takeover-rooms 10]
        [--takeover-rate 300] [--takeover-standby both]

`redis_down`: events submitted to the pipeline (RedisStreamsSink into a private
redis-server on loopback) at `--rate`/s over `--rooms` rooms; ten seconds in, Redis is shut
down for `--outage-s` and started again (on its saved data); the submissions go on
throughout and ten seconds after, then the pipeline drains. Run with the write guard's
script and with the guard off. One line per run:

    fault=redis_down guard=script accepted=N in_stream=N lost=N duplicates=N

`relay_kill9`: `relay run` with the journal, taking browser ingest (relay/dev/ingest_rig.py:
accepted = items whose POST was answered 200) at `--rate`/s over `--rooms` rooms, killed
with SIGKILL five seconds in and started again on the same journal; once as it runs
(`stalled=no`), once with Redis's writes paused for the last two seconds before the kill
(`stalled=yes`: the buffer holds those seconds). `replayed` is what the restart read
back from the journal.

`disk_full`: the pipeline with its journal on a tmpfs of 1 MiB (journal.max_bytes far
above), Redis down, 5,000 events (a third `speakers.active`) submitted: the shed kinds go
first, then everything is refused, each counted; Redis back, the accepted all arrive.
Needs root (the mount).

lost = accepted, but no entry with its id in the all-events stream; duplicates = entries
beyond the first for one id.

`sfu_restart` (root: a network namespace, bench/harness.py): `relay run` observes
`--sfu-rooms` rooms of the dev server, a LiveAvatar agent in each (bench/lk_load.py
publish) sends `--sfu-rate` events/s in all; ten seconds in, the dev server is SIGKILLed
and started again on its address `--sfu-down-s` later; traffic goes on ten seconds after
the relay resumed. accepted = the events the relay's pipeline took (`accepted` of its
`relay_stopped` log line: relay_events_received_total, plus its own `observer.left`)
minus the repeats the write guard skipped (relay_duplicates_skipped_total{stream=
"events"}: an agent that re-joins re-announces its session, with the same id). What the
agent published while the server was away never reached the relay: `published` and
`unrelayed` (published, not in the stream) say how much that was. gap_ms: the longest
`observer.resumed` gap_ms of the rooms (each room's gap runs from the relay's loss of the
server to its re-join, so covers the downtime). One line:

    fault=sfu_restart accepted=N in_stream=N lost=N duplicates=N gap_ms=N downtime_ms=N
        published=N unrelayed=N repeats_skipped=N

`takeover_kill9` (root: a network namespace; bench/takeover.py): three `relay run` with
discovery and a journal each, `--takeover-rooms` rooms of the dev server with a LiveAvatar
agent each sending `--takeover-rate` events/s in all; each relay flushes a batch a
second (its buffer holds up to a second of events), and the one owning the most rooms is
SIGKILLed ten seconds in; the survivors take its rooms, it is started again on its
journal and replays. accepted = every event id the relays accepted:
the ids in the stream, plus those the victim's journal held unacknowledged at the kill
(`held`; relay/dev/takeover.py says why that is all of it); `unobserved`: published
events no relay saw (said in the takeover's gap, unless a standby saw them). Run with
`discovery.standby` off and on (`--takeover-standby no|yes|both`). One line per run:

    fault=takeover_kill9 accepted=N in_stream=N lost=N duplicates=N held=N standby=no
        replayed=N moved=N unwritten=N gap_ms=N publish_lag_max_ms=N published=N
        unobserved=N repeats=N

tests/e2e/test_takeover_journal.py prints the same line at a small load in `make test`.

`--faults` picks which run (comma-separated, default all).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, cast

from prometheus_client import REGISTRY
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Bench
from takeover import takeover_kill9

from relay.config import JournalSettings, PipelineSettings, RedisSettings
from relay.contract.event import Event
from relay.contract.kinds import EventKind
from relay.dev.ingest_rig import IngestRelay, Load, count
from relay.dev.launch import RedisServer, start_devserver
from relay.dev.ports import free_port
from relay.journal import Journal
from relay.pipeline import Pipeline
from relay.redis_client import create_redis
from relay.sinks import RedisStreamsSink

WARM_S = 10.0  # traffic before the outage, and after it


def event(room: str, n: int) -> Event:
    data = {"role": "avatar", "text": f"utterance {n}", "segment_id": f"{room}-{n}"}
    return Event(room, "liveavatar", "transcript.final", data, time.time(), dedupe_key=f"{n}")


async def redis_down(args: argparse.Namespace, server: RedisServer, guard: str) -> str:
    prefix = f"faults-{uuid.uuid4().hex[:6]}"
    settings = RedisSettings(url=SecretStr(server.url), prefix=prefix, socket_timeout_s=1)
    settings = settings.model_copy(update={"write_guard": guard})
    limits = PipelineSettings(retry_max_s=1.0, buffer_max_events=200_000)
    pipeline = Pipeline(limits, [RedisStreamsSink(create_redis(settings), settings)])
    flusher = asyncio.create_task(pipeline.run())
    rooms = [f"room-{n}" for n in range(args.rooms)]
    accepted = 0
    outage = asyncio.create_task(take_redis_down(server, args.outage_s))
    started = time.monotonic()
    while time.monotonic() - started < 2 * WARM_S + args.outage_s:
        for room in rooms:  # one event per room a round: rate / rooms rounds a second
            await pipeline.submit(event(room, accepted))
            accepted += 1
        await asyncio.sleep(max(0.0, started + accepted / args.rate - time.monotonic()))
    await outage
    unwritten = await pipeline.drain(60)
    await flusher
    reader = create_redis(settings)
    ids = Counter[bytes]()
    last = "-"
    while entries := await reader.xrange(f"{prefix}:events", min=last, count=10_000):
        ids.update(fields[b"id"] for _, fields in entries)
        last = "(" + entries[-1][0].decode()
    await reader.aclose()
    in_stream = len(ids)
    duplicates = sum(ids.values()) - in_stream
    return (
        f"fault=redis_down guard={guard} accepted={accepted} in_stream={in_stream} "
        f"lost={accepted - in_stream} duplicates={duplicates} unwritten={unwritten}"
    )


async def take_redis_down(server: RedisServer, outage_s: float) -> None:
    await asyncio.sleep(WARM_S)
    await asyncio.to_thread(server.stop)  # SHUTDOWN SAVE: the written entries survive
    await asyncio.sleep(outage_s)
    await asyncio.to_thread(server.start)


async def relay_kill9(args: argparse.Namespace, server: RedisServer, stalled: bool) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="faults-kill9-"))
    prefix = f"faults-{uuid.uuid4().hex[:6]}"
    port = free_port()
    relay = IngestRelay(server.url, prefix, port, workdir / "journal")
    relay.start(workdir / "relay-1.log")
    load = Load(f"http://127.0.0.1:{port}/v1/ingest", rooms=args.rooms, rate=args.rate)
    stop = asyncio.Event()
    redis = create_redis(RedisSettings(url=SecretStr(server.url)))
    sender = asyncio.create_task(load.run(stop))
    try:
        await asyncio.sleep(3.0)
        if stalled:
            await redis.client_pause(5000, all=False)
        await asyncio.sleep(2.0)
        relay.kill()
        stop.set()
        await sender
        if stalled:
            await redis.client_unpause()
        relay.start(workdir / "relay-2.log")
        replayed = relay.log_events("relay_started")[0]["journal_replayed"]
        result = await count(redis, prefix, load.accepted)
        for _ in range(100):
            if result.lost == 0:
                break
            await asyncio.sleep(0.1)
            result = await count(redis, prefix, load.accepted)
        relay.stop()
        tag = "yes" if stalled else "no"
        return result.line("relay_kill9", stalled=tag, replayed=replayed)
    finally:
        stop.set()
        relay.stop()
        await redis.aclose()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def small_disk(size: str) -> Iterator[Path]:
    """A tmpfs of `size` (root only), unmounted after."""
    disk = Path(tempfile.mkdtemp(prefix="faults-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
        shutil.rmtree(disk, ignore_errors=True)


async def disk_full(args: argparse.Namespace, server: RedisServer) -> str:
    with small_disk("1m") as disk:
        return await _disk_full(server, disk)


async def _disk_full(server: RedisServer, disk: Path) -> str:
    prefix = f"faults-{uuid.uuid4().hex[:6]}"
    settings = RedisSettings(url=SecretStr(server.url), prefix=prefix, socket_timeout_s=1)
    journal = Journal(JournalSettings(path=str(disk)), disk)
    limits = PipelineSettings(retry_initial_s=0.05, retry_max_s=0.5)
    redis = create_redis(settings)
    pipeline = Pipeline(limits, [RedisStreamsSink(redis, settings)], journal=journal)
    flusher = asyncio.create_task(pipeline.run())
    await asyncio.to_thread(server.stop)
    reasons = ("journal_shed", "journal_full", "journal_write_failed")
    before = {reason: _dropped(reason) for reason in reasons}
    for n in range(5000):
        kind: EventKind = "speakers.active" if n % 3 == 0 else "transcript.final"
        await pipeline.submit(dataclasses.replace(event(f"room-{n % 10}", n), kind=kind))
    drops = {reason: int(_dropped(reason) - before[reason]) for reason in reasons}
    await asyncio.to_thread(server.start)
    unwritten = await pipeline.drain(60)
    await flusher
    await journal.close()
    accepted = pipeline.accepted
    ids = Counter(fields[b"id"] for _, fields in await redis.xrange(f"{prefix}:events"))
    await redis.aclose()
    in_stream = len(ids)
    return (
        f"fault=disk_full accepted={accepted} in_stream={in_stream} "
        f"lost={accepted - in_stream} duplicates={sum(ids.values()) - in_stream} "
        f"submitted=5000 shed={drops['journal_shed']} full={drops['journal_full']} "
        f"write_failed={drops['journal_write_failed']} unwritten={unwritten}"
    )


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("relay_events_dropped_total", {"reason": reason}) or 0.0


def journal_runs(
    fault: Callable[[RedisServer], Coroutine[Any, Any, list[str]]], args: argparse.Namespace
) -> list[str]:
    """Run an async fault against a private Redis of its own; print its lines."""

    async def run() -> list[str]:
        server = RedisServer(Path(args.workdir) if args.workdir else None)
        server.start()
        try:
            return await fault(server)
        finally:
            server.close()

    lines = asyncio.run(run())
    for line in lines:
        print(line, flush=True)
    return lines


def relay_kill9_runs(args: argparse.Namespace) -> list[str]:
    async def both(server: RedisServer) -> list[str]:
        return [await relay_kill9(args, server, stalled) for stalled in (False, True)]

    return journal_runs(both, args)


def disk_full_runs(args: argparse.Namespace) -> list[str]:
    async def once(server: RedisServer) -> list[str]:
        return [await disk_full(args, server)]

    return journal_runs(once, args)


def redis_down_runs(args: argparse.Namespace) -> list[str]:
    return asyncio.run(redis_down_both(args))


async def redis_down_both(args: argparse.Namespace) -> list[str]:
    server = RedisServer(Path(args.workdir) if args.workdir else None)
    server.start()
    try:
        lines = []
        for guard in ("script", "off"):
            lines.append(await redis_down(args, server, guard))
            print(lines[-1], flush=True)
    finally:
        server.close()
    return lines


def sfu_restart(args: argparse.Namespace) -> str:
    """See the module docstring. Synchronous: the harness drives processes and threads."""
    rooms = [f"sfu-{uuid.uuid4().hex[:6]}-{n}" for n in range(args.sfu_rooms)]
    prefix = f"faults-{uuid.uuid4().hex[:6]}"
    with Bench.open(proc_timeout_s=300) as bench:
        relay = bench.start_relay(rooms, prefix, 60, extra_env={"RELAY_LOG__LEVEL": "info"})
        load = bench.load("publish", rooms)
        seconds = WARM_S + args.sfu_down_s + 2 * WARM_S  # the re-join takes a few seconds
        out = bench.workdir / "sent.json"
        publish = threading.Thread(
            target=load.call,
            args=(seconds + 60,),
            kwargs={
                "op": "run",
                "tag": "sfu",
                "rate": args.sfu_rate,
                "seconds": seconds,
                "out": str(out),
            },
        )
        publish.start()
        time.sleep(WARM_S)
        killed = time.monotonic()
        os.killpg(bench.server.proc.pid, signal.SIGKILL)  # `timeout` and the server
        bench.server.proc.popen.wait(10)
        bench.server.proc.stop()
        time.sleep(max(0.0, killed + args.sfu_down_s - time.monotonic()))
        downtime_ms = (time.monotonic() - killed) * 1000
        bench.server = start_devserver(
            bench.ns,
            port=bench.server.port,
            extra_args=["--log-level", "error"],
            proc_timeout_s=bench.proc_timeout_s,
        )
        publish.join()
        load.close()
        time.sleep(3.0)  # the last packets through the relay to Redis
        _, text = relay.get("/metrics")
        relay.stop()
        stopped = [
            json.loads(line)
            for line in (bench.workdir / f"relay-{prefix}.log").read_text().splitlines()
            if '"relay_stopped"' in line
        ]
        client = bench.redis()
        ids = Counter[str]()
        event_ids: set[str] = set()
        gaps = []
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(f"{prefix}:events"))
        for _, fields in entries:
            event = json.loads(fields[b"event"])
            ids[event["id"]] += 1
            event_ids.add(event["source"].get("event_id"))
            if event["kind"] == "observer.resumed":
                gaps.append(int(event["data"]["gap_ms"]))
        client.close()
        published = json.loads(out.read_text())
    skipped = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('relay_duplicates_skipped_total{stream="events"}')
    )
    accepted = int(stopped[0]["accepted"] - skipped) if stopped else -1
    in_stream = len(ids)
    unrelayed = sum(1 for event_id in published if event_id not in event_ids)
    return (
        f"fault=sfu_restart accepted={accepted} in_stream={in_stream} "
        f"lost={accepted - in_stream} duplicates={sum(ids.values()) - in_stream} "
        f"gap_ms={max(gaps, default=-1)} downtime_ms={downtime_ms:.0f} "
        f"published={len(published)} unrelayed={unrelayed} repeats_skipped={skipped:.0f}"
    )


def sfu_restart_runs(args: argparse.Namespace) -> list[str]:
    line = sfu_restart(args)
    print(line, flush=True)
    return [line]


def takeover_kill9_runs(args: argparse.Namespace) -> list[str]:
    both = {"no": [False], "yes": [True], "both": [False, True]}[args.takeover_standby]
    lines = []
    for standby in both:
        lines.append(takeover_kill9(args.takeover_rooms, args.takeover_rate, standby))
        print(lines[-1], flush=True)
    return lines


# Each runs its fault (the rig's signal handlers need the main thread: no loop around it).
FAULTS: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "redis_down": redis_down_runs,
    "relay_kill9": relay_kill9_runs,
    "disk_full": disk_full_runs,
    "sfu_restart": sfu_restart_runs,
    "takeover_kill9": takeover_kill9_runs,
}


def main(args: argparse.Namespace) -> int:
    names = args.faults.split(",") if args.faults else list(FAULTS)
    unknown = sorted(set(names) - set(FAULTS))
    if unknown:
        print(f"unknown faults {unknown}; known: {', '.join(FAULTS)}", file=sys.stderr)
        return 2
    for name in names:
        FAULTS[name](args)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s in all")
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--workdir", default="", help="redis-server's directory")
    parser.add_argument("--faults", default="", help="comma-separated; default all")
    parser.add_argument("--sfu-rooms", type=int, default=4)
    parser.add_argument("--sfu-rate", type=float, default=40.0, help="events/s in all")
    parser.add_argument("--sfu-down-s", type=float, default=5.0)
    parser.add_argument("--takeover-rooms", type=int, default=10)
    parser.add_argument("--takeover-rate", type=float, default=300.0, help="events/s in all")
    parser.add_argument("--takeover-standby", choices=["no", "yes", "both"], default="both")
    sys.exit(main(parser.parse_args()))
