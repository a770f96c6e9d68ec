"""Conversation analytics end to end: real SDK clients play a LiveAvatar session with
known timings through the dev server, `relay run` relays it, `relay analytics` (a
process) summarizes it; the latencies and speaking times match the script.

Tolerance: each measured time is a difference of two receive times at the relay, each
late by the SDK, the dev server and the event loops (a few ms on an idle machine); the
test allows TOLERANCE_MS per figure, for a shared 2-core machine."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from typing import Any

import aiohttp
import pytest

from relay.analytics.views import SessionReader
from relay.config import RedisSettings
from relay.dev.launch import DevServer, RedisServer
from relay.dev.netns import NetNS
from tests.e2e.support import StartRelay, Streams, actor, unique
from tests.fixtures.sockets import free_port

pytestmark = pytest.mark.e2e
TOLERANCE_MS = 150
TURNS = [(1.0, 0.6, 1.2), (0.7, 0.3, 0.9)]  # user speaks, latency, avatar speaks (s)


async def test_a_timed_session_is_summarized_as_played(
    e2e_ns: NetNS,
    e2e_devserver: DevServer,
    e2e_redis: RedisServer,
    streams: Streams,
    start_relay: StartRelay,
) -> None:
    room, session_id = unique("timed"), uuid.uuid4().hex[:8]
    relay = start_relay(rooms=[room])
    await relay.wait_ready()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env |= {"RELAY_REDIS__URL": e2e_redis.url, "RELAY_REDIS__PREFIX": streams.prefix}
    env["RELAY_ANALYTICS__SWEEP_INTERVAL_S"] = "0.2"
    port = free_port()
    env |= {"RELAY_HTTP__HOST": "127.0.0.1", "RELAY_ANALYTICS__METRICS_PORT": str(port)}
    analytics = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "analytics",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        turns = ",".join(":".join(str(x) for x in t) for t in TURNS)
        args = ["--room", room, "--session-id", session_id, "--turns", turns]
        async with actor(e2e_ns, e2e_devserver, "timed", *args) as scenario:
            await scenario.result()
        reader = SessionReader(streams.redis, RedisSettings(prefix=streams.prefix))
        summary = await wait_summary(reader, session_id)
        metrics = await scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        analytics.send_signal(signal.SIGTERM)  # the process we started, by its PID
        out, _ = await asyncio.wait_for(analytics.communicate(), 10)
    assert analytics.returncode == 0, out.decode(errors="replace")
    check_timings(summary)
    assert 'relay_sessions_total{end_reason="session_stopped"} 1.0' in metrics
    assert 'relay_turn_response_seconds_count{pair="user->avatar"} 2.0' in metrics
    assert 'relay_interruptions_total{kind="command"} 0.0' in metrics


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return await response.text()


async def wait_summary(reader: SessionReader, session_id: str) -> dict[str, Any]:
    for _ in range(200):
        found = await reader.by_id(session_id)
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no summary of {session_id} within 20 s")


def check_timings(summary: dict[str, Any]) -> None:
    measured = [t["latency_ms"] for t in summary["turns"]], summary["speaking_ms"]
    print(f"analytics e2e: latencies and speaking ms {measured}")
    assert summary["end_reason"] == "session_stopped"
    assert summary["speech_signals"] == {"user": "speech_events", "avatar": "speech_events"}
    turns = summary["turns"]
    assert len(turns) == len(TURNS)
    for turn, (_user_s, latency_s, _avatar_s) in zip(turns, TURNS, strict=True):
        assert turn["response_role"] == "avatar"
        assert abs(turn["latency_ms"] - latency_s * 1000) <= TOLERANCE_MS, turn
    user_ms = sum(t[0] for t in TURNS) * 1000
    avatar_ms = sum(t[2] for t in TURNS) * 1000
    assert abs(summary["speaking_ms"]["user"] - user_ms) <= TOLERANCE_MS * len(TURNS)
    assert abs(summary["speaking_ms"]["avatar"] - avatar_ms) <= TOLERANCE_MS * len(TURNS)
    assert summary["interruptions"]["total"] == 0
    assert summary["overlap_ms"] == 0
    texts = [(u["role"], u["text"]) for u in summary["transcript"]]
    expected = [
        (r, f"{w} number {n}")
        for n in range(len(TURNS))
        for r, w in (("user", "question"), ("avatar", "answer"))
    ]
    assert texts == expected
    assert {p["identity"]: p["role"] for p in summary["participants"]}["heygen"] == "avatar"
