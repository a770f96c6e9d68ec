"""Two participants flood one room as fast as they can while a conversation goes on in
another room of the same relay, with small limits (`RELAY_LIMITS__...`): the other room
gets every event, and in the flooded room every packet sent is either in its stream or a
counted drop (`relay_events_dropped_total{reason}`, its bytes on
`relay_rate_limited_bytes_total`), with one `room_rate_limited` line per period.

The first flooder starts alone: it is held to its own rate (participant_rate; the room's
is higher). Then the second joins: the two together are held to the room's rate
(room_rate), below each one's own, so that is the only reason while both flood. The
first stops before the second: alone, the second is held to its own rate again."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from datetime import datetime
from typing import Any

import pytest

from relay.dev.launch import DevServer
from relay.dev.netns import NetNS
from tests.e2e.actors import flood_payload
from tests.e2e.support import (
    Deadline,
    StartRelay,
    Streams,
    actor,
    assert_seq_contiguous,
    unique,
)
from tests.e2e.test_bad_actors import by_label

pytestmark = pytest.mark.e2e

FLOOD_S = 4.0  # each flooder's
FLOODERS = 2
STAGGER_S = 1.5  # the second starts this much after the first
SPAN_S = FLOOD_S + STAGGER_S * (FLOODERS - 1)
PERIOD_S = 1.0
# Each flooder is held to its own rate, and the two together (200/s) to the room's.
PARTICIPANT_PER_S, PARTICIPANT_BURST = 100, 100
ROOM_PER_S, ROOM_BURST = 150, 150
CONVERSATION_INTERVAL_S = 0.05  # the other room: 20 events/s, far below both limits
LIMIT_REASONS = ("participant_rate", "participant_bytes", "room_rate", "room_bytes")


def flooded(events: list[dict[str, Any]], identities: set[str]) -> list[tuple[str, int]]:
    """The flood's packets the room's stream holds: (identity, n)."""
    return [
        (e["participant"]["identity"], e["data"]["payload"]["n"])
        for e in events
        if e["kind"] == "event" and e["participant"]["identity"] in identities
    ]


async def test_a_flooded_room_is_limited_and_its_neighbour_loses_nothing(
    e2e_ns: NetNS, e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    noisy, quiet = unique("flooded"), unique("quiet")
    relay = start_relay(
        rooms=[noisy, quiet],
        RELAY_LIMITS__PARTICIPANT_EVENTS_PER_S=str(PARTICIPANT_PER_S),
        RELAY_LIMITS__PARTICIPANT_EVENTS_BURST=str(PARTICIPANT_BURST),
        RELAY_LIMITS__ROOM_EVENTS_PER_S=str(ROOM_PER_S),
        RELAY_LIMITS__ROOM_EVENTS_BURST=str(ROOM_BURST),
        RELAY_LIMITS__SUMMARY_PERIOD_S=str(PERIOD_S),
    )
    await relay.wait_ready()
    talk_args = ["--room", quiet, "--interval-s", str(CONVERSATION_INTERVAL_S)]
    flood_args = ["--room", noisy, "--identity", "flooder", "--seconds", str(FLOOD_S)]
    flood_args += ["--participants", str(FLOODERS), "--stagger-s", str(STAGGER_S)]
    async with (
        actor(e2e_ns, e2e_devserver, "conversations", *talk_args) as talk,
        actor(e2e_ns, e2e_devserver, "flood", *flood_args) as flood,
    ):
        assert await talk.next_line(30) == {"ready": True}
        assert await flood.next_line(30) == {"ready": True}
        started = time.monotonic()
        report = await flood.result(SPAN_S + 30)
        identities = set(report["sent"])
        sent_total = sum(report["sent"].values())
        # Every packet sent is in the stream or dropped: wait until the counts add up.
        deadline = Deadline(45.0)
        while True:
            accepted = flooded(await streams.room_events(noisy), identities)
            metrics = await relay.metrics()
            dropped = by_label(metrics, "relay_events_dropped_total", "reason")
            limited = sum(dropped.get(reason, 0) for reason in LIMIT_REASONS)
            if len(accepted) + limited >= sent_total or deadline.passed:
                break
            await asyncio.sleep(0.2)
        # Publishing returns before the SFU forwarded the packet: on a small machine the
        # relay still receives the flood for a while after the flooders stopped.
        elapsed_s = time.monotonic() - started
    conversation: dict[str, list[tuple[str, int]]] = (await talk.result())["sent"]
    await streams.wait_room(
        quiet,
        lambda evs: any(e["source"].get("event_id") == conversation[quiet][-1][0] for e in evs),
        what="the conversation's last event",
    )
    stopped = await relay.stop()
    assert stopped.returncode == 0

    # The quiet room: every event of the conversation, once, in order.
    quiet_events = await streams.room_events(quiet)
    assert_seq_contiguous(quiet_events)
    sent_ids = [event_id for event_id, _ in conversation[quiet]]
    seen = [e["source"].get("event_id") for e in quiet_events]
    assert [i for i in seen if i in set(sent_ids)] == sent_ids

    # The flooded room: exactly what was sent, accepted or dropped by the limits.
    noisy_events = await streams.room_events(noisy)
    assert_seq_contiguous(noisy_events)
    assert len(set(accepted)) == len(accepted)
    print(
        f"flood of {FLOODERS} participants for {report['seconds']:.1f}s: sent={sent_total} "
        f"({sent_total / report['seconds']:.0f}/s), all received in {elapsed_s:.1f}s: "
        f"accepted={len(accepted)} dropped={dropped}"
    )
    assert len(accepted) + limited == sent_total, (len(accepted), dropped, report["sent"])
    assert dropped.get("participant_rate") and dropped.get("room_rate"), dropped
    by_reason = [
        line["reasons"] for line in stopped.logs if line.get("event") == "room_rate_limited"
    ]
    assert set(by_reason[0]) == {"participant_rate"}, by_reason  # the first flooder alone
    assert not set(dropped) - set(LIMIT_REASONS), dropped  # no queue full, nothing else
    # The room admits at most its burst and its rate over the time it received the flood.
    assert len(accepted) <= ROOM_BURST + ROOM_PER_S * elapsed_s
    for who in identities:  # what each flooder got through is a prefix of what it sent
        ns = sorted(n for identity, n in accepted if identity == who)
        assert ns and ns[-1] < report["sent"][who]
    # The dropped bytes: what was sent less what was accepted, to the byte.
    accepted_bytes = sum(len(flood_payload(who, n)) for who, n in accepted)
    limited_bytes = by_label(metrics, "relay_rate_limited_bytes_total", "reason")
    assert set(limited_bytes) <= {"participant_rate", "room_rate"}
    assert sum(limited_bytes.values()) == sum(report["bytes"].values()) - accepted_bytes

    assert_one_summary_per_period(
        stopped.logs, noisy, identities, dropped, limited_bytes, elapsed_s
    )
    # The room's stream carries each summary as an `observer.limited` event, the quiet
    # room's none.
    notices = [e["data"] for e in noisy_events if e["kind"] == "observer.limited"]
    summaries = [line for line in stopped.logs if line.get("event") == "room_rate_limited"]
    assert [(n["dropped"], n["reasons"], n["left"]) for n in notices] == [
        (line["dropped"], line["reasons"], line["left"]) for line in summaries
    ]
    assert not [e for e in quiet_events if e["kind"] == "observer.limited"]


def assert_one_summary_per_period(
    logs: list[dict[str, Any]],
    room: str,
    identities: set[str],
    dropped: dict[str, float],
    limited_bytes: dict[str, float],
    elapsed_s: float,
) -> None:
    """The `room_rate_limited` lines: the flooded room's only, at least a period apart
    (at most one a period), one for each period of the flood, adding up to the counters."""
    lines = [line for line in logs if line.get("event") == "room_rate_limited"]
    assert {line["room"] for line in lines} == {room}
    assert all(line["period_s"] == PERIOD_S for line in lines)
    # The leave's line (`left`) comes last, if at all: it may follow the last period's
    # sooner than a period, when the flood was still arriving as the relay stopped.
    periodic = [line for line in lines if not line["left"]]
    assert lines[: len(periodic)] == periodic and len(lines) - len(periodic) <= 1
    at = [datetime.fromisoformat(line["timestamp"]).timestamp() for line in periodic]
    gaps = [later - earlier for earlier, later in itertools.pairwise(at)]
    assert all(gap >= PERIOD_S * 0.95 for gap in gaps), gaps
    # A line a period while the relay received the flood (it sent for SPAN_S, the relay
    # received it in at most elapsed_s), and maybe the leave's.
    assert math.floor(SPAN_S / PERIOD_S) <= len(lines) <= math.ceil(elapsed_s / PERIOD_S) + 1
    reasons: dict[str, int] = {}
    for line in lines:
        assert line["dropped"] == sum(line["reasons"].values())
        assert set(line["top_participants"]) <= identities
        for reason, count in line["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    assert reasons == {reason: int(count) for reason, count in dropped.items()}
    assert sum(line["dropped_bytes"] for line in lines) == sum(limited_bytes.values())
