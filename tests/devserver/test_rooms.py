"""Real `livekit` SDK clients against the dev server, inside a network namespace."""

from __future__ import annotations

import aiohttp
import pytest

from tests.fixtures.lk_client import LkProcess
from tests.fixtures.netns import DevServer, NetNS

pytestmark = pytest.mark.e2e

AGENT_KIND = 4  # livekit.rtc ParticipantKind.PARTICIPANT_KIND_AGENT


async def test_connect_returns_join_response_quickly(netns: NetNS, devserver: DevServer) -> None:
    room = "connect"
    async with LkProcess.start(netns) as lk:
        alice = await lk.connect("alice", devserver.ws_url, devserver.token("alice", room))
        assert alice["elapsed_s"] < 2.0
        assert alice["local"]["sid"].startswith("PA_")
        assert alice["remote"] == []

        bob = await lk.connect("bob", devserver.ws_url, devserver.token("bob", room))
        assert [p["identity"] for p in bob["remote"]] == ["alice"]
        joined = await lk.wait_event("alice", "participant_connected")
        assert joined["identity"] == "bob"
        assert joined["sid"] == bob["local"]["sid"]

        await lk.call("disconnect", client="bob")
        left = await lk.wait_event("alice", "participant_disconnected")
        assert left["identity"] == "bob"


async def test_data_packets_carry_topic_and_sender(netns: NetNS, devserver: DevServer) -> None:
    room = "data"
    async with LkProcess.start(netns) as lk:
        await lk.connect("alice", devserver.ws_url, devserver.token("alice", room))
        await lk.connect("bob", devserver.ws_url, devserver.token("bob", room))

        await lk.publish_data("alice", '{"event_type":"x"}', topic="agent-response")
        got = await lk.wait_event("bob", "data_received")
        assert got["payload"] == '{"event_type":"x"}'
        assert got["topic"] == "agent-response"
        assert got["identity"] == "alice"

        await lk.publish_data("bob", "lossy", topic="t", reliable=False)
        got = await lk.wait_event("alice", "data_received")
        assert (got["payload"], got["identity"]) == ("lossy", "bob")


async def test_destination_identities_are_honoured(netns: NetNS, devserver: DevServer) -> None:
    room = "destinations"
    async with LkProcess.start(netns) as lk:
        for name in ("alice", "bob", "carol"):
            await lk.connect(name, devserver.ws_url, devserver.token(name, room))

        await lk.publish_data("alice", "for carol", destination_identities=["carol"])
        await lk.publish_data("alice", "for all")

        assert (await lk.wait_event("carol", "data_received"))["payload"] == "for carol"
        assert (await lk.wait_event("carol", "data_received"))["payload"] == "for all"
        assert (await lk.wait_event("bob", "data_received"))["payload"] == "for all"
        assert lk.events_of("bob", "data_received") == []


async def test_text_stream_with_attributes(netns: NetNS, devserver: DevServer) -> None:
    room = "text"
    attributes = {"lk.segment_id": "SG_1", "lk.transcription_final": "true"}
    async with LkProcess.start(netns) as lk:
        token = devserver.token("user", room)
        await lk.connect("user", devserver.ws_url, token, text_topics=("lk.transcription",))
        agent_token = devserver.token("agent", room, kind="agent")
        await lk.connect("agent", devserver.ws_url, agent_token)

        await lk.call(
            "send_text",
            client="agent",
            text="hello there",
            topic="lk.transcription",
            attributes=attributes,
        )
        got = await lk.wait_event("user", "text_stream")
        assert got["text"] == "hello there"
        assert got["identity"] == "agent"
        assert got["topic"] == "lk.transcription"
        assert got["attributes"] == attributes


async def test_agent_streams_user_transcript_as_the_user(
    netns: NetNS, devserver: DevServer
) -> None:
    room = "on-behalf"
    async with LkProcess.start(netns) as lk:
        topics = ("lk.transcription",)
        await lk.connect("user", devserver.ws_url, devserver.token("user", room))
        await lk.connect("viewer", devserver.ws_url, devserver.token("viewer", room), topics)
        agent_token = devserver.token("agent", room, kind="agent")
        await lk.connect("agent", devserver.ws_url, agent_token)

        await lk.call(
            "stream_text",
            client="agent",
            chunks=["I said ", "this"],
            topic="lk.transcription",
            attributes={"lk.transcription_final": "false"},
            final_attributes={"lk.transcription_final": "true"},
            sender_identity="user",
        )
        got = await lk.wait_event("viewer", "text_stream")
        assert (got["identity"], got["text"]) == ("user", "I said this")
        assert got["attributes"]["lk.transcription_final"] == "true"


async def test_hidden_participant_sees_all_and_is_unseen(
    netns: NetNS, devserver: DevServer
) -> None:
    room = "hidden"
    async with LkProcess.start(netns) as lk:
        await lk.connect("alice", devserver.ws_url, devserver.token("alice", room))
        observer_token = devserver.token("observer", room, hidden=True, can_publish=False)
        observer = await lk.connect("observer", devserver.ws_url, observer_token)
        assert [p["identity"] for p in observer["remote"]] == ["alice"]
        await lk.connect("bob", devserver.ws_url, devserver.token("bob", room))
        assert (await lk.wait_event("observer", "participant_connected"))["identity"] == "bob"

        await lk.publish_data("alice", "seen by observer", topic="t")
        got = await lk.wait_event("observer", "data_received")
        assert (got["payload"], got["identity"], got["topic"]) == ("seen by observer", "alice", "t")
        await lk.wait_event("bob", "data_received")

        await lk.publish_data("observer", "from the hidden one")
        got = await lk.wait_event("alice", "data_received")
        assert (got["payload"], got["identity"]) == ("from the hidden one", None)

        for name in ("alice", "bob"):
            remote = (await lk.state(name))["remote"]
            assert "observer" not in [p["identity"] for p in remote]
        connected = lk.events_of("alice", "participant_connected")
        assert [e["identity"] for e in connected] == ["bob"]


async def test_attribute_changes_reach_others(netns: NetNS, devserver: DevServer) -> None:
    room = "attributes"
    async with LkProcess.start(netns) as lk:
        await lk.connect("user", devserver.ws_url, devserver.token("user", room))
        token = devserver.token("agent", room, kind="agent", can_update_own_metadata=True)
        await lk.connect("agent", devserver.ws_url, token)
        agent = (await lk.state("user"))["remote"][0]
        assert agent["kind"] == AGENT_KIND

        await lk.call("set_attributes", client="agent", attributes={"lk.agent.state": "thinking"})
        got = await lk.wait_event("user", "attributes_changed")
        assert got["identity"] == "agent"
        assert got["changed"] == {"lk.agent.state": "thinking"}
        assert got["attributes"]["lk.agent.state"] == "thinking"


async def test_attribute_change_needs_permission(netns: NetNS, devserver: DevServer) -> None:
    room = "attributes-denied"
    async with LkProcess.start(netns) as lk:
        await lk.connect("user", devserver.ws_url, devserver.token("user", room))
        await lk.connect("denied", devserver.ws_url, devserver.token("denied", room))
        allowed = devserver.token("allowed", room, can_update_own_metadata=True)
        await lk.connect("allowed", devserver.ws_url, allowed)

        # The SDK does not raise on the server's NOT_ALLOWED; the others never see it.
        await lk.call("set_attributes", client="denied", attributes={"k": "denied"})
        await lk.call("set_attributes", client="allowed", attributes={"k": "allowed"})
        got = await lk.wait_event("user", "attributes_changed")
        assert (got["identity"], got["changed"]) == ("allowed", {"k": "allowed"})
        assert lk.events_of("user", "attributes_changed") == []


async def test_legacy_transcription_from_agent(netns: NetNS, devserver: DevServer) -> None:
    room = "transcription"
    segment = {"id": "SG_9", "text": "hi", "final": True}
    async with LkProcess.start(netns) as lk:
        await lk.connect("user", devserver.ws_url, devserver.token("user", room))
        token = devserver.token("agent", room, kind="agent")
        await lk.connect("agent", devserver.ws_url, token)
        await lk.call(
            "publish_transcription",
            client="agent",
            identity="agent",
            track_sid="TR_agent",
            segments=[segment],
        )
        got = await lk.wait_event("user", "transcription")
        assert got["identity"] == "agent"
        assert got["segments"] == [segment]


async def test_active_speakers_set_through_debug_call(netns: NetNS, devserver: DevServer) -> None:
    room = "speakers"
    async with LkProcess.start(netns) as lk:
        await lk.connect("user", devserver.ws_url, devserver.token("user", room))
        await lk.connect("agent", devserver.ws_url, devserver.token("agent", room))
        admin = devserver.token("admin", room, room_admin=True)
        body = {"room": room, "speakers": [{"identity": "agent", "level": 0.8}]}
        async with aiohttp.ClientSession() as http:
            url = f"{devserver.http_url}/devserver/active_speakers"
            headers = {"Authorization": f"Bearer {admin}"}
            async with http.post(url, json=body, headers=headers) as response:
                assert response.status == 200
        got = await lk.wait_event("user", "active_speakers")
        assert got["identities"] == ["agent"]
