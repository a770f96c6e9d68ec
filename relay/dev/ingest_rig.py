"""A rig for the process faults: `relay run` on loopback taking browser ingest, a load
that counts what the relay accepted, and the count of what reached the streams.

The ingest path needs no WebRTC, so a relay killed with SIGKILL can be measured exactly:
an item is *accepted* when its POST was answered 200 with it counted in `accepted` (the
relay answers after every event of the batch went through `submit()`, journaled when
the journal is on). Each item carries an `event_id` of its own, which its event keeps in
`source.event_id`, so the streams tell which accepted items arrived and how often.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from relay.dev.processes import ManagedProcess
from relay.ingest import mint_ingest_token

SECRET = "ingest-rig-secret-0123456789abcdef0123"


@dataclass
class IngestRelay:
    """`relay run` with ingest on `port`, writing to `redis_url` under `prefix`."""

    redis_url: str
    prefix: str
    port: int
    journal: Path | None
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: ManagedProcess | None = None
    log_path: Path | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env.update(
            RELAY_REDIS__URL=self.redis_url,
            RELAY_REDIS__PREFIX=self.prefix,
            RELAY_REDIS__SOCKET_TIMEOUT_S="1",
            RELAY_HTTP__HOST="127.0.0.1",
            RELAY_HTTP__PORT=str(self.port),
            RELAY_INGEST__SECRET=SECRET,
            RELAY_INGEST__ALLOWED_ORIGINS='["*"]',
            RELAY_INGEST__RATE_ITEMS_PER_S="100000",
            RELAY_INGEST__BURST_ITEMS="100000",
            RELAY_PIPELINE__RETRY_MAX_S="0.5",
            RELAY_LOG__FORMAT="json",
        )
        if self.journal is not None:
            env["RELAY_JOURNAL__PATH"] = str(self.journal)
        env.update(self.extra_env)
        return env

    def start(self, log_path: Path, timeout_s: float = 20.0) -> None:
        self.log_path = log_path
        log = open(log_path, "ab")  # noqa: SIM115 (the process owns it)
        popen = subprocess.Popen(
            [sys.executable, "-m", "relay", "run"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.proc = ManagedProcess("relay", popen)
        deadline = time.monotonic() + timeout_s
        while b'"relay_started"' not in log_path.read_bytes():
            if not self.proc.alive():
                raise RuntimeError(f"relay exited: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"relay did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def log_events(self, event: str) -> list[dict[str, Any]]:
        assert self.log_path is not None
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                out.append(record)
        return out

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    def stop(self) -> int | None:
        return self.proc.stop(grace_s=30) if self.proc is not None else None


@dataclass
class Load:
    """Posts batches of LiveAvatar user transcripts over `rooms` rooms at about `rate`
    items/s; `accepted` holds the event ids the relay accepted."""

    url: str
    rooms: int
    rate: float
    batch_items: int = 10
    accepted: set[str] = field(default_factory=set)
    refused: int = 0  # items answered otherwise (a relay killed mid-request, a 503)
    _sent: int = 0

    async def run(self, until: asyncio.Event) -> None:
        tokens = {
            f"rig-room-{n}": mint_ingest_token(
                SECRET, room=f"rig-room-{n}", session=f"rig-sess-{n}", ttl_s=3600
            )
            for n in range(self.rooms)
        }
        client = uuid.uuid4().hex[:8]
        round_s = self.rooms * self.batch_items / self.rate  # one batch per room a round
        started, rounds = time.monotonic(), 0
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not until.is_set():
                posts = [self._post(http, room, token, client) for room, token in tokens.items()]
                await asyncio.gather(*posts)
                rounds += 1
                delay = started + rounds * round_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def _post(self, http: aiohttp.ClientSession, room: str, token: str, client: str) -> None:
        n = room.rsplit("-", 1)[1]
        items, ids = [], []
        for _ in range(self.batch_items):
            self._sent += 1
            event_id = f"{client}-{self._sent}"
            ids.append(event_id)
            payload = {
                "event_id": event_id,
                "event_type": "user.transcription",
                "session_id": f"rig-sess-{n}",
                "text": f"utterance {self._sent}",
            }
            items.append(
                {
                    "seq": self._sent,
                    "ts": time.time() * 1000,
                    "type": "data",
                    "topic": "agent-response",
                    "sender": {"identity": f"liveavatar-agent-{n}", "sid": "PA", "kind": "agent"},
                    "payload": json.dumps(payload),
                }
            )
        body = {"room": room, "session": f"rig-sess-{n}", "client": client, "items": items}
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with http.post(self.url, json=body, headers=headers) as response:
                answer = await response.json() if response.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError):
            answer = {}
        if answer.get("accepted") == len(items):
            self.accepted.update(ids)
        else:
            self.refused += len(items)


@dataclass(frozen=True)
class Count:
    accepted: int
    in_stream: int
    lost: int
    duplicates: int

    def line(self, fault: str, **extra: object) -> str:
        fields = " ".join(f"{key}={value}" for key, value in extra.items())
        head = f"fault={fault} accepted={self.accepted} in_stream={self.in_stream}"
        return f"{head} lost={self.lost} duplicates={self.duplicates} {fields}".rstrip()


async def count(redis: aioredis.Redis, prefix: str, accepted: set[str]) -> Count:
    """What of `accepted` the all-events stream holds: ids once each, missing, repeated.
    Repeats are counted by the relay's event id (one per accepted item)."""
    seen: Counter[str] = Counter()
    by_id: Counter[str] = Counter()
    start = "-"
    while True:
        entries = await redis.xrange(f"{prefix}:events", min=start, count=5000)
        for _, fields in entries:
            event = json.loads(fields[b"event"])
            source_id = event.get("source", {}).get("event_id")
            if source_id is not None:
                seen[source_id] += 1
                by_id[event["id"]] += 1
        if len(entries) < 5000:
            break
        start = "(" + entries[-1][0].decode()
    arrived = accepted & set(seen)
    return Count(
        accepted=len(accepted),
        in_stream=len(arrived),
        lost=len(accepted - arrived),
        duplicates=sum(n - 1 for n in by_id.values() if n > 1),
    )
