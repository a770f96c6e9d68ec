"""A relay killed with SIGKILL while it holds accepted events in its buffer: the survivors
take its rooms, and its restarted self writes what its journal kept, under the epoch it
had: nothing it accepted is missing, nothing is written twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from relay.dev.launch import DevServer
from relay.dev.netns import NetNS
from relay.dev.takeover import SLOW_FLUSH, Tally, held_at_kill
from tests.e2e.scaleout import (
    CONNECT_S,
    TTL_S,
    join,
    kill9,
    owners,
    scaleout_env,
    wait_joined,
    wait_log,
    wait_workers,
    worker_id,
)
from tests.e2e.support import EventsCheck, StartRelay, Streams, actor, unique

pytestmark = pytest.mark.e2e


def has_ids(ids: set[str]) -> EventsCheck:
    def check(events: list[dict[str, Any]]) -> bool:
        return ids <= {e["id"] for e in events}

    return check


async def test_a_killed_relay_restarted_on_its_journal_writes_what_it_accepted(
    e2e_ns: NetNS,
    e2e_devserver: DevServer,
    streams: Streams,
    start_relay: StartRelay,
    tmp_path: Path,
) -> None:
    tag = unique("tk9")
    rooms = [f"{tag}-{n}" for n in range(6)]
    env = scaleout_env(tag, RELAY_DISCOVERY__PICKUP_JITTER_S="0")
    journals = [tmp_path / f"journal-{n}" for n in range(3)]
    relays = [
        start_relay(**env, RELAY_JOURNAL__PATH=str(journals[0])),
        start_relay(**env, RELAY_JOURNAL__PATH=str(journals[1])),
        start_relay(**env, **SLOW_FLUSH, RELAY_JOURNAL__PATH=str(journals[2])),
    ]
    await join(streams, rooms)
    await wait_joined(streams, rooms, epoch=1)
    await wait_workers(streams, 3)
    victim = relays[2]
    held = await owners(streams, rooms)
    victims_rooms = sorted(room for room, owner in held.items() if owner == worker_id(victim))
    assert victims_rooms

    args = ["--room", ",".join(rooms), "--interval-s", "0.05"]
    async with actor(e2e_ns, e2e_devserver, "conversations", *args) as talk:
        assert await talk.next_line(30) == {"ready": True}
        await asyncio.sleep(2.3)
        kill9(victim)
        kept = held_at_kill(journals[2])
        await wait_joined(streams, victims_rooms, epoch=2, timeout_s=2 * TTL_S + CONNECT_S + 5)
        await asyncio.sleep(1.0)
    sent: dict[str, list[tuple[str, int]]] = (await talk.result())["sent"]
    assert kept, "the victim's buffer was empty at the kill: nothing to prove"
    assert {e.room for e in kept} <= set(victims_rooms)
    assert all(e.epoch == 1 for e in kept)
    kept_ids = {e.id for e in kept}
    streamed = {e["id"] for room in victims_rooms for e in await streams.room_events(room)}
    assert not kept_ids & streamed  # accepted, never written: lost without the journal

    again = start_relay(**env, RELAY_JOURNAL__PATH=str(journals[2]))
    await wait_log(again, "relay_started")
    (started,) = again.log_events("relay_started")
    assert started["journal_replayed"] >= len(kept)
    for room in victims_rooms:
        await streams.wait_room(room, has_ids({e.id for e in kept if e.room == room}))
    for room in rooms:
        events = await streams.room_events(room)
        twice = [i for i, n in Counter(e["id"] for e in events).items() if n > 1]
        assert not twice, f"{room}: written twice"
        if room not in victims_rooms:
            seen = {e["source"].get("event_id") for e in events}
            assert all(event_id in seen for event_id, _ in sent[room]), room
            continue
        # The replayed entries keep the epoch they were accepted under: they follow the
        # new owner's, which a consumer sees as late entries of the old owner.
        positions = {e["id"]: n for n, e in enumerate(events)}
        first_new = min(n for n, e in enumerate(events) if e["epoch"] == 2)
        for event in kept:
            if event.room == room:
                assert positions[event.id] > first_new
                assert events[positions[event.id]]["epoch"] == 1
                assert events[positions[event.id]]["seq"] == event.seq
    # The line of bench/faults.py (relay/dev/takeover.py counts both the same way).
    everything = [e for room in rooms for e in await streams.room_events(room)]
    published = [event_id for room in rooms for event_id, _ in sent[room]]
    tally = Tally.count(everything, kept, published)
    assert (tally.lost, tally.duplicates, tally.held) == (0, 0, len(kept))
    print(tally.line(replayed=started["journal_replayed"], moved=len(victims_rooms)))
