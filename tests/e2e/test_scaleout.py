"""Scale-out against the dev server and a real Redis: rooms spread over relays by leases,
failover on kill -9 and SIGTERM, fencing while Redis is away, the control stream and the
webhook endpoint, rebalancing toward a relay started after the others. Short TTLs keep it
fast (lease TTL 2 s: a tick every 0.67 s)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import math
import os
import signal
import time
from collections import Counter
from datetime import datetime
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from livekit import api

from relay.dev.launch import DevServer, start_devserver, start_redis
from relay.dev.netns import NetNS
from relay.observer.token import mint_observer_token
from relay.redis_client import awaited
from tests.e2e.scaleout import (
    ADMIN,
    CONNECT_S,
    TTL_S,
    assert_one_writer_at_a_time,
    join,
    kill9,
    owners,
    scaleout_env,
    wait_joined,
    wait_log,
    wait_workers,
    worker_id,
)
from tests.e2e.support import (
    Deadline,
    StartRelay,
    Streams,
    actor,
    command_pid,
    has,
    unique,
)

pytestmark = pytest.mark.e2e


async def test_a_drained_relays_rooms_move_at_once_though_ticks_are_far_apart(
    streams: Streams, start_relay: StartRelay
) -> None:
    """A TTL of 30 s (a tick every 10 s): the survivor does not wait for its next tick, the
    drain's release counter wakes it (assigner RELEASE_POLL_S)."""
    tag = unique("drainslow")
    rooms = [f"{tag}-{n}" for n in range(4)]
    env = scaleout_env(tag, RELAY_DISCOVERY__LEASE_TTL_S="30", RELAY_DISCOVERY__LEASE_MARGIN_S="2")
    relays = [start_relay(**env) for _ in range(2)]
    for relay in relays:
        await relay.wait_listening()
    await wait_workers(streams, 2)
    await join(streams, rooms)
    await wait_joined(streams, rooms, epoch=1, timeout_s=40)
    draining = relays[0]
    moving = [
        r for r, owner in (await owners(streams, rooms)).items() if owner == worker_id(draining)
    ]
    assert moving
    await asyncio.sleep(1.0)  # mid-way between ticks, wherever they are
    term_at = time.monotonic()
    stop = asyncio.create_task(draining.stop())
    await wait_joined(streams, moving, epoch=2, timeout_s=15)
    moved_s = time.monotonic() - term_at
    assert (await stop).returncode == 0
    assert moved_s < 3.0, moved_s
    assert set((await owners(streams, rooms)).values()) == {worker_id(relays[1])}


async def test_rooms_spread_over_three_relays_and_move_on_kill_and_sigterm(
    streams: Streams, start_relay: StartRelay
) -> None:
    tag = unique("spread")
    rooms = [f"{tag}-{n:02d}" for n in range(30)]
    relays = [start_relay(**scaleout_env(tag)) for _ in range(3)]
    for relay in relays:
        await relay.wait_listening()
    await wait_workers(streams, 3)
    await join(streams, rooms)
    await wait_joined(streams, rooms, epoch=1)
    held = await owners(streams, rooms)
    ids = {worker_id(r): r for r in relays}
    assert set(held.values()) == set(ids)
    assert sorted(Counter(held.values()).values()) == [10, 10, 10]  # ceil(30 / 3) each

    # kill -9: its rooms are taken again within the TTL + a connect, announced.
    victim = relays[0]
    lost = [r for r, owner in held.items() if owner == worker_id(victim)]
    killed_at = time.monotonic()
    kill9(victim)
    await wait_joined(streams, lost, epoch=2, timeout_s=TTL_S + CONNECT_S + 5)
    took_s = time.monotonic() - killed_at
    assert took_s < 2 * TTL_S + CONNECT_S, took_s  # lease + registration expiry, connect
    for room in lost:
        joined = [e for e in await streams.room_events(room) if e["kind"] == "observer.joined"]
        assert joined[-1]["data"]["reason"] == "takeover"
        assert joined[-1]["data"]["gap_ms"] > 0
    held = await owners(streams, rooms)
    assert sorted(Counter(held.values()).values()) == [15, 15]

    # SIGTERM: the leases are handed back at once; the rooms move within 3 s.
    draining, last = relays[1], relays[2]
    moving = [r for r, owner in held.items() if owner == worker_id(draining)]
    epochs = {r: max(e["epoch"] for e in await streams.room_events(r)) for r in moving}
    term_at = time.monotonic()
    stop = asyncio.create_task(draining.stop())
    for room in moving:
        await streams.wait_room(
            room,
            lambda events, room=room: any(  # type: ignore[misc]
                e["kind"] == "observer.joined" and e["epoch"] > epochs[room] for e in events
            ),
            timeout_s=10,
        )
    moved_s = time.monotonic() - term_at
    stopped = await stop
    assert stopped.returncode == 0
    assert moved_s < 3.0, moved_s
    assert stopped.log("relay_stopped")["unwritten"] == 0
    # Nothing it accepted is lost: every event it stamped is in the streams.
    mine = {
        (line["room"], line["epoch"])
        for line in stopped.logs
        if line.get("event") == "lease_acquired"
    }
    written = 0
    for room in rooms:
        written += sum(1 for e in await streams.room_events(room) if (room, e["epoch"]) in mine)
    assert written == stopped.log("relay_stopped")["accepted"]
    assert set((await owners(streams, rooms)).values()) == {worker_id(last)}
    await assert_one_writer_at_a_time(streams, rooms)


TICK_S = TTL_S / 3
TICK_INTERVAL_S = 0.1  # each room's ticker


def ts(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["ts"])


def assert_ticks_written_or_gap_announced(room: str, events: list[dict[str, Any]]) -> None:
    """The ticks a room's stream holds go up one by one within an owner's epoch; ticks
    are missing only across a change of owner, whose observer.joined announces the gap."""
    first_of: dict[int, dict[str, Any]] = {}
    for event in events:
        first_of.setdefault(event["epoch"], event)
    ticks = [(e["data"]["payload"]["n"], e["epoch"]) for e in events if e["kind"] == "event"]
    for (n, epoch), (after, next_epoch) in itertools.pairwise(ticks):
        assert after > n, (room, n, after)  # nothing twice, nothing out of order
        if after == n + 1:
            continue
        assert next_epoch > epoch, f"{room}: ticks {n + 1}..{after - 1} lost within epoch {epoch}"
        joined = first_of[next_epoch]
        assert joined["kind"] == "observer.joined", (room, joined)
        assert joined["data"]["reason"] == "takeover" and joined["data"]["gap_ms"] > 0


async def test_a_third_relay_gets_its_share_by_hand_backs_with_one_writer_at_a_time(
    e2e_ns: NetNS, e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    tag = unique("rebal")
    rooms = [f"{tag}-{n:02d}" for n in range(12)]
    env = scaleout_env(tag)  # rebalance_per_tick: the default, 2
    first = [start_relay(**env) for _ in range(2)]
    for relay in first:
        await relay.wait_listening()
    await wait_workers(streams, 2)
    args = ["--room", ",".join(rooms), "--identity", "ticker", "--interval-s", str(TICK_INTERVAL_S)]
    async with actor(e2e_ns, e2e_devserver, "tickers", *args) as tickers:
        assert await tickers.next_line(30) == {"ready": True}
        await join(streams, rooms)
        await wait_joined(streams, rooms, epoch=1)
        before = await owners(streams, rooms)
        assert sorted(Counter(before.values()).values()) == [6, 6]  # ceil(12 / 2) each

        third = start_relay(**env)
        await third.wait_listening()
        await wait_workers(streams, 3)
        registered_at = time.monotonic()
        share = math.ceil(len(rooms) / 3)
        deadline = Deadline(30)
        while True:  # every relay at most at its share, every room owned
            held = await owners(streams, rooms)
            if None not in held.values() and max(Counter(held.values()).values()) <= share:
                break
            assert not deadline.passed, Counter(held.values())
            await asyncio.sleep(0.05)
        balanced_s = time.monotonic() - registered_at
        moved = [room for room in rooms if held[room] != before[room]]
        assert {held[room] for room in moved} == {worker_id(third)}
        assert len(moved) == share  # 2 from each: the excess, nothing else
        await wait_joined(streams, moved, epoch=2, timeout_s=CONNECT_S + 5)
        settled_s = time.monotonic() - registered_at
        print(f"rebalance to a third relay: balanced {balanced_s:.2f}s, joined {settled_s:.2f}s")
        # Bound: up to two ticks until a relay saw the count hold, then per hand-back
        # round (2 rooms from one relay; the other waits until they are taken) the
        # giver's tick, its leave and last write (1 s on a loaded machine), the taker's
        # tick and jitter.
        assert balanced_s < 2 * TICK_S + 2 * (2 * TICK_S + 1.0 + 0.2), balanced_s

        await asyncio.sleep(4 * TICK_S)  # balanced: nothing moves any more
        assert await owners(streams, rooms) == held
    sent = (await tickers.result())["sent"]

    losses = 0.0
    for relay in first:
        metrics = await relay.metrics()
        losses += metrics[("relay_lease_losses_total", frozenset({("reason", "rebalanced")}))]
        # Each handed back its newest rooms: the last two it acquired.
        acquired = [line["room"] for line in relay.log_events("lease_acquired")]
        given = [line["room"] for line in relay.log_events("lease_released")]
        assert [line["reason"] for line in relay.log_events("lease_released")] == ["rebalanced"] * 2
        assert sorted(given) == sorted(acquired[-2:])
    assert losses == len(moved)
    # By the leases: each moved room's lease was released before the third relay won it.
    released = {
        line["room"]: datetime.fromisoformat(line["timestamp"])
        for relay in first
        for line in relay.log_events("lease_released")
    }
    for line in third.log_events("lease_acquired"):
        won_at = datetime.fromisoformat(line["timestamp"])
        assert line["epoch"] == 2 and released[line["room"]] < won_at, line
    metrics = await third.metrics()
    assert metrics[("relay_lease_acquired_total", frozenset({("kind", "handover")}))] == share

    await assert_one_writer_at_a_time(streams, rooms)
    for room in rooms:
        events = await streams.room_events(room)
        assert_ticks_written_or_gap_announced(room, events)
        ticks = [e for e in events if e["kind"] == "event"]
        assert ticks and ticks[-1]["data"]["payload"]["n"] < sent[room]
        if room not in moved:
            assert {e["epoch"] for e in events} == {1}
            continue
        # One writer at a time by the stream's order, make-before-break by the clock:
        # the new owner joined (and held its events back) before the old one left; both
        # wrote ticks, none twice, none missing (assert_ticks_written_or_gap_announced).
        old = [e for e in events if e["epoch"] == 1]
        new = [e for e in events if e["epoch"] == 2]
        assert old[-1]["kind"] == "observer.left" and new[0]["kind"] == "observer.joined"
        assert new[0]["data"]["reason"] == "handover", room
        assert ts(new[0]) <= ts(old[-1]), room
        assert any(e["kind"] == "event" for e in old) and any(e["kind"] == "event" for e in new)
    for relay in [*first, third]:
        assert (await relay.stop()).returncode == 0


async def test_redis_away_longer_than_the_ttl_stops_writes_before_expiry_then_retakes(
    e2e_ns: NetNS, start_relay: StartRelay
) -> None:
    tag = unique("fence")
    rooms = [f"{tag}-{n}" for n in range(3)]
    redis = start_redis(e2e_ns)
    client = aioredis.Redis.from_url(redis.url, socket_timeout=5)
    try:
        streams = Streams(client, unique("fence"))
        relay = start_relay(
            RELAY_REDIS__URL=redis.url, RELAY_REDIS__PREFIX=streams.prefix, **scaleout_env(tag)
        )
        await relay.wait_listening()
        await wait_workers(streams, 1)
        await join(streams, rooms)
        await wait_joined(streams, rooms, epoch=1)
        pid = command_pid(redis.proc)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # Redis answers nothing, its clock goes on
        stopped_at = time.monotonic()
        try:
            await wait_log(relay, "lease_lost", count=len(rooms), timeout_s=TTL_S + 1)
            fenced_after_s = time.monotonic() - stopped_at
            # The last renewal was sent before the stop: its lease expires by stop + TTL.
            assert fenced_after_s < TTL_S, fenced_after_s
            await asyncio.sleep(TTL_S + 0.5 - fenced_after_s)  # away longer than the TTL
        finally:
            os.kill(pid, signal.SIGCONT)
        await wait_joined(streams, rooms, epoch=2, timeout_s=15)
        reasons = {line["reason"] for line in relay.log_events("lease_lost")}
        assert reasons == {"renew_failed"}
        metrics = await relay.metrics()
        assert metrics[("relay_lease_losses_total", frozenset({("reason", "renew_failed")}))] >= 3
        assert metrics[("relay_leases_held", frozenset())] == len(rooms)
        await assert_one_writer_at_a_time(streams, rooms)
        assert (await relay.stop()).returncode == 0
    finally:
        await client.aclose()
        redis.close()


async def test_reconcile_finds_a_room_started_without_webhook_and_the_filter_holds(
    e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    tag = unique("recon")
    interval_s = 1.0
    relay = start_relay(
        **scaleout_env(
            tag,
            RELAY_DISCOVERY__RECONCILE_INTERVAL_S=str(interval_s),
            RELAY_DISCOVERY__EXCLUDE=json.dumps(["*-skip"]),
        )
    )
    await relay.wait_listening()
    await wait_log(relay, "scaleout_started")
    await asyncio.sleep(0.2)  # the first reconcile ran (at start)
    server = e2e_devserver
    lkapi = api.LiveKitAPI(server.http_url, server.api_key, server.api_secret)
    try:
        room, skipped = f"{tag}-a", f"{tag}-skip"
        await lkapi.room.create_room(api.CreateRoomRequest(name=room))
        await lkapi.room.create_room(api.CreateRoomRequest(name=skipped))
        took_s = await wait_joined(streams, [room], timeout_s=interval_s + CONNECT_S + 2)
        assert took_s < interval_s + CONNECT_S, took_s
        wanted = await awaited(streams.redis.hgetall(f"{streams.prefix}:wanted"))
        assert json.loads(wanted[room.encode()])["source"] == "reconcile"
        assert skipped.encode() not in wanted
        await asyncio.sleep(interval_s + 0.5)  # a reconcile ran while the room was leased
        metrics = await relay.metrics()
        assert metrics[("relay_rooms_coverage_ratio", frozenset())] == 1.0
        # A finished room is released (and not re-created by a re-join).
        await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))
        await streams.wait_room(room, has("observer.left", reason="room_deleted"))
        deadline = Deadline(10)
        while await awaited(streams.redis.hexists(f"{streams.prefix}:wanted", room)):
            assert not deadline.passed, "the finished room is still wanted"
            await asyncio.sleep(0.05)
    finally:
        await lkapi.aclose()
    metrics = await relay.metrics()
    assert metrics[("relay_reconcile_runs_total", frozenset())] >= 2
    assert metrics[("relay_rooms_filtered_total", frozenset())] >= 1
    assert (await relay.stop()).returncode == 0


def signed(server: DevServer, body: bytes, secret: str | None = None) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = api.AccessToken(server.api_key, secret or server.api_secret).with_sha256(digest)
    return token.to_jwt()


async def post(url: str, body: bytes, auth: str | None) -> int:
    headers = {"Content-Type": "application/webhook+json"}
    if auth is not None:
        headers["Authorization"] = auth
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status


async def test_webhooks_want_rooms_and_refuse_forgeries(
    e2e_ns: NetNS, streams: Streams, start_relay: StartRelay
) -> None:
    tag = unique("hook")
    port = e2e_ns.free_port()
    hook_url = f"http://{e2e_ns.addr}:{port}/v1/livekit/webhook"
    server = start_devserver(e2e_ns, webhook_urls=[hook_url])
    lkapi = api.LiveKitAPI(server.http_url, server.api_key, server.api_secret)
    try:
        relay = start_relay(
            server=server,
            RELAY_HTTP__PORT=str(port),
            **scaleout_env(
                tag,
                RELAY_DISCOVERY__RECONCILE_INTERVAL_S="600",
                RELAY_DISCOVERY__WEBHOOK_MAX_BODY_BYTES="4096",
            ),
        )
        await relay.wait_listening()
        await wait_log(relay, "scaleout_started")
        await asyncio.sleep(0.2)  # the reconcile at start ran: only the webhook adds rooms
        room = f"{tag}-started"
        await lkapi.room.create_room(api.CreateRoomRequest(name=room))
        await wait_joined(streams, [room])
        wanted_key = f"{streams.prefix}:wanted"
        entry = await awaited(streams.redis.hget(wanted_key, room))
        assert entry is not None and json.loads(entry)["source"] == "webhook"

        forged_room = f"{tag}-forged"
        body = json.dumps(
            {"event": "room_started", "id": "EV_forged", "room": {"name": forged_room}}
        ).encode()
        assert await post(hook_url, body, None) == 401
        assert await post(hook_url, body, "not-a-jwt") == 401
        assert await post(hook_url, body, signed(server, body, secret="x" * 32)) == 401
        assert await post(hook_url, body, signed(server, body + b" ")) == 401  # hash mismatch
        big = json.dumps({"event": "room_started", "pad": "x" * 5000}).encode()
        assert await post(hook_url, big, signed(server, big)) == 413
        # Signed right, sent twice: applied once, the replay is harmless.
        replayed_room = f"{tag}-replayed"
        twice = json.dumps(
            {"event": "room_started", "id": "EV_twice", "room": {"name": replayed_room}}
        ).encode()
        assert await post(hook_url, twice, signed(server, twice)) == 200
        assert await post(hook_url, twice, signed(server, twice)) == 200
        await wait_joined(streams, [replayed_room])
        await asyncio.sleep(0.3)
        assert not await awaited(streams.redis.hexists(wanted_key, forged_room))
        metrics = await relay.metrics()
        rejected = {
            reason: metrics[("relay_webhooks_rejected_total", frozenset({("reason", reason)}))]
            for reason in ("signature", "too_large")
        }
        assert rejected == {"signature": 4, "too_large": 1}
        received = metrics[("relay_webhooks_received_total", frozenset({("result", "replayed")}))]
        assert received == 1
        assert (await relay.stop()).returncode == 0
    finally:
        await lkapi.aclose()
        server.proc.stop()


async def test_control_stream_garbage_is_dead_lettered_and_the_consumer_carries_on(
    streams: Streams, start_relay: StartRelay
) -> None:
    tag = unique("ctl")
    static = f"{tag}-static"
    relay = start_relay(rooms=[static], RELAY_HTTP__ADMIN_TOKEN=ADMIN, **scaleout_env(tag))
    await relay.wait_listening()
    await wait_workers(streams, 1)
    await wait_joined(streams, [static])  # the static list feeds the shared set too
    entry = await awaited(streams.redis.hget(f"{streams.prefix}:wanted", static))
    assert entry is not None and json.loads(entry)["source"] == "static"
    control = f"{streams.prefix}:control"
    secret_token = "eyJ.secret-token-never-dead-lettered.sig"
    for fields in (
        {"op": "dance", "room": f"{tag}-x"},
        {"op": "join"},
        {"op": "join", "room": f"{tag}-y", "token": secret_token},  # a token without url
        {"nonsense": "\xff"},
    ):
        await streams.redis.xadd(control, fields)  # type: ignore[arg-type]
    await join(streams, [f"{tag}-ok"])
    await wait_joined(streams, [f"{tag}-ok"])
    letters = await streams.wait_dead_letters(4)
    assert {letter["reason"] for letter in letters} == {"control_invalid"}
    assert secret_token not in json.dumps(letters)
    assert secret_token not in "\n".join(relay.text)
    pending = await streams.redis.xpending(control, "relay")
    assert pending["pending"] == 0  # every entry acknowledged
    await streams.redis.xadd(control, {"op": "leave", "room": f"{tag}-ok"})
    await streams.wait_room(f"{tag}-ok", has("observer.left"))

    # The admin API feeds the same shared set.
    admin = f"{tag}-admin"
    status, _ = await relay.request("POST", "/v1/rooms", body={"room": admin}, token=ADMIN)
    assert status == 201
    await wait_joined(streams, [admin])
    entry = await awaited(streams.redis.hget(f"{streams.prefix}:wanted", admin))
    assert entry is not None and json.loads(entry)["source"] == "admin"
    status, _ = await relay.request("DELETE", f"/v1/rooms/{admin}", token=ADMIN)
    assert status == 200
    await streams.wait_room(admin, has("observer.left"))
    assert not await awaited(streams.redis.hexists(f"{streams.prefix}:wanted", admin))
    assert (await relay.stop()).returncode == 0


async def test_either_relay_lists_every_room_with_its_holder_as_the_leases_say(
    e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    """`GET /v1/rooms` on either of two relays sharing rooms: the same deployment, each
    room's holder and epoch as in Redis, who answered, never a room's token."""
    tag = unique("view")
    rooms = [f"{tag}-{n}" for n in range(4)]
    pods = ["relay-pod-a", "relay-pod-b"]
    relays = [
        start_relay(RELAY_HTTP__ADMIN_TOKEN=ADMIN, HOSTNAME=pod, **scaleout_env(tag))
        for pod in pods
    ]
    for relay in relays:
        await relay.wait_listening()
    await wait_workers(streams, 2)
    await join(streams, rooms[:3])
    server = e2e_devserver
    tokened = rooms[3]
    token = mint_observer_token(server.api_key, server.api_secret, tokened, "given-observer", 600)
    target = {"room": tokened, "url": server.ws_url, "token": token}
    status, _ = await relays[0].request("POST", "/v1/rooms", body=target, token=ADMIN)
    assert status == 201
    await wait_joined(streams, rooms, epoch=1)
    held = await owners(streams, rooms)
    ids = {worker_id(relay): pod for relay, pod in zip(relays, pods, strict=True)}
    assert sorted(Counter(held.values()).values()) == [2, 2]  # ceil(4 / 2) each

    for relay, pod in zip(relays, pods, strict=True):
        status, text = await relay.get("/v1/rooms", token=ADMIN)
        assert status == 200, text
        assert token not in text and token.split(".")[2] not in text
        body = json.loads(text)
        me = worker_id(relay)
        assert body["answered_by"]["pod"] == pod and body["answered_by"]["worker_id"] == me
        listed = {room["room"]: room for room in body["rooms"]}
        assert list(listed) == sorted(rooms)
        assert {room: r["holder"] for room, r in listed.items()} == held
        assert all(r["epoch"] == 1 for r in listed.values())
        assert {room: r["observed_here"] for room, r in listed.items()} == {
            room: holder == me for room, holder in held.items()
        }
        for room in listed.values():
            assert room.get("state") == ("connected" if room["holder"] == me else None)
        assert [listed[r]["source"] for r in rooms] == ["control"] * 3 + ["admin"]
        assert listed[tokened]["token_given"] is True
        summary = body["summary"]
        assert (summary["wanted"], summary["owned"], summary["unowned"]) == (4, 4, 0)
        workers = {w["worker_id"]: (w["live"], w["leases"], w["pod"]) for w in summary["workers"]}
        assert workers == {worker: (True, 2, ids[worker]) for worker in ids}
    # A drained worker takes its announcement with it.
    gone = worker_id(relays[0])
    assert await streams.redis.exists(f"{streams.prefix}:worker:{gone}")
    assert (await relays[0].stop()).returncode == 0
    assert not await streams.redis.exists(f"{streams.prefix}:worker:{gone}")
