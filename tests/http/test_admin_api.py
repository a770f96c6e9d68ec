"""The HTTP server: health, readiness, metrics and the bearer-protected admin API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relay.http import build_app
from relay.observer import RoomTarget
from relay.rooms import RoomManager
from relay.rooms.observed import ObservedRoom
from tests.observer.sdk_objects import CollectingIntake, make_observer

TOKEN = "admin-token-for-tests"
Client = TestClient[web.Request, web.Application]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=[True], ids=["mints_tokens"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Client, RoomManager]]:
    intake = CollectingIntake()

    def observer_for(target: RoomTarget) -> ObservedRoom:
        # Real observers aimed at a closed loopback port: they stay "connecting".
        return make_observer(intake, target=target)

    manager = RoomManager(observer_for, max_rooms=2, static_rooms=["static-room"])

    async def readiness() -> dict[str, bool]:
        return {"rooms": manager.static_rooms_ready(), "redis": True}

    app = build_app(manager, readiness, TOKEN, mints_tokens=request.param)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, manager
        await manager.stop_all()


async def test_healthz_and_metrics(client: tuple[Client, RoomManager]) -> None:
    http, _ = client
    assert (await http.get("/healthz")).status == 200
    metrics = await (await http.get("/metrics")).text()
    assert "relay_events_received_total" in metrics
    assert "relay_build_info" in metrics


async def test_readyz_is_503_until_static_rooms_are_observed(
    client: tuple[Client, RoomManager],
) -> None:
    http, _ = client
    response = await http.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"] == {"rooms": False, "redis": True, "admin_rooms": True}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
async def test_admin_api_rejects_missing_or_wrong_token(
    client: tuple[Client, RoomManager], headers: dict[str, str]
) -> None:
    http, manager = client
    response = await http.post("/v1/rooms", json={"room": "r1"}, headers=headers)
    assert response.status == 401
    assert manager.wanted == []


async def test_add_list_remove_room(client: tuple[Client, RoomManager]) -> None:
    http, manager = client
    response = await http.post("/v1/rooms", json={"room": "r1"}, headers=AUTH)
    assert (response.status, await response.json()) == (201, {"room": "r1", "added": True})
    again = await http.post("/v1/rooms", json={"room": "r1"}, headers=AUTH)
    assert (again.status, (await again.json())["added"]) == (200, False)
    with_token = {"room": "r2", "url": "ws://127.0.0.1:9", "token": "given"}
    assert (await http.post("/v1/rooms", json=with_token, headers=AUTH)).status == 201

    listing = await (await http.get("/v1/rooms", headers=AUTH)).json()
    assert [(r["room"], r["token_given"]) for r in listing["rooms"]] == [
        ("r1", False),
        ("r2", True),
    ]
    # Discovery off: this process is the deployment; the answer is its rooms, nothing else
    # (no pages: `limit` and `cursor` are checked, not applied).
    assert list(listing) == ["rooms"]
    assert set(listing["rooms"][0]) == {
        "room", "state", "token_given", "static", "last_error", "failing_for_s"
    }  # fmt: skip
    paged = await (await http.get("/v1/rooms?limit=1&cursor=r1", headers=AUTH)).json()
    assert paged == listing
    full = await http.post("/v1/rooms", json={"room": "r3"}, headers=AUTH)
    assert full.status == 429  # max_rooms=2

    assert (await http.delete("/v1/rooms/r1", headers=AUTH)).status == 200
    assert manager.wanted == ["r2"]
    assert (await http.delete("/v1/rooms/r1", headers=AUTH)).status == 404


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1,2]",
        b'{"room": ""}',
        b'{"room": 5}',
        b'{"room": "r", "url": "ws://x"}',
        b'{"room": "r", "url": "ws://x", "token": ""}',  # would silently mint one instead
        b'{"room": "r", "url": "", "token": "t"}',
    ],
)
async def test_bad_admin_bodies_get_400(client: tuple[Client, RoomManager], body: bytes) -> None:
    http, manager = client
    response = await http.post("/v1/rooms", data=body, headers=AUTH)
    assert response.status == 400
    assert "error" in await response.json()
    assert manager.wanted == []


async def test_no_new_rooms_once_shutdown_began(client: tuple[Client, RoomManager]) -> None:
    http, manager = client
    await manager.stop_all()
    response = await http.post("/v1/rooms", json={"room": "late"}, headers=AUTH)
    assert response.status == 503
    assert "shutting down" in (await response.json())["error"]
    assert manager.wanted == []


@pytest.mark.parametrize("client", [False], indirect=True, ids=["no_api_key"])
async def test_without_api_credentials_a_room_needs_its_own_url_and_token(
    client: tuple[Client, RoomManager],
) -> None:
    http, manager = client
    response = await http.post("/v1/rooms", json={"room": "r1"}, headers=AUTH)
    assert response.status == 400
    assert "'url' and 'token'" in (await response.json())["error"]
    with_token = {"room": "r2", "url": "ws://127.0.0.1:9", "token": "given"}
    assert (await http.post("/v1/rooms", json=with_token, headers=AUTH)).status == 201
    assert manager.wanted == ["r2"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"room": "r" * 257}, ["257 characters", "at most 256"]),
        ({"room": "a\nb"}, ["control character"]),
        ({"room": "a\x00b"}, ["control character"]),
        ({"room": "a\x7fb"}, ["control character"]),
        ({"room": "r", "rooom": "x"}, ["unknown field 'rooom'"]),
        ({"room": "r", "tokn": "x", "ur": "y"}, ["'tokn', 'ur'"]),
    ],
)
async def test_room_names_and_fields_are_validated(
    client: tuple[Client, RoomManager], body: dict[str, str], words: list[str]
) -> None:
    http, manager = client
    response = await http.post("/v1/rooms", json=body, headers=AUTH)
    assert response.status == 400
    error = (await response.json())["error"]
    for word in words:
        assert word in error
    assert manager.wanted == []


async def test_a_long_name_within_the_cap_and_unicode_are_accepted(
    client: tuple[Client, RoomManager],
) -> None:
    http, manager = client
    for room in ("r" * 256, "salle-été-会议"):
        assert (await http.post("/v1/rooms", json={"room": room}, headers=AUTH)).status == 201
        assert room in manager.wanted
        assert (await http.delete(f"/v1/rooms/{room}", headers=AUTH)).status == 200


async def test_a_room_that_cannot_connect_shows_its_error_and_unreadies() -> None:
    intake = CollectingIntake()
    manager = RoomManager(lambda target: make_observer(intake, target=target), max_rooms=2)

    async def readiness() -> dict[str, bool]:
        return {"redis": True}

    app = build_app(manager, readiness, TOKEN, mints_tokens=True, unready_after_s=0.5)
    async with TestClient(TestServer(app)) as http:
        assert (await http.get("/readyz")).status == 200
        assert (await http.post("/v1/rooms", json={"room": "r1"}, headers=AUTH)).status == 201
        deadline = time.monotonic() + 15
        ready: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = await http.get("/readyz")
            ready = await response.json()
            if response.status == 503:
                break
            await asyncio.sleep(0.1)
        assert ready["ready"] is False and ready["checks"]["admin_rooms"] is False
        [room] = ready["rooms"]
        assert room["room"] == "r1" and room["state"] == "connecting"
        assert room["last_error"] and room["failing_for_s"] >= 0.5
        listed = (await (await http.get("/v1/rooms", headers=AUTH)).json())["rooms"]
        assert listed[0]["last_error"] == room["last_error"]
        # Removing the room makes the relay ready again.
        assert (await http.delete("/v1/rooms/r1", headers=AUTH)).status == 200
        assert (await http.get("/readyz")).status == 200
        await manager.stop_all()
