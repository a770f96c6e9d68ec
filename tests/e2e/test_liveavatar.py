"""A LiveAvatar FULL-mode session, played by real SDK clients, relayed to Redis exactly."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from relay.dev.launch import DevServer
from relay.dev.netns import NetNS
from tests.e2e.liveavatar import assert_segments, assert_session
from tests.e2e.support import Event, StartRelay, Streams, actor, assert_seq_contiguous, unique

pytestmark = pytest.mark.e2e


async def test_liveavatar_full_session(
    e2e_ns: NetNS, e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    room, session_id = unique("liveavatar"), uuid.uuid4().hex[:8]
    agent = f"liveavatar-agent-{session_id}"
    relay = start_relay(rooms=[room])
    await relay.wait_ready()

    args = ["--room", room, "--session-id", session_id, "--pace-s", "0.02"]
    async with actor(e2e_ns, e2e_devserver, "liveavatar", *args) as scenario:
        sent: list[dict[str, Any]] = (await scenario.result())["sent"]
    assert {m["topic"] for m in sent} == {"agent-control", "agent-response"}

    await streams.wait_room(
        room, lambda evs: sum(e["kind"] == "participant.left" for e in evs) == 3, what="3 leaves"
    )
    metrics = await relay.metrics()
    stopped = await relay.stop()
    assert stopped.returncode == 0
    events = await streams.room_events(room)

    assert_session(events, sent, session_id)
    assert_seq_contiguous(events)
    assert stopped.log("relay_stopped")["accepted"] == len(events)
    assert_metrics_match(metrics, events)

    # Who sent what, with which role; protocols; the session id from the agent's join on.
    roles = {"user-browser": "user", agent: "agent", "heygen": "avatar", "": "observer"}
    for event in events:
        who = event["participant"]
        assert who["role"] == roles[who["identity"]], event
        assert (who["sid"] or "PA_").startswith("PA_"), event
        assert event["room_sid"].startswith("RM_"), event
    session_ids = [e["session_id"] for e in events]
    assert session_ids == [None, None] + [session_id] * (len(events) - 2)
    protocols = {e["kind"]: e["protocol"] for e in events}
    assert protocols["session.started"] == protocols["command"] == "liveavatar"
    assert protocols["participant.joined"] == "livekit"
    assert protocols["observer.joined"] == "relay"

    # Each message's source names it: topic, event_type, event_id (none for the interrupt).
    relayed = [e for e in events if e["source"].get("topic")]
    assert len(relayed) == len(sent)
    for event, message in zip(relayed, sent, strict=True):
        source = event["source"]
        assert (source["topic"], source["event_type"]) == (message["topic"], message["event_type"])
        assert source.get("event_id") == message.get("event_id")
    assert_segments(relayed, sent)


def assert_metrics_match(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], events: list[Event]
) -> None:
    """What /metrics said before the stop is what reached Redis (observer.left came later)."""
    received = Counter((e["protocol"], e["kind"]) for e in events if e["kind"] != "observer.left")
    counted = {
        (labels["protocol"], labels["kind"]): value
        for (name, label_set), value in metrics.items()
        if name == "relay_events_received_total" and value
        for labels in [dict(label_set)]
    }
    assert counted == received
    assert metrics[("relay_room_connect_duration_seconds_count", frozenset())] == 1
    written = metrics[("relay_events_written_total", frozenset({("sink", "redis")}))]
    assert written == len(events) - 1
    batches = metrics[("relay_sink_write_duration_seconds_count", frozenset({("sink", "redis")}))]
    assert 1 <= batches <= written
    assert metrics[("relay_event_latency_seconds_count", frozenset())] == written
