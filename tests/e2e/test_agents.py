"""A LiveKit Agents session: transcription streams, legacy segments, agent state, chat.

The agent sends what livekit-agents sends: user transcripts as one `lk.transcription`
stream per update on the user's behalf, its own speech as one delta stream per segment
whose trailer sets `lk.transcription_final`, legacy transcription packets duplicating
both, and its state as the `lk.agent.state` attribute. Each step waits for its event in
Redis before the next, so the expected order is the order of the steps.
"""

from __future__ import annotations

from typing import Any

import pytest

from relay.dev.launch import DevServer
from relay.dev.netns import NetNS
from tests.e2e.support import Event, StartRelay, Streams, assert_seq_contiguous, has, unique
from tests.fixtures.lk_client import LkProcess

pytestmark = pytest.mark.e2e

USER, AGENT = "visitor", "voice-agent"
USER_TRACK, AGENT_TRACK = "TR_user0001", "TR_agent001"
Expected = tuple[str, str, dict[str, Any]]


def stream_attributes(segment: str, track: str, final: bool) -> dict[str, str]:
    return {
        "lk.segment_id": segment,
        "lk.transcribed_track_id": track,
        "lk.transcription_final": "true" if final else "false",
    }


class Session:
    """Drives the two clients and records the events each step must produce."""

    def __init__(self, lk: LkProcess, streams: Streams, room: str) -> None:
        self.lk, self.streams, self.room = lk, streams, room
        self.expected: list[Expected] = [("observer.joined", "", {})]

    async def expect(self, kind: str, sender: str, data: dict[str, Any]) -> None:
        self.expected.append((kind, sender, data))
        await self.streams.wait_room(self.room, has(kind, **data), what=f"{kind} {data}")

    async def agent_state(self, state: str, previous: str | None) -> None:
        await self.lk.call("set_attributes", client=AGENT, attributes={"lk.agent.state": state})
        await self.expect("agent.state", AGENT, {"state": state, "previous": previous})

    async def user_transcript(self, segment: str, text: str, final: bool) -> None:
        """One stream per update, sent by the agent as the user (sender_identity)."""
        attributes = stream_attributes(segment, USER_TRACK, final)
        await self.lk.call(
            "stream_text",
            client=AGENT,
            chunks=[text],
            topic="lk.transcription",
            attributes=attributes,
            sender_identity=USER,
        )
        kind = "transcript.final" if final else "transcript.partial"
        data = {"role": "user", "text": text, "segment_id": segment, "track_id": USER_TRACK}
        await self.expect(kind, USER, data if final else {**data, "mode": "cumulative"})

    async def legacy(self, identity: str, segment: str, text: str, final: bool) -> None:
        track = USER_TRACK if identity == USER else AGENT_TRACK
        segments = [{"id": segment, "text": text, "final": final, "language": "en"}]
        await self.lk.call(
            "publish_transcription",
            client=AGENT,
            identity=identity,
            track_sid=track,
            segments=segments,
        )


async def test_livekit_agents_session(
    e2e_ns: NetNS, e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    room = unique("agents")
    relay = start_relay(rooms=[room])
    await relay.wait_ready()
    server = e2e_devserver
    async with LkProcess.start(e2e_ns) as lk:
        s = Session(lk, streams, room)
        await lk.connect(USER, server.ws_url, server.token(USER, room))
        await s.expect("participant.joined", USER, {"identity": USER, "kind": "standard"})
        agent_token = server.token(AGENT, room, kind="agent", can_update_own_metadata=True)
        await lk.connect(AGENT, server.ws_url, agent_token)
        await s.expect("participant.joined", AGENT, {"identity": AGENT, "kind": "agent"})
        await s.agent_state("listening", None)

        # The user speaks: cumulative partials, then the final; its legacy duplicate is
        # dropped (the agent's own legacy partial after it proves it was decoded).
        await s.user_transcript("SG_u1", "what is", final=False)
        await s.user_transcript("SG_u1", "what is my order status", final=False)
        await s.user_transcript("SG_u1", "what is my order status?", final=True)
        await s.legacy(USER, "SG_u1", "what is my order status?", final=True)
        await s.agent_state("thinking", "listening")

        # The agent answers: a legacy partial, the delta stream (final in its trailer),
        # the legacy final of the same segment (a duplicate), then another segment.
        await s.legacy(AGENT, "SG_a1", "Your order", final=False)
        partial = {"role": "agent", "text": "Your order", "segment_id": "SG_a1"}
        await s.expect(
            "transcript.partial", AGENT, {**partial, "mode": "cumulative", "language": "en"}
        )
        await s.agent_state("speaking", "thinking")
        answer = ["Your order ", "ships ", "tomorrow."]
        reply = await lk.call(
            "stream_text",
            client=AGENT,
            chunks=answer,
            topic="lk.transcription",
            attributes=stream_attributes("SG_a1", AGENT_TRACK, final=False),
            final_attributes={"lk.transcription_final": "true"},
        )
        # While the delta stream is open: the text so far after each chunk, then the final.
        spoken = {"role": "agent", "segment_id": "SG_a1", "track_id": AGENT_TRACK}
        for n in range(1, len(answer) + 1):
            so_far = {**spoken, "text": "".join(answer[:n]), "mode": "cumulative"}
            s.expected.append(("transcript.partial", AGENT, so_far))
        await s.expect("transcript.final", AGENT, {**spoken, "text": "".join(answer)})
        await s.legacy(AGENT, "SG_a1", "".join(answer), final=True)
        await s.legacy(AGENT, "SG_a2", "Anything else?", final=True)
        second = {"role": "agent", "text": "Anything else?", "segment_id": "SG_a2"}
        await s.expect("transcript.final", AGENT, {**second, "language": "en"})
        await s.agent_state("listening", "speaking")

        chat = await lk.call("send_text", client=USER, text="thanks!", topic="lk.chat")
        await s.expect("chat.message", USER, {"text": "thanks!"})
        stopped = await relay.stop()
    assert stopped.returncode == 0
    s.expected.append(("observer.left", "", {"reason": "stopped"}))

    events = await streams.room_events(room)
    assert [(e["kind"], e["participant"]["identity"], e["data"]) for e in events] == s.expected
    assert_seq_contiguous(events)
    finals = [e for e in events if e["kind"] == "transcript.final"]
    assert [e["data"]["segment_id"] for e in finals] == ["SG_u1", "SG_a1", "SG_a2"]
    assert_sources(events, reply["stream_id"], chat["stream_id"])


def assert_sources(events: list[Event], answer_stream: str, chat_stream: str) -> None:
    """Protocols, roles and sources: what each event came from."""
    by_kind: dict[str, list[Event]] = {}
    for event in events:
        by_kind.setdefault(event["kind"], []).append(event)
        if event["kind"] in (
            "transcript.partial",
            "transcript.final",
            "agent.state",
            "chat.message",
        ):
            assert event["protocol"] == "livekit-agents", event
            expected_role = "agent" if event["participant"]["identity"] == AGENT else "user"
            assert event["participant"]["role"] == expected_role, event
    assert {e["source"]["attribute"] for e in by_kind["agent.state"]} == {"lk.agent.state"}
    streamed_final = by_kind["transcript.final"][1]
    assert streamed_final["source"] == {"topic": "lk.transcription", "stream_id": answer_stream}
    partials = by_kind["transcript.partial"]
    assert [p["source"].get("signal") for p in partials] == [
        None,  # the user's own streams (one per update)
        None,
        "transcription_received",  # the agent's legacy partial
        None,  # the agent's delta stream while open
        None,
        None,
    ]
    for open_stream in partials[3:]:
        assert open_stream["source"] == {"topic": "lk.transcription", "stream_id": answer_stream}
    assert by_kind["chat.message"][0]["source"] == {"topic": "lk.chat", "stream_id": chat_stream}
