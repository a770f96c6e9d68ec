"""A LiveLayer widget session: no-topic JSON data packets between the page and the agent.

Each step that yields an event waits for it in Redis before the next step; a message that
must yield nothing (a repeated caption, a state equal to the last one) is followed by one
from the same sender on the same channel, so it was decoded when that one's event is in.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay.dev.launch import DevServer
from relay.dev.netns import NetNS
from tests.e2e.support import StartRelay, Streams, assert_seq_contiguous, has, unique
from tests.fixtures.lk_client import LkProcess

pytestmark = pytest.mark.e2e

PAGE, AGENT = "page-visitor", "livelayer-agent"
Expected = tuple[str, str, str, dict[str, Any]]  # kind, protocol, sender, data


class Widget:
    def __init__(self, lk: LkProcess, streams: Streams, room: str) -> None:
        self.lk, self.streams, self.room = lk, streams, room
        self.expected: list[Expected] = []

    async def send(self, sender: str, message: dict[str, Any]) -> None:
        """A reliable data packet with no topic, as the widget and its agent send them."""
        await self.lk.publish_data(sender, json.dumps(message), topic="")

    async def expect(self, kind: str, protocol: str, sender: str, data: dict[str, Any]) -> None:
        self.expected.append((kind, protocol, sender, data))
        await self.streams.wait_room(self.room, has(kind, **data), what=f"{kind} {data}")

    async def state(self, state: str, previous: str | None) -> None:
        await self.send(AGENT, {"type": "agent_state", "state": state})
        await self.expect("agent.state", "livelayer", AGENT, {"state": state, "previous": previous})

    async def caption(
        self, caption_id: str, text: str, final: bool, *, dropped: bool = False
    ) -> None:
        await self.send(
            AGENT, {"type": "agent_caption", "id": caption_id, "text": text, "final": final}
        )
        if dropped:
            return
        data = {"role": "agent", "text": text, "segment_id": caption_id}
        kind = "transcript.final" if final else "transcript.partial"
        await self.expect(
            kind, "livelayer", AGENT, data if final else {**data, "mode": "cumulative"}
        )


async def test_livelayer_session(
    e2e_ns: NetNS, e2e_devserver: DevServer, streams: Streams, start_relay: StartRelay
) -> None:
    room = unique("livelayer")
    relay = start_relay(rooms=[room])
    await relay.wait_ready()
    server = e2e_devserver
    async with LkProcess.start(e2e_ns) as lk:
        w = Widget(lk, streams, room)
        await lk.connect(PAGE, server.ws_url, server.token(PAGE, room))
        await w.expect(
            "participant.joined", "livekit", PAGE, {"identity": PAGE, "kind": "standard"}
        )
        token = server.token(AGENT, room, kind="agent", can_update_own_metadata=True)
        await lk.connect(AGENT, server.ws_url, token)
        await w.expect("participant.joined", "livekit", AGENT, {"identity": AGENT, "kind": "agent"})

        await w.state("listening", None)
        await w.send(PAGE, {"type": "user_message", "text": "Show me my orders"})
        command = {"command": "user_message", "text": "Show me my orders"}
        await w.expect("command", "livelayer", PAGE, command)
        context = {"url": "/account", "title": "Account"}
        await w.send(PAGE, {"type": "page_context", "context": context, "requestId": "rq-1"})
        payload = {"context": context, "requestId": "rq-1"}
        await w.expect(
            "command", "livelayer", PAGE, {"command": "page_context", "payload": payload}
        )
        await w.state("thinking", "listening")

        # The same state as the lk.agent.state attribute: one agent.state, not two.
        await lk.call("set_attributes", client=AGENT, attributes={"lk.agent.state": "speaking"})
        speaking = {"state": "speaking", "previous": "thinking"}
        await w.expect("agent.state", "livekit-agents", AGENT, speaking)
        await w.send(AGENT, {"type": "agent_state", "state": "speaking"})

        await w.caption("cap-1", "Sure,", final=False)
        await w.caption("cap-1", "Sure,", final=False, dropped=True)  # a repeat: dropped
        await w.caption("cap-1", "Sure, opening your orders.", final=False)
        await w.caption("cap-1", "Sure, opening your orders.", final=True)
        await w.send(AGENT, {"type": "navigate", "url": "/orders"})
        await w.expect(
            "event", "livelayer", AGENT, {"type": "navigate", "payload": {"url": "/orders"}}
        )
        await w.state("idle", "speaking")
        stopped = await relay.stop()
    assert stopped.returncode == 0

    events = await streams.room_events(room)
    got = [(e["kind"], e["protocol"], e["participant"]["identity"], e["data"]) for e in events]
    assert got == [
        ("observer.joined", "relay", "", {}),
        *w.expected,
        ("observer.left", "relay", "", {"reason": "stopped"}),
    ]
    assert_seq_contiguous(events)
    for event in events:
        if event["protocol"] == "livelayer":
            assert event["source"] == {"topic": "", "type": json_type(event)}, event
            role = "agent" if event["participant"]["identity"] == AGENT else "user"
            assert event["participant"]["role"] == role


def json_type(event: dict[str, Any]) -> str:
    """The LiveLayer `type` an event came from."""
    kind, data = event["kind"], event["data"]
    if kind == "command":
        return str(data["command"])
    if kind == "event":
        return str(data["type"])
    return {"agent.state": "agent_state"}.get(kind, "agent_caption")
