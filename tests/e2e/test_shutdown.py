"""SIGTERM while a participant publishes continuously: leave, flush, exit 0, lose nothing."""

from __future__ import annotations

import pytest

from relay.dev.launch import DevServer
from relay.dev.netns import NetNS
from tests.e2e.support import StartRelay, Streams, actor, assert_seq_contiguous, brief, unique

pytestmark = pytest.mark.e2e

GRACE_S = 10.0
TICKS_BEFORE_SIGTERM = 100


async def test_sigterm_mid_stream_writes_every_accepted_event(
    e2e_ns: NetNS, e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    room = unique("sigterm")
    relay = start_relay(rooms=[room], RELAY_SHUTDOWN_GRACE_S=str(GRACE_S))
    await relay.wait_ready()
    args = ["--room", room, "--identity", "ticker", "--interval-s", "0.01"]
    async with actor(e2e_ns, e2e_devserver, "ticker", *args) as ticker:
        assert await ticker.next_line(30) == {"ready": True}

        def ticking(events: list[dict[str, object]]) -> bool:
            return sum(e["kind"] == "event" for e in events) >= TICKS_BEFORE_SIGTERM

        await streams.wait_room(room, ticking, what=f"{TICKS_BEFORE_SIGTERM} ticks")
        stopped = await relay.stop()  # the ticker goes on publishing meanwhile
        await ticker.wait()  # stdin closed: it stops, leaves and reports
        sent = (await ticker.result())["sent"]

    assert stopped.returncode == 0
    assert stopped.stop_s < GRACE_S
    summary = stopped.log("relay_stopped")
    accepted, unwritten = summary["accepted"], summary["unwritten"]
    assert unwritten == 0
    assert await streams.xlen("events") == accepted
    events = await streams.room_events(room)
    assert len(events) == accepted, brief(events[-5:])
    assert_seq_contiguous(events)
    assert events[0]["kind"] == "observer.joined"
    assert events[-1]["kind"] == "observer.left"

    # Every tick the relay took in is there, in order, with no gap: 0, 1, ..., k-1.
    ticks = [e["data"]["payload"]["n"] for e in events if e["kind"] == "event"]
    assert ticks == list(range(len(ticks)))
    assert TICKS_BEFORE_SIGTERM <= len(ticks) <= sent
    assert {e["data"]["type"] for e in events if e["kind"] == "event"} == {"tick"}
