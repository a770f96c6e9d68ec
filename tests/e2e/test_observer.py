"""The relay observes a room without being seen, with receive-only rights."""

from __future__ import annotations

import pytest
from livekit import api

from relay.dev.launch import DevServer
from relay.dev.netns import NetNS
from tests.e2e.support import StartRelay, Streams, has, unique
from tests.fixtures.lk_client import LkProcess

pytestmark = pytest.mark.e2e

CLIENTS = ("alice", "bob")


def identities(state: dict[str, object]) -> set[str]:
    remote = state["remote"]
    assert isinstance(remote, list)
    return {p["identity"] for p in remote}


async def test_observer_is_invisible(
    e2e_ns: NetNS, e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    room, server = unique("hidden"), e2e_devserver
    async with LkProcess.start(e2e_ns) as lk:
        for name in CLIENTS:  # present before the relay joins ...
            await lk.connect(name, server.ws_url, server.token(name, room))
        await expect_presence(lk, "alice", "participant_connected", "bob")
        relay = start_relay(rooms=[room])
        await relay.wait_ready()
        await lk.connect("carol", server.ws_url, server.token("carol", room))  # ... and after
        for name in CLIENTS:
            await expect_presence(lk, name, "participant_connected", "carol")
        joined = await streams.wait_room(room, has("participant.joined", identity="carol"))
        names = [e["data"]["identity"] for e in joined if e["kind"] == "participant.joined"]
        # Those present when it joined come in the SDK's order, then the newcomer.
        assert (sorted(names[:2]), names[2:]) == (sorted(CLIENTS), ["carol"])

        # The relay is in the room: it receives what alice publishes ...
        await lk.publish_data("alice", "seen by the relay", topic="note")
        await streams.wait_room(room, has("raw", topic="note", payload="seen by the relay"))
        async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lkapi:
            listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
        observers = [p for p in listed.participants if p.identity.startswith("relay-")]
        assert len(observers) == 1, listed
        rights = observers[0].permission
        assert (rights.hidden, rights.can_subscribe) == (True, True)
        assert (rights.can_publish, rights.can_publish_data) == (False, False)

        # ... and nobody sees it: not in anyone's participants, no presence event.
        everyone = {*CLIENTS, "carol"}
        for name in everyone:
            assert identities(await lk.state(name)) == everyone - {name}
        stopped = await relay.stop()
        assert stopped.returncode == 0
        # Bob leaves after the relay did: the first departure the others see is bob's.
        await lk.call("disconnect", client="bob")
        for name in ("alice", "carol"):
            await expect_presence(lk, name, "participant_disconnected", "bob")
        # Every presence event was consumed above as expected: none was left for the relay.
        presence = ("participant_connected", "participant_disconnected")
        assert [e for e in lk.events if e["event"] in presence] == []


async def expect_presence(lk: LkProcess, client: str, event: str, identity: str) -> None:
    """The next `event` (participant_connected/_disconnected) of `client` is `identity`."""
    got = await lk.wait_event(client, event)
    assert got["identity"] == identity, got
