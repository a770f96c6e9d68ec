"""Benchmark: events per second one ingest endpoint accepts, in batches of 50.

`relay run` (no rooms, ingest on) writes to a private Redis on loopback; `--sessions`
browser stand-ins each post batches of `--batch` LiveAvatar `avatar.transcription.chunk`
items to `POST /v1/ingest` in a closed loop (the next batch when the answer came) for
`--seconds`, each with its own ingest token. Every item's `ts` is the client's clock when
its batch was built (what a browser stamps on receive); client, relay and Redis share
this machine's clock.

- ingest_eps: items accepted per second over the window (answers' `accepted`).
- p99_ms: a batch's request latency (post to answer), 99th percentile.
- receive_to_redis: the Redis entry id's time (Redis's clock at the relay's XADD, whole
  ms, truncated) minus the item's `ts`: browser receive to Redis, less the network.

    .venv/bin/python bench/ingest.py [--seconds 10] [--sessions 8] [--batch 50] [--pace-ms 0]

With `--pace-ms`, each page pauses between batches: `--sessions 1 --pace-ms 100` (500
items/s) gives the latency of a relay that is not saturated.

Needs redis-server. The last line is machine-readable: `ingest_eps=N p99_ms=X`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import percentile

from relay.dev.launch import RedisServer
from relay.dev.ports import free_port
from relay.ingest import mint_ingest_token

SECRET = "bench-ingest-secret-0123456789abcdef0123"


def items(session: str, start_seq: int, count: int) -> list[dict[str, Any]]:
    now_ms = time.time() * 1000
    out = []
    for n in range(start_seq, start_seq + count):
        payload = {
            "event_id": f"{session}-{n}",
            "event_type": "avatar.transcription.chunk",
            "session_id": session,
            "source_event_id": f"cmd-{n // 20}",
            "text": "Your order ships by Thursday. ",
        }
        out.append(
            {
                "seq": n,
                "ts": now_ms,
                "type": "data",
                "topic": "agent-response",
                "sender": {"identity": f"liveavatar-agent-{session}", "sid": None, "kind": "agent"},
                "payload": json.dumps(payload),
            }
        )
    return out


async def poster(
    http: aiohttp.ClientSession, url: str, room: str, until: float, args: argparse.Namespace
) -> tuple[int, list[float]]:
    batch = args.batch
    session = uuid.uuid4().hex[:8]
    token = mint_ingest_token(SECRET, room=room, session=session, ttl_s=3600)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    accepted, latencies, seq = 0, [], 1
    while time.monotonic() < until:
        body = {
            "room": room,
            "session": session,
            "client": "bench",
            "items": items(session, seq, batch),
        }
        seq += batch
        started = time.perf_counter()
        async with http.post(url, data=json.dumps(body), headers=headers) as response:
            answer = await response.json()
            if response.status != 200:
                raise RuntimeError(f"ingest answered {response.status}: {answer}")
        latencies.append((time.perf_counter() - started) * 1000)
        accepted += answer["accepted"]
        if args.pace_ms:
            await asyncio.sleep(args.pace_ms / 1000)
    return accepted, latencies


def start_relay(redis_url: str, prefix: str, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env |= {
        "RELAY_REDIS__URL": redis_url,
        "RELAY_REDIS__PREFIX": prefix,
        "RELAY_HTTP__HOST": "127.0.0.1",
        "RELAY_HTTP__PORT": str(port),
        "RELAY_INGEST__SECRET": SECRET,
        "RELAY_INGEST__RATE_ITEMS_PER_S": "1000000",
        "RELAY_INGEST__BURST_ITEMS": "1000000",
        "RELAY_LOG__LEVEL": "warning",
    }
    argv = [sys.executable, "-m", "relay", "run"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_ready(base: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("relay never became ready")
            await asyncio.sleep(0.1)


def receive_to_redis_ms(client: redis.Redis, prefix: str) -> list[float]:
    """Over the all-rooms stream (a room's stream is trimmed at redis.room_maxlen)."""
    out: list[float] = []
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(f"{prefix}:events")  # type: ignore[assignment]
    for entry_id, fields in entries:
        written_ms = int(entry_id.split(b"-")[0])
        event = json.loads(fields[b"event"])
        received_ms = datetime.fromisoformat(event["ts"]).timestamp() * 1000
        out.append(written_ms - received_ms)
    return sorted(out)


async def run(args: argparse.Namespace, redis_url: str) -> None:
    prefix, port = f"bench-ingest-{uuid.uuid4().hex[:8]}", free_port()
    base = f"http://127.0.0.1:{port}"
    relay = start_relay(redis_url, prefix, port)
    try:
        await wait_ready(base)
        rooms = [f"room-{n}" for n in range(args.sessions)]
        connector = aiohttp.TCPConnector(limit=args.sessions)
        async with aiohttp.ClientSession(connector=connector) as http:
            started = time.monotonic()
            until = started + args.seconds
            results = await asyncio.gather(
                *(poster(http, f"{base}/v1/ingest", room, until, args) for room in rooms)
            )
            elapsed = time.monotonic() - started
        await asyncio.sleep(1)  # the last batches reach Redis
        accepted = sum(count for count, _ in results)
        latencies = sorted(ms for _, lat in results for ms in lat)
        with redis.Redis.from_url(redis_url) as client:
            lag = receive_to_redis_ms(client, prefix)
        print(f"batches={len(latencies)} accepted={accepted} written={len(lag)}")
        print(
            f"receive_to_redis_p50_ms={percentile(lag, 0.5):.1f} "
            f"receive_to_redis_p99_ms={percentile(lag, 0.99):.1f}"
        )
        print(f"request_p50_ms={percentile(latencies, 0.5):.1f}")
        print(f"ingest_eps={accepted / elapsed:.0f} p99_ms={percentile(latencies, 0.99):.1f}")
    finally:
        relay.terminate()
        relay.wait(timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=8, help="concurrent posting pages")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--pace-ms", type=float, default=0, help="pause between a page's batches")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            asyncio.run(run(args, server.url))
        finally:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
