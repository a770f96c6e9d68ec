"""The SFU dies mid-conversation (SIGKILL) and comes back on the same address: the relay
re-joins, announces the gap with its length, and relays everything sent around it.

A LiveAvatar agent talks through the whole outage (`conversations --keep-going`). The dev
server keeps no state across a restart, so the relay and the agent both come back as new
participants. What must hold: nothing written twice; the observer's own events in order
(joined, reconnecting, resumed with `gap_ms`, left); the announced gap covers the downtime;
every event the agent sent is in the stream except those sent inside the announced gap
(or before the agent itself was back), and those sent after are relayed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from relay.dev.launch import start_devserver
from relay.dev.netns import NetNS
from tests.e2e.support import Event, StartRelay, Streams, actor, unique

pytestmark = pytest.mark.e2e

DOWNTIME_S = 2.0
INTERVAL_S = 0.05  # the agent: twenty events a second
SLACK_MS = 300  # publish_data returns before the SFU forwarded the packet
SERVER_ARGS = ["--departure-timeout", "0.5"]
AFTER = 30  # the agent's events relayed after the re-join before the test ends
SESSION_STARTED = (
    "relay_events_received_total",
    frozenset({("protocol", "liveavatar"), ("kind", "session.started")}),
)


def epoch_ms(event: Event) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp() * 1000


def relayed_after_resume(count: int) -> Any:
    """A check: `count` of the agent's events written after `observer.resumed`."""

    def check(events: list[Event]) -> bool:
        kinds = [e["kind"] for e in events]
        if "observer.resumed" not in kinds:
            return False
        after = events[kinds.index("observer.resumed") :]
        return sum(1 for e in after if e["source"].get("event_id")) >= count

    return check


def has_event_id(event_id: str) -> Any:
    def check(events: list[Event]) -> bool:
        return any(e["source"].get("event_id") == event_id for e in events)

    return check


async def test_a_killed_and_restarted_sfu_costs_only_the_announced_gap(
    e2e_ns: NetNS, streams: Streams, start_relay: StartRelay
) -> None:
    room = unique("sfu-restart")
    server = start_devserver(e2e_ns, extra_args=SERVER_ARGS)
    try:
        relay = start_relay(rooms=[room], server=server)
        await relay.wait_ready()
        args = ["--room", room, "--interval-s", str(INTERVAL_S), "--keep-going"]
        async with actor(e2e_ns, server, "conversations", *args) as talk:
            assert await talk.next_line(30) == {"ready": True}
            await streams.wait_room(room, has_event_id(f"{room}-20"))
            killed_ms = time.time() * 1000
            os.killpg(server.proc.pid, signal.SIGKILL)  # `timeout` and the server: no goodbye
            await asyncio.to_thread(server.proc.popen.wait, 10)
            server.proc.stop()
            await asyncio.sleep(DOWNTIME_S - (time.time() * 1000 - killed_ms) / 1000)
            restarted_ms = time.time() * 1000
            server = start_devserver(e2e_ns, port=server.port, extra_args=SERVER_ARGS)
            await streams.wait_room(room, relayed_after_resume(AFTER), timeout_s=30)
        result = await talk.result()
        sent: list[tuple[str, int]] = result["sent"][room]
        await streams.wait_room(room, has_event_id(sent[-1][0]), timeout_s=15)
        metrics = await relay.metrics()
        stopped = await relay.stop()
    finally:
        server.proc.stop()
    assert stopped.returncode == 0
    assert metrics[("relay_room_reconnects_total", frozenset())] == 1
    events = await streams.room_events(room)
    # Seq rises by one a relayed event; the one hole is the agent's second
    # session.started (it re-joined): its id comes from the session id, so the write guard
    # kept the first one only.
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))
    holes = set(range(1, seqs[-1] + 1)) - set(seqs)
    assert len(holes) == metrics[SESSION_STARTED] - 1 == 1, holes
    relayed = Counter(e["source"].get("event_id") for e in events if e["source"].get("event_id"))
    assert not [i for i, n in relayed.items() if n > 1], "written twice"

    observer = [e for e in events if e["kind"].startswith("observer.")]
    kinds = [e["kind"] for e in observer]
    assert kinds == [
        "observer.joined",
        "observer.reconnecting",
        "observer.resumed",
        "observer.left",
    ]
    assert events[0]["kind"] == "observer.joined" and events[-1]["kind"] == "observer.left"
    lost_at, resumed = observer[1], observer[2]

    # The announced gap: from the relay's loss of the server to its re-join, covering the
    # downtime (it cannot start before the kill, nor end before the restart).
    gap_ms = resumed["data"]["gap_ms"]
    assert abs(gap_ms - (epoch_ms(resumed) - epoch_ms(lost_at))) <= 50, (lost_at, resumed)
    assert killed_ms - SLACK_MS <= epoch_ms(lost_at) <= killed_ms + SLACK_MS + 1000
    assert epoch_ms(resumed) >= restarted_ms
    assert gap_ms >= restarted_ms - killed_ms - SLACK_MS, (gap_ms, restarted_ms - killed_ms)

    # Lost: only what was sent inside the gap, or before the agent itself was back.
    agent_back_ms = max([epoch_ms(resumed), *result["reconnected"]])
    window = (min(killed_ms, epoch_ms(lost_at)) - SLACK_MS, agent_back_ms + SLACK_MS)
    missing = [at for event_id, at in sent if event_id not in relayed]
    outside = [at - killed_ms for at in missing if not window[0] <= at <= window[1]]
    assert not outside, f"{len(outside)} of {len(missing)} lost outside the gap (ms from kill)"
    before = [i for i, at in sent if at < killed_ms - SLACK_MS]
    after = [i for i, at in sent if at > window[1]]
    assert len(before) >= 10 and len(after) >= AFTER // 2, (len(before), len(after))
    print(
        f"sfu_restart: sent={len(sent)} failed={len(result['failed'][room])} "
        f"lost={len(missing)} gap_ms={gap_ms} downtime_ms={restarted_ms - killed_ms:.0f}"
    )
