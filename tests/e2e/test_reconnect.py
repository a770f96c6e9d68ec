"""The dev server dies and comes back on the same address: the relay rejoins and says so.

The dev server keeps no state across a restart, so every client rejoins as a new
participant (new sid): the relay reports the gap (`observer.reconnecting`, then
`observer.resumed` with `gap_ms`) and the churn, and relays what is published after.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import datetime

import pytest

from relay.dev.launch import start_devserver
from relay.dev.netns import NetNS
from relay.dev.processes import ManagedProcess
from tests.e2e.support import (
    Event,
    StartRelay,
    Streams,
    assert_seq_contiguous,
    brief,
    command_pid,
    has,
    unique,
)
from tests.fixtures.lk_client import LkProcess

pytestmark = pytest.mark.e2e

SPEAKER = "speaker"


def speak(n: int) -> str:
    return json.dumps({"event_type": "avatar.speak_started", "event_id": f"speak-{n}"})


def kinds(events: list[Event]) -> list[str]:
    return [e["kind"] for e in events]


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_relay_rejoins_a_restarted_server(
    e2e_ns: NetNS, streams: Streams, start_relay: StartRelay, kill: signal.Signals
) -> None:
    room = unique("reconnect")
    server = start_devserver(e2e_ns, extra_args=["--departure-timeout", "0.5"])
    try:
        relay = start_relay(rooms=[room], server=server)
        await relay.wait_ready()
        async with LkProcess.start(e2e_ns) as lk:
            await lk.connect(SPEAKER, server.ws_url, server.token(SPEAKER, room))
            await lk.publish_data(SPEAKER, speak(1), topic="agent-response")
            await streams.wait_room(room, has("speech.started"))

            await kill_server(server.proc, kill)
            await streams.wait_room(room, has("observer.reconnecting"), timeout_s=10)
            server = start_devserver(
                e2e_ns, port=server.port, extra_args=["--departure-timeout", "0.5"]
            )
            await lk.wait_event(SPEAKER, "reconnected", timeout_s=30)
            await streams.wait_room(room, has("observer.resumed"), timeout_s=30)
            await lk.publish_data(SPEAKER, speak(2), topic="agent-response")
            await streams.wait_room(
                room, lambda evs: sum(e["kind"] == "speech.started" for e in evs) == 2
            )
            metrics = await relay.metrics()
            stopped = await relay.stop()
    finally:
        server.proc.stop()
    assert stopped.returncode == 0
    assert metrics[("relay_room_reconnects_total", frozenset())] == 1
    assert_rejoined(await streams.room_events(room))


async def kill_server(proc: ManagedProcess, kill: signal.Signals) -> None:
    """SIGTERM: the server tells its clients to reconnect, then exits. SIGKILL: gone."""
    if kill == signal.SIGKILL:
        os.killpg(proc.pid, kill)  # `timeout` and the server
    else:
        pid = command_pid(proc)
        assert pid is not None
        os.kill(pid, kill)
    await asyncio.to_thread(proc.popen.wait, 10)
    proc.stop()


def assert_rejoined(events: list[Event]) -> None:
    assert_seq_contiguous(events)
    # Joined, spoke; lost, left (now or reconciled), resumed, joined again (the order of
    # these three depends on who reconnects first), spoke; left.
    expected = [
        *("observer.joined", "participant.joined", "speech.started", "observer.reconnecting"),
        *("participant.left", "observer.resumed", "participant.joined", "speech.started"),
        "observer.left",
    ]
    assert sorted(kinds(events)) == sorted(expected), brief(events)
    assert kinds(events[:3]) == ["observer.joined", "participant.joined", "speech.started"]
    assert events[-1]["kind"] == "observer.left"
    at = {e["kind"]: i for i, e in enumerate(events)}  # the last of each kind
    lost, back = events[at["observer.reconnecting"]], events[at["observer.resumed"]]
    assert at["observer.reconnecting"] < at["observer.resumed"] < at["speech.started"]

    # gap_ms is the time between the two, as the relay's own timestamps say.
    gap_ms = back["data"]["gap_ms"]
    assert gap_ms > 0
    assert abs(gap_ms - (epoch_ms(back) - epoch_ms(lost))) <= 50, (lost, back)

    # The speaker came back as a new participant: the old one left, the new one spoke.
    first, second = (e for e in events if e["kind"] == "participant.joined")
    gone = events[at["participant.left"]]
    assert first["participant"]["sid"] == gone["participant"]["sid"] != second["participant"]["sid"]
    before, after = (e for e in events if e["kind"] == "speech.started")
    assert before["participant"]["sid"] == first["participant"]["sid"]
    assert after["participant"]["sid"] == second["participant"]["sid"]
    assert [before["source"]["event_id"], after["source"]["event_id"]] == ["speak-1", "speak-2"]


def epoch_ms(event: Event) -> int:
    stamp = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
    return round(stamp.timestamp() * 1000)
