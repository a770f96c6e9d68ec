"""Observer identities through the dev server: two observers of one room, each under an
identity of its own, stay joined side by side (the dev server, like LiveKit, disconnects
the earlier of two participants with one identity: `DUPLICATE_IDENTITY`).

- two `relay run` processes on one host observing the same static room (the default
  template), and the old template `relay-{host}-{n}` as the control: there both mint
  `relay-<host>-1` and the second join kicks the first;
- two workers of one `relay run --workers 2` in one room at once: the holder is stopped
  (SIGSTOP) past its lease, the other worker takes the room over and joins while the
  stopped one is still in it; each identity names its worker slot and its pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket

import pytest
from livekit import api

from relay.dev.launch import DevServer
from relay.dev.netns import NetNS
from tests.e2e.scaleout import TTL_S, join, owners, scaleout_env, wait_joined, wait_log
from tests.e2e.support import (
    Deadline,
    Event,
    RelayProcess,
    StartRelay,
    Streams,
    command_pid,
    has,
    unique,
)
from tests.fixtures.lk_client import LkProcess

pytestmark = pytest.mark.e2e

OLD_TEMPLATE = "relay-{host}-{n}"
SETTLE_S = 1.5  # a kicked observer re-joins after 0.5 s (the default backoff): both would show


async def participants(server: DevServer, room: str) -> list[str]:
    """The identities in `room` as the dev server lists them (hidden ones included)."""
    lkapi = api.LiveKitAPI(server.http_url, server.api_key, server.api_secret)
    try:
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
    finally:
        await lkapi.aclose()
    return sorted(p.identity for p in listed.participants)


async def wait_participants(
    server: DevServer, room: str, count: int, timeout_s: float = 15.0
) -> list[str]:
    deadline = Deadline(timeout_s)
    while len(found := await participants(server, room)) != count:
        assert not deadline.passed, f"{room}: {found}, not {count} participants"
        await asyncio.sleep(0.05)
    return found


def slot_and_pid(identity: str) -> tuple[str, str]:
    """The worker slot and pid of a default-template identity of this host."""
    host = re.escape(socket.gethostname())
    match = re.fullmatch(rf"relay-{host}-(\d+)-(\d+)-\d+", identity)
    assert match is not None, identity
    return match.group(1), match.group(2)


def kicks(events: list[Event]) -> list[Event]:
    return [e for e in events if e["kind"] == "observer.reconnecting"]


async def two_relays_in_one_room(
    start_relay: StartRelay, streams: Streams, room: str, **env: str
) -> tuple[list[RelayProcess], list[Streams]]:
    """Two relays on this host observing `room`, each writing under a prefix of its own."""
    both = [streams, Streams(streams.redis, streams.prefix + "-b")]
    relays = [start_relay(rooms=[room], RELAY_REDIS__PREFIX=s.prefix, **env) for s in both]
    for relay in relays:
        await relay.wait_ready()
    for own in both:
        await own.wait_room(room, has("observer.joined"))
    return relays, both


async def test_two_relays_on_one_host_observe_one_room_side_by_side(
    e2e_ns: NetNS, e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    room, server = unique("idents"), e2e_devserver
    relays, both = await two_relays_in_one_room(start_relay, streams, room)
    pids = [command_pid(relay.proc) for relay in relays]
    host = socket.gethostname()
    observers = await wait_participants(server, room, 2)
    assert observers == sorted(f"relay-{host}-0-{pid}-1" for pid in pids)

    async with LkProcess.start(e2e_ns) as lk:
        await lk.connect("user", server.ws_url, server.token("user", room))
        command = {"event_type": "avatar.speak_text", "event_id": "cmd-1", "text": "hi"}
        await lk.publish_data("user", json.dumps(command), topic="agent-control")
        for own in both:  # both observers see what the room says
            await own.wait_room(room, has("command", command="avatar.speak_text"))
        await asyncio.sleep(SETTLE_S)
        assert await participants(server, room) == sorted([*observers, "user"])
    for own in both:
        events = await own.room_events(room)
        assert not kicks(events), events
        assert [e["kind"] for e in events][:1] == ["observer.joined"]
    for relay in relays:
        assert (await relay.stop()).returncode == 0


async def test_control_the_old_template_makes_two_relays_kick_each_other(
    e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    """What the test above guards against: each process counts from 1, so both join as
    `relay-<host>-1`, and every join disconnects the other (then it re-joins)."""
    room = unique("idents-old")
    env = {
        "RELAY_LIVEKIT__OBSERVER_IDENTITY": OLD_TEMPLATE,
        "RELAY_LIVEKIT__REJOIN_BACKOFF_INITIAL_S": "0.2",
    }
    relays, both = await two_relays_in_one_room(start_relay, streams, room, **env)
    assert await participants(e2e_devserver, room) == [f"relay-{socket.gethostname()}-1"]
    deadline = Deadline(15.0)
    while not any([kicks(await own.room_events(room)) for own in both]):
        assert not deadline.passed, "no observer was disconnected"
        await asyncio.sleep(0.05)
    kicked = [e for own in both for e in kicks(await own.room_events(room))]
    assert {e["data"].get("reason") for e in kicked} == {"duplicate_identity"}
    for relay in relays:
        await relay.stop()


async def test_two_workers_of_one_pod_in_one_room_keep_their_own_identities(
    e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    tag = unique("idw")
    room, server = f"{tag}-0", e2e_devserver
    relay = start_relay(RELAY_WORKERS="2", **scaleout_env(tag))
    await relay.wait_listening()
    await wait_log(relay, "scaleout_started", count=2)
    await join(streams, [room])
    await wait_joined(streams, [room], epoch=1)
    slot = {line["pid"]: str(line["worker"]) for line in relay.log_events("worker_spawned")}
    pid_of = {line["worker_id"]: line["pid"] for line in relay.log_events("scaleout_started")}
    holder = pid_of[(await owners(streams, [room]))[room]]
    [first] = await participants(server, room)
    assert first.endswith(f"-{slot[holder]}-{holder}-1")

    os.kill(int(holder), signal.SIGSTOP)  # still in the room; its lease runs out
    try:
        await wait_joined(streams, [room], epoch=2, timeout_s=4 * TTL_S + 10)
        taker = pid_of[(await owners(streams, [room]))[room]]
        assert taker != holder
        both = await wait_participants(server, room, 2)
    finally:
        os.kill(int(holder), signal.SIGCONT)
    # Two workers of one host in the room at once, each under its own slot and pid.
    parts = {slot_and_pid(who) for who in both}
    assert parts == {(slot[holder], str(holder)), (slot[taker], str(taker))}
    # The stopped worker, resumed, finds its lease gone and leaves; the taker stays.
    [left] = await wait_participants(server, room, 1, timeout_s=4 * TTL_S + 10)
    assert left.endswith(f"-{slot[taker]}-{taker}-1")
    await asyncio.sleep(SETTLE_S)
    events = await streams.room_events(room)
    taken = [e for e in events if e.get("epoch") == 2]
    assert taken and taken[0]["kind"] == "observer.joined"
    assert not kicks(taken), taken
    assert await participants(server, room) == [left]
    assert (await relay.stop()).returncode == 0
