"""Simulated conversations played by real `livekit` SDK clients, for the demo and e2e tests.

Each scenario joins a room as the participants a real session has (the user's browser, the
agent, the avatar), sends exactly what those protocols send, and returns what it sent so a
test can assert the relay's output. Run inside the dev server's network namespace:

    python -m relay.dev.scenarios liveavatar --url ws://10.213.0.1:7880 --room demo ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from livekit import rtc

from relay.dev.tokens import join_token

RELIABLE = True
USER_LINES = ["Hi, can you tell me about your pricing?", "What about the enterprise plan?"]
AVATAR_LINES = [
    "Sure. We have three plans: starter, team and enterprise.",
    "Enterprise includes single sign-on, audit logs and a dedicated support engineer.",
]


class Credentials:
    def __init__(self, url: str, api_key: str, api_secret: str) -> None:
        self.url, self.api_key, self.api_secret = url, api_key, api_secret

    def token(self, room: str, identity: str, *, kind: str | None = None) -> str:
        ttl = timedelta(minutes=30)
        grants = {"can_publish": True, "can_subscribe": True}
        return join_token(
            self.api_key, self.api_secret, identity, room, kind=kind, ttl=ttl, **grants
        )


async def join(
    creds: Credentials, room_name: str, identity: str, kind: str | None = None
) -> rtc.Room:
    room = rtc.Room()
    options = rtc.RoomOptions(auto_subscribe=False, connect_timeout=5.0)
    await room.connect(creds.url, creds.token(room_name, identity, kind=kind), options)
    return room


class Sender:
    """Publishes JSON data packets and records them, pacing between messages."""

    def __init__(self, pace_s: float) -> None:
        self.pace_s = pace_s
        self.sent: list[dict[str, Any]] = []

    async def publish(self, room: rtc.Room, topic: str, message: dict[str, Any]) -> None:
        payload = json.dumps(message).encode()
        await room.local_participant.publish_data(payload, reliable=RELIABLE, topic=topic)
        self.sent.append({"from": room.local_participant.identity, "topic": topic, **message})
        await asyncio.sleep(self.pace_s)


def _envelope(session_id: str, event_type: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex[:12],
        "event_type": event_type,
        "session_id": session_id,
        **fields,
    }


async def liveavatar_session(
    creds: Credentials, room_name: str, *, session_id: str | None = None, pace_s: float = 0.2
) -> list[dict[str, Any]]:
    """A LiveAvatar FULL-mode session: turns, streaming transcripts, an interrupt, a stop."""
    session_id = session_id or uuid.uuid4().hex[:8]
    user = await join(creds, room_name, "user-browser")
    agent = await join(creds, room_name, f"liveavatar-agent-{session_id}", kind="agent")
    avatar = await join(creds, room_name, "heygen")
    send = Sender(pace_s)

    async def respond(event_type: str, **fields: Any) -> None:
        await send.publish(agent, "agent-response", _envelope(session_id, event_type, **fields))

    try:
        await asyncio.sleep(pace_s)  # let every participant announce itself
        for turn, (question, answer) in enumerate(zip(USER_LINES, AVATAR_LINES, strict=True)):
            await respond("user.speak_started")
            words = question.split()
            for n in range(2, len(words) + 1, 3):  # user chunks are cumulative
                await respond("user.transcription.chunk", text=" ".join(words[:n]))
            await respond("user.speak_ended")
            await respond("user.transcription", text=question)
            await respond("avatar.speak_started")
            for word in answer.split():  # avatar chunks are deltas
                await respond("avatar.transcription.chunk", text=word + " ")
                if turn == 1 and word == "sign-on,":
                    # The user barges in: the browser sends an interrupt without event_id.
                    await send.publish(user, "agent-control", {"event_type": "avatar.interrupt"})
                    break
            await respond("avatar.speak_ended")
            await respond("avatar.transcription", text=answer)
        await send.publish(
            user,
            "agent-control",
            _envelope(session_id, "avatar.speak_text", text="Thanks, that is all."),
        )
        await respond("session.stopped", end_reason="USER_CLOSED")
    finally:
        for room in (user, agent, avatar):
            await room.disconnect()
    return send.sent


ScenarioFn = Callable[..., Awaitable[list[dict[str, Any]]]]
SCENARIOS: dict[str, ScenarioFn] = {"liveavatar": liveavatar_session}


async def _main(args: argparse.Namespace) -> int:
    creds = Credentials(args.url, args.api_key, args.api_secret)
    for n in range(args.repeat):
        sent = await SCENARIOS[args.scenario](creds, args.room, pace_s=args.pace_s)
        print(json.dumps({"scenario": args.scenario, "round": n, "sent": len(sent)}), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # The SDK warns on every connect that the dev server has no /rtc/v1 path.
    logging.basicConfig(level=logging.ERROR)
    parser = argparse.ArgumentParser(prog="python -m relay.dev.scenarios")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--pace-s", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=1)
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
