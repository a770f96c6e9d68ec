"""The RoomService subset through `livekit.api.LiveKitAPI`, seen by SDK clients."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from livekit import api

from tests.fixtures.lk_client import LkProcess
from tests.fixtures.netns import DevServer, NetNS

pytestmark = pytest.mark.e2e


@pytest.fixture
async def lkapi(devserver: DevServer) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(devserver.http_url, devserver.api_key, devserver.api_secret)
    try:
        yield client
    finally:
        await client.aclose()


async def test_list_rooms_and_participants(
    netns: NetNS, devserver: DevServer, lkapi: api.LiveKitAPI
) -> None:
    room = "twirp-list"
    async with LkProcess.start(netns) as lk:
        alice = await lk.connect("alice", devserver.ws_url, devserver.token("alice", room))
        hidden = devserver.token("observer", room, hidden=True)
        await lk.connect("observer", devserver.ws_url, hidden)

        rooms = await lkapi.room.list_rooms(api.ListRoomsRequest(names=[room]))
        assert [r.name for r in rooms.rooms] == [room]
        assert rooms.rooms[0].sid.startswith("RM_")
        assert rooms.rooms[0].num_participants == 2

        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
        by_identity = {p.identity: p for p in listed.participants}
        assert set(by_identity) == {"alice", "observer"}
        assert by_identity["alice"].sid == alice["local"]["sid"]
        assert by_identity["observer"].permission.hidden


async def test_send_data_update_and_remove(
    netns: NetNS, devserver: DevServer, lkapi: api.LiveKitAPI
) -> None:
    room = "twirp-act"
    async with LkProcess.start(netns) as lk:
        await lk.connect("alice", devserver.ws_url, devserver.token("alice", room))
        await lk.connect("bob", devserver.ws_url, devserver.token("bob", room))

        await lkapi.room.send_data(
            api.SendDataRequest(
                room=room,
                data=b"from the server",
                kind=api.DataPacket.Kind.RELIABLE,
                topic="srv",
                destination_identities=["bob"],
            )
        )
        got = await lk.wait_event("bob", "data_received")
        assert (got["payload"], got["topic"], got["identity"]) == ("from the server", "srv", None)

        await lkapi.room.update_participant(
            api.UpdateParticipantRequest(room=room, identity="alice", attributes={"a": "1"})
        )
        changed = await lk.wait_event("bob", "attributes_changed")
        assert (changed["identity"], changed["changed"]) == ("alice", {"a": "1"})

        await lkapi.room.remove_participant(api.RoomParticipantIdentity(room=room, identity="bob"))
        await lk.wait_event("bob", "disconnected")
        assert (await lk.wait_event("alice", "participant_disconnected"))["identity"] == "bob"
        assert lk.events_of("alice", "data_received") == []


async def test_room_metadata_and_delete(
    netns: NetNS, devserver: DevServer, lkapi: api.LiveKitAPI
) -> None:
    room = "twirp-room"
    async with LkProcess.start(netns) as lk:
        await lk.connect("alice", devserver.ws_url, devserver.token("alice", room))
        await lkapi.room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room=room, metadata='{"topic":"demo"}')
        )
        got = await lk.wait_event("alice", "room_metadata")
        assert got["new"] == '{"topic":"demo"}'

        await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))
        await lk.wait_event("alice", "disconnected")
        rooms = await lkapi.room.list_rooms(api.ListRoomsRequest(names=[room]))
        assert list(rooms.rooms) == []


async def test_api_refuses_bad_credentials(devserver: DevServer) -> None:
    wrong = api.LiveKitAPI(
        devserver.http_url, devserver.api_key, "wrong-secret-wrong-secret-wrong-secret"
    )
    try:
        with pytest.raises(api.TwirpError) as caught:
            await wrong.room.list_rooms(api.ListRoomsRequest())
        assert caught.value.status == 401
        assert caught.value.code == "unauthenticated"
    finally:
        await wrong.aclose()
