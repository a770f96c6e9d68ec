"""Which rooms: the static list (and /readyz), and rooms added over the admin API."""

from __future__ import annotations

import asyncio
import json

import pytest
from livekit import api

from relay.dev.launch import DevServer, start_devserver
from relay.dev.netns import NetNS
from tests.e2e.support import StartRelay, Streams, has, unique
from tests.fixtures.lk_client import LkProcess

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "e2e-admin-token-0123456789"


async def test_static_rooms_ready_once_observed(
    e2e_ns: NetNS, streams: Streams, start_relay: StartRelay
) -> None:
    """Not ready while LiveKit is unreachable; ready once every static room is observed."""
    rooms = [unique("static-a"), unique("static-b")]
    port = e2e_ns.free_port()  # nothing listens there yet
    relay = start_relay(
        rooms=rooms,
        RELAY_LIVEKIT__URL=f"ws://{e2e_ns.addr}:{port}",
        RELAY_LIVEKIT__REJOIN_BACKOFF_INITIAL_S="0.2",
        RELAY_LIVEKIT__REJOIN_BACKOFF_MAX_S="0.5",
    )
    await relay.wait_listening()
    status, body = await relay.get("/readyz")
    assert status == 503, body
    assert json.loads(body)["checks"] == {"rooms": False, "redis": True, "admin_rooms": True}
    assert (await relay.get("/healthz"))[0] == 200

    server = start_devserver(e2e_ns, port=port)
    try:
        answers = await relay.wait_ready()
        ready = json.loads(answers[-1][1])
        assert (ready["ready"], ready["checks"]) == (
            True,
            {"rooms": True, "redis": True, "admin_rooms": True},
        )
        assert sorted(r["room"] for r in ready["rooms"]) == sorted(rooms)
        assert all(r["state"] == "connected" and r["static"] for r in ready["rooms"])
        for room in rooms:
            await streams.wait_room(room, has("observer.joined"))
        metrics = await relay.metrics()
        assert metrics[("relay_rooms_observed", frozenset())] == len(rooms)
        assert metrics[("relay_rooms_wanted", frozenset())] == len(rooms)
        stopped = await relay.stop()
    finally:
        server.proc.stop()
    assert stopped.returncode == 0
    for room in rooms:
        events = await streams.room_events(room)
        assert [e["kind"] for e in events] == ["observer.joined", "observer.left"]


async def test_admin_api_adds_a_room_at_runtime(
    e2e_ns: NetNS, e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    room, server = unique("admin"), e2e_devserver
    relay = start_relay(RELAY_HTTP__ADMIN_TOKEN=ADMIN_TOKEN)
    await relay.wait_ready()  # no static room: ready at once

    assert (await relay.request("POST", "/v1/rooms", body={"room": room}, token="wrong"))[0] == 401
    assert (await relay.request("POST", "/v1/rooms", body={"room": room}))[0] == 401
    status, body = await relay.request("POST", "/v1/rooms", body={"room": room}, token=ADMIN_TOKEN)
    assert (status, json.loads(body)) == (201, {"room": room, "added": True})
    status, body = await relay.request("POST", "/v1/rooms", body={"room": room}, token=ADMIN_TOKEN)
    assert (status, json.loads(body)) == (200, {"room": room, "added": False})
    await streams.wait_room(room, has("observer.joined"))
    status, body = await relay.get("/v1/rooms", token=ADMIN_TOKEN)
    assert json.loads(body) == {
        "rooms": [
            {
                "room": room,
                "state": "connected",
                "token_given": False,
                "static": False,
                "last_error": None,
                "failing_for_s": None,
            }
        ]
    }

    async with LkProcess.start(e2e_ns) as lk:
        await lk.connect("user", server.ws_url, server.token("user", room))
        command = {"event_type": "avatar.speak_text", "event_id": "cmd-1", "text": "hello"}
        await lk.publish_data("user", json.dumps(command), topic="agent-control")
        await streams.wait_room(room, has("command", command="avatar.speak_text", text="hello"))

        status, body = await relay.request("DELETE", f"/v1/rooms/{room}", token=ADMIN_TOKEN)
        assert (status, json.loads(body)) == (200, {"room": room, "removed": True})
        events = await streams.wait_room(room, has("observer.left"))
        assert json.loads((await relay.get("/v1/rooms", token=ADMIN_TOKEN))[1]) == {"rooms": []}
    assert [e["kind"] for e in events] == [
        "observer.joined",
        "participant.joined",
        "command",
        "observer.left",
    ]
    assert (await relay.stop()).returncode == 0


async def test_a_deleted_room_ends_its_observation_and_is_not_recreated(
    e2e_ns: NetNS, e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    """LiveKit creates a room on join: an observer that re-joined a deleted room would keep
    it alive forever. The relay ends the observation instead; a static room that ended
    leaves the relay ready. Removing the observer (RemoveParticipant) is respected too."""
    deleted, removed = unique("deleted"), unique("removed")
    relay = start_relay(
        rooms=[deleted, removed],
        RELAY_HTTP__ADMIN_TOKEN=ADMIN_TOKEN,
        RELAY_LIVEKIT__REJOIN_BACKOFF_INITIAL_S="0.1",
    )
    await relay.wait_ready()
    server = e2e_devserver
    lkapi = api.LiveKitAPI(server.http_url, server.api_key, server.api_secret)
    try:
        await lkapi.room.delete_room(api.DeleteRoomRequest(room=deleted))
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=removed))
        [observer] = listed.participants
        assert observer.identity.startswith("relay-")
        await lkapi.room.remove_participant(
            api.RoomParticipantIdentity(room=removed, identity=observer.identity)
        )
        gone = await streams.wait_room(deleted, has("observer.left"))
        kicked = await streams.wait_room(removed, has("observer.left"))
        await asyncio.sleep(1.0)  # ten re-join backoffs: a re-join would have happened
        rooms = await lkapi.room.list_rooms(api.ListRoomsRequest(names=[deleted, removed]))
        participants = {r.name: r.num_participants for r in rooms.rooms}
    finally:
        await lkapi.aclose()
    assert deleted not in participants  # not re-created
    assert participants.get(removed, 0) == 0  # the observer stayed out
    assert [(e["kind"], e["data"]) for e in gone] == [
        ("observer.joined", {}),
        ("observer.left", {"reason": "room_deleted"}),
    ]
    assert [(e["kind"], e["data"]) for e in kicked] == [
        ("observer.joined", {}),
        ("observer.left", {"reason": "participant_removed"}),
    ]
    status, body = await relay.get("/readyz")
    assert (status, json.loads(body)["checks"]) == (
        200,
        {"rooms": True, "redis": True, "admin_rooms": True},
    )
    assert json.loads((await relay.get("/v1/rooms", token=ADMIN_TOKEN))[1]) == {"rooms": []}
    assert (await relay.stop()).returncode == 0
    assert await streams.room_events(deleted) == gone  # nothing after the end


async def test_secrets_never_reach_the_logs_and_a_given_token_is_used_as_is(
    e2e_ns: NetNS, e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    """At debug level, with a minted token (static room) and a given one (admin API): no
    API secret, admin token or join token in anything the relay prints."""
    minted, given = unique("minted"), unique("given")
    server = e2e_devserver
    given_token = server.token("given-observer", given, hidden=True, can_publish=False)
    relay = start_relay(
        rooms=[minted], RELAY_HTTP__ADMIN_TOKEN=ADMIN_TOKEN, RELAY_LOG__LEVEL="debug"
    )
    await relay.wait_ready()
    body = {"room": given, "url": server.ws_url, "token": given_token}
    assert (await relay.request("POST", "/v1/rooms", body=body, token=ADMIN_TOKEN))[0] == 201
    await streams.wait_room(given, has("observer.joined"))
    lkapi = api.LiveKitAPI(server.http_url, server.api_key, server.api_secret)
    try:
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=given))
    finally:
        await lkapi.aclose()
    assert [p.identity for p in listed.participants] == ["given-observer"]
    stopped = await relay.stop()
    assert stopped.returncode == 0

    printed = "\n".join(stopped.text)
    assert "room_joined" in printed  # the logs are there, at debug level
    for secret in (server.api_secret, ADMIN_TOKEN, given_token):
        assert secret not in printed
    assert "eyJ" not in printed  # no JWT at all: neither given nor minted
