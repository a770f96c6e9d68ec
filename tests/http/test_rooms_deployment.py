"""`GET /v1/rooms` with discovery on, on a real Redis: every wanted room with its source,
lease holder and epoch, the workers and their leases, this process's own rooms, pages;
never a token. Leases are taken with the real LeaseStore, as the assigner takes them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from redis.crc import key_slot

from relay import keys
from relay.config import RedisSettings
from relay.discovery import deployment
from relay.discovery.deployment import DeploymentView, announce
from relay.discovery.leases import LeaseStore
from relay.discovery.shared import SharedRoomManager
from relay.discovery.wanted import WantedSet
from relay.http import build_app
from relay.observer import RoomTarget
from relay.redis_client import MGET_BATCH, awaited, create_redis
from relay.rooms.observed import ObservedRoom
from tests.fixtures.redis_server import ClusterSet
from tests.fixtures.sockets import free_port
from tests.observer.sdk_objects import CollectingIntake, make_observer

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[web.Request, web.Application]
ME, OTHER, GONE = "worker-me", "worker-other", "worker-gone"
POD = "relay-7c9f-abcde"
# A url+token room's secrets: the token (its own key) and what a url could carry.
SECRET_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.never-shown-signature"
SECRET_URL = "wss://user:url-password@other.livekit:7443/rtc?access_token=url-secret#frag"


@pytest.fixture
def pod_name(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("HOSTNAME", POD)
    yield POD


def shared_manager(
    redis: aioredis.Redis, settings: RedisSettings, worker_id: str = ME
) -> SharedRoomManager:
    intake = CollectingIntake()

    def observer_for(target: RoomTarget) -> ObservedRoom:
        # Real observers aimed at a closed loopback port: they stay "connecting".
        return make_observer(intake, target=target)

    wanted = WantedSet(redis, settings)
    view = DeploymentView(redis, settings, wanted, worker_id)
    return SharedRoomManager(observer_for, wanted, view, max_rooms=5)


@pytest.fixture
async def shared(
    redis: aioredis.Redis, redis_settings: RedisSettings, pod_name: str
) -> AsyncIterator[tuple[Client, SharedRoomManager]]:
    manager = shared_manager(redis, redis_settings)

    async def readiness() -> dict[str, bool]:
        return {"rooms": manager.static_rooms_ready(), "redis": True}

    app = build_app(manager, readiness, TOKEN, mints_tokens=True)
    async with TestClient(TestServer(app)) as client:
        yield client, manager
        await manager.stop_all()


async def register(
    redis: aioredis.Redis, settings: RedisSettings, worker: str, ttl_ms: int
) -> None:
    """As the assigner registers a worker: expiry time (ms) as the score."""
    now_ms = int(time.time() * 1000)
    await redis.zadd(keys.workers_key(settings), {worker: now_ms + ttl_ms})


async def listing(http: Client, query: str = "") -> dict[str, Any]:
    response = await http.get(f"/v1/rooms{query}", headers=AUTH)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_every_wanted_room_with_its_source_holder_epoch_and_local_state(
    shared: tuple[Client, SharedRoomManager], redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    http, manager = shared
    wanted = manager.shared
    await wanted.add(RoomTarget("mine"), "admin")
    await wanted.add(RoomTarget("theirs"), "webhook")
    await wanted.add(RoomTarget("free"), "reconcile")
    await wanted.add(RoomTarget("orphan"), "static")
    await wanted.add(RoomTarget("tokened", url=SECRET_URL, token=SECRET_TOKEN), "control")
    me, other, gone = (LeaseStore(redis, redis_settings, w) for w in (ME, OTHER, GONE))
    assert await me.acquire("mine", 30) is not None
    assert await other.acquire("theirs", 0.05) is not None
    await asyncio.sleep(0.1)  # that lease expired: taken over, epoch 2
    assert await other.acquire("theirs", 30) is not None
    assert await other.acquire("tokened", 30) is not None
    assert await gone.acquire("orphan", 30) is not None  # a dead worker's lease, not expired
    await register(redis, redis_settings, ME, 30_000)
    await register(redis, redis_settings, OTHER, 30_000)
    await announce(redis, redis_settings, {"worker_id": OTHER, "pod": "pod-b", "pid": 7}, 1, done())
    manager.observe(RoomTarget("mine"))
    manager.observe(RoomTarget("leaving"))  # observed here, no longer wanted

    body = await listing(http)
    assert body["mode"] == "shared"
    assert body["answered_by"]["pod"] == POD and body["answered_by"]["worker_id"] == ME
    assert body["next_cursor"] is None
    rooms = {room["room"]: room for room in body["rooms"]}
    assert list(rooms) == sorted(["mine", "theirs", "free", "orphan", "tokened"])
    shown = {
        name: (r["source"], r["holder"], r["epoch"], r["observed_here"])
        for name, r in rooms.items()
    }
    assert shown == {
        "mine": ("admin", ME, 1, True),
        "theirs": ("webhook", OTHER, 2, False),
        "free": ("reconcile", None, None, False),
        "orphan": ("static", GONE, 1, False),
        "tokened": ("control", OTHER, 1, False),
    }
    assert rooms["mine"]["state"] == "connecting"  # the local state, as describe() has it
    assert set(rooms["mine"]) >= {"last_error", "failing_for_s"}
    assert "state" not in rooms["theirs"]
    assert rooms["tokened"]["token_given"] is True and rooms["mine"]["token_given"] is False
    assert rooms["tokened"]["url"] == "wss://other.livekit:7443/rtc"
    assert isinstance(rooms["mine"]["since"], float)

    summary = body["summary"]
    assert (summary["wanted"], summary["owned"], summary["unowned"]) == (5, 4, 1)
    assert summary["observed_here"] == 1
    assert summary["observed_not_wanted"] == ["leaving"]
    assert summary["workers"] == [
        {"worker_id": GONE, "live": False, "leases": 1, "pod": None, "pid": None},
        {"worker_id": ME, "live": True, "leases": 1, "pod": None, "pid": None},
        {"worker_id": OTHER, "live": True, "leases": 2, "pod": "pod-b", "pid": 7},
    ]
    # /readyz keeps its body: this process's own rooms.
    ready = await (await http.get("/readyz")).json()
    assert [room["room"] for room in ready["rooms"]] == ["leaving", "mine"]


def done() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


async def test_a_url_token_rooms_token_never_appears(
    shared: tuple[Client, SharedRoomManager], redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    http, manager = shared
    target = {"room": "tokened", "url": SECRET_URL, "token": SECRET_TOKEN}
    assert (await http.post("/v1/rooms", json=target, headers=AUTH)).status == 201
    key = keys.token_key(redis_settings, "tokened")
    for _ in range(100):  # the admin API writes the shared set in the background
        if await redis.get(key) is not None:
            break
        await asyncio.sleep(0.02)
    assert await redis.get(key) == SECRET_TOKEN.encode()  # stored: it is there to leak
    await LeaseStore(redis, redis_settings, ME).acquire("tokened", 30)
    manager.observe(RoomTarget("tokened", url=SECRET_URL, token=SECRET_TOKEN))
    text = await (await http.get("/v1/rooms", headers=AUTH)).text()
    assert '"tokened"' in text and '"token_given":true' in text.replace(" ", "")
    for secret in (SECRET_TOKEN, "never-shown-signature", "url-password", "url-secret", "frag"):
        assert secret not in text
    ready = await (await http.get("/readyz")).text()
    assert SECRET_TOKEN not in ready


async def test_pages_walk_every_room_in_batched_reads(
    shared: tuple[Client, SharedRoomManager],
    redis: aioredis.Redis,
    redis_settings: RedisSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http, _ = shared
    count = 2 * MGET_BATCH + 203
    rooms = [f"room-{n:05d}" for n in range(count)]
    entry = json.dumps({"source": "reconcile", "since": 1.0})
    await awaited(redis.hset(keys.wanted_key(redis_settings), mapping=dict.fromkeys(rooms, entry)))
    async with redis.pipeline(transaction=False) as pipe:
        for room in rooms[::2]:
            pipe.set(keys.lease_key(redis_settings, room), OTHER, px=30_000)
            pipe.set(keys.epoch_key(redis_settings, room), 3)
        await pipe.execute()
    await register(redis, redis_settings, OTHER, 30_000)

    trips = 0
    mget = redis.mget

    async def counted(names: list[str]) -> Any:
        nonlocal trips
        trips += 1
        return await mget(names)

    monkeypatch.setattr(redis, "mget", counted)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "?limit=500" + (f"&cursor={cursor}" if cursor else "")
        body = await listing(http, query)
        pages += 1
        assert body["summary"]["wanted"] == count
        assert body["summary"]["owned"] == (count + 1) // 2
        assert body["summary"]["workers"][0]["leases"] == (count + 1) // 2
        seen += [room["room"] for room in body["rooms"]]
        for room in body["rooms"]:
            held = int(room["room"][-5:]) % 2 == 0
            assert (room["holder"], room["epoch"]) == ((OTHER, 3) if held else (None, None))
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == rooms and pages == -(-count // 500)
    # Per page: the leases of every room in batches, the page's epochs, the workers' info.
    assert trips == pages * (-(-count // MGET_BATCH) + 1 + 1), trips
    last = await listing(http, f"?cursor={rooms[-1]}")
    assert (last["rooms"], last["next_cursor"]) == ([], None)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("?limit=0", ["'limit'", "1 to 5000"]),
        ("?limit=5001", ["'limit'", "'5001'"]),
        ("?limit=ten", ["'limit'", "'ten'"]),
        ("?limit=-1", ["'limit'"]),
        ("?cursor=a%0Ab", ["'cursor'", "control character"]),
    ],
)
async def test_bad_page_parameters_get_400(
    shared: tuple[Client, SharedRoomManager], query: str, words: list[str]
) -> None:
    http, _ = shared
    response = await http.get(f"/v1/rooms{query}", headers=AUTH)
    assert response.status == 400
    error = (await response.json())["error"]
    for word in words:
        assert word in error


async def test_redis_away_is_a_503_with_this_process_rooms(
    redis_settings: RedisSettings, pod_name: str
) -> None:
    away = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}", socket_timeout=1)
    manager = shared_manager(away, redis_settings)

    async def readiness() -> dict[str, bool]:
        return {"redis": False}

    app = build_app(manager, readiness, TOKEN, mints_tokens=True)
    try:
        async with TestClient(TestServer(app)) as http:
            manager.observe(RoomTarget("here"))
            response = await http.get("/v1/rooms", headers=AUTH)
            assert response.status == 503
            body = await response.json()
            assert "cannot read the shared rooms from Redis" in body["error"]
            assert body["answered_by"]["worker_id"] == ME
            assert [room["room"] for room in body["rooms"]] == ["here"]
            await manager.stop_all()
    finally:
        await away.aclose()


async def test_a_worker_announces_itself_until_stopped(
    redis: aioredis.Redis, redis_settings: RedisSettings, pod_name: str
) -> None:
    until = asyncio.Event()
    who = deployment.identity("worker-x")
    assert who["pod"] == POD
    task = asyncio.create_task(announce(redis, redis_settings, who, 0.2, until))
    key = keys.worker_key(redis_settings, "worker-x")
    await asyncio.sleep(0.9)  # past the first write's expiry (0.6 s): there if refreshed
    assert json.loads(await redis.get(key) or b"{}") == {"pod": POD, "pid": who["pid"]}
    assert 0 < await redis.pttl(key) <= 600
    until.set()
    await asyncio.wait_for(task, 1)


async def test_on_a_redis_cluster_rooms_in_every_slot_are_read(cluster_redis: ClusterSet) -> None:
    settings = RedisSettings(url=SecretStr(cluster_redis.url), prefix="c", cluster=True)
    client = create_redis(settings)
    try:
        rooms = [f"room-{n}" for n in range(40)]
        slots = {key_slot(keys.lease_key(settings, room).encode()) for room in rooms}
        assert len({cluster_redis.owner(slot).port for slot in slots}) == 3
        wanted = WantedSet(client, settings)
        for room in rooms:
            await wanted.add(RoomTarget(room), "control")
        store = LeaseStore(client, settings, OTHER)
        for room in rooms[::2]:
            assert await store.acquire(room, 30) is not None
        view = DeploymentView(client, settings, wanted, ME)
        body = await view.describe([], limit=1000, cursor=None)
        held = {room["room"]: (room["holder"], room["epoch"]) for room in body["rooms"]}
        assert held == {
            room: (OTHER, 1) if n % 2 == 0 else (None, None) for n, room in enumerate(rooms)
        }
        assert body["summary"]["workers"][0]["leases"] == 20
    finally:
        await client.aclose()
