"""Participants the e2e tests run INSIDE the namespace (real `livekit` SDK), one per process.

    python tests/e2e/actors.py liveavatar --url U --room R [--session-id S] [--pace-s P]
    python tests/e2e/actors.py garbage --url U --room R --count N [--oversized-sizes ...]
    python tests/e2e/actors.py ticker --url U --room R [--interval-s P]
    python tests/e2e/actors.py tickers --url U --room R1,R2,... [--interval-s P]
    python tests/e2e/actors.py conversations --url U --room R1,R2,... [--interval-s P]
        [--keep-going]
    python tests/e2e/actors.py flood --url U --room R --seconds S [--participants N] [--stagger-s D]

API key and secret come from LIVEKIT_API_KEY / LIVEKIT_API_SECRET (argv is visible to
every user). Each prints one JSON line on stdout when done: what it sent, so the tests
derive their expectations from it rather than from constants.

- `liveavatar`: `relay.dev.scenarios.liveavatar_session` (user browser, agent, avatar).
- `garbage`: one participant publishes `count` malformed packets on `agent-response`
  (random bytes, invalid UTF-8, malformed JSON, cycling), paced in bursts, oversized
  payloads among them, then reports and stays until its stdin closes.
- `timed`: a LiveAvatar session with known timings (`--turns user_s:latency_s:avatar_s,...`)
  for the analytics end-to-end test; reports the script it played.
- `ticker`: publishes `{"event_type": "tick", "n": i}` on `agent-response` every
  `interval_s` until its stdin closes (or SIGTERM), then leaves and reports the count.
- `conversations`: a LiveAvatar agent in each of the comma-separated rooms plays turns
  until its stdin closes; reports each event's id and when it was sent (`--keep-going`:
  a failed `publish_data` is reported in `failed` instead of ending the actor, and the
  SDK's `reconnected` times too: the server may restart meanwhile).
- `tickers`: the ticker in each of the comma-separated rooms at once (one process, one
  participant per room); reports the count per room.
- `flood`: `participants` participants (`identity`-0, -1, ...) in one room each publish
  ticks on `agent-response` as fast as `publish_data` returns, for `seconds`, the i-th
  starting `i * stagger_s` after the first; reports the count and payload bytes sent per
  identity, then stays until its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from relay.dev.scenarios import Credentials, join, liveavatar_session

GARBAGE_KINDS = ("random_bytes", "invalid_utf8", "malformed_json")
GARBAGE_TOPIC = "agent-response"
HOLD_MAX_S = 60.0


def garbage_payload(kind: str, n: int, rng: random.Random) -> bytes:
    """The `n`-th malformed packet of `kind`; never a JSON object a decoder could accept."""
    if kind == "random_bytes":
        # A leading 0xff is never valid UTF-8, so the rest may be anything.
        return b"\xff" + rng.randbytes(rng.randint(1, 200))
    if kind == "invalid_utf8":
        return b'{"event_type": "user.transcription", "text": "caf\xe9 ' + str(n).encode() + b'"}'
    return f'{{"event_type": "user.transcription", "text": "unterminated {n}'.encode()


def report(result: dict[str, Any]) -> None:
    print(json.dumps({"result": result}), flush=True)


async def stdin_closed(timeout_s: float) -> None:
    """Return when stdin reaches EOF (the test closed it), or after `timeout_s`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        async with asyncio.timeout(timeout_s):
            while await reader.readline():
                pass
    except TimeoutError:
        pass


async def play_liveavatar(creds: Credentials, args: argparse.Namespace) -> dict[str, Any]:
    sent = await liveavatar_session(
        creds, args.room, session_id=args.session_id, pace_s=args.pace_s
    )
    return {"sent": sent}


async def play_garbage(creds: Credentials, args: argparse.Namespace) -> None:
    """Garbage in bursts; every `oversized_every` packets, one payload of each of
    `oversized_sizes` (the SDK may refuse some: reported, not raised); then a text stream
    of `stream_bytes`; then a marker packet on topic `marker`."""
    rng = random.Random(args.seed)
    room = await join(creds, args.room, args.identity)
    local = room.local_participant
    counts = dict.fromkeys(GARBAGE_KINDS, 0)
    oversized: list[dict[str, Any]] = []
    try:
        for n in range(args.count):
            kind = GARBAGE_KINDS[n % len(GARBAGE_KINDS)]
            await local.publish_data(garbage_payload(kind, n, rng), topic=GARBAGE_TOPIC)
            counts[kind] += 1
            if (n + 1) % args.oversized_every == 0:
                for size in args.oversized_sizes:
                    oversized.append(await _try_publish(local, b"x" * size))
            if (n + 1) % args.burst == 0:
                await asyncio.sleep(args.pace_s)
        if args.stream_bytes:
            await local.send_text("y" * args.stream_bytes, topic="lk.chat")
        # Reliable and ordered: once this marker arrives, everything before it did.
        await local.publish_data(b"done", topic="marker")
        report({"counts": counts, "oversized": oversized, "stream_bytes": args.stream_bytes})
        # Stay until the test saw the marker: a packet that arrives after its sender left
        # has no sender in the SDK (`DataPacket.participant` is None).
        await stdin_closed(HOLD_MAX_S)
    finally:
        await room.disconnect()


async def _try_publish(local: Any, payload: bytes) -> dict[str, Any]:
    try:
        await local.publish_data(payload, topic=GARBAGE_TOPIC)
    except Exception as exc:  # the SDK's refusal is what the test reports
        return {"size": len(payload), "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"size": len(payload), "ok": True, "error": None}


async def play_ticker(creds: Credentials, args: argparse.Namespace) -> dict[str, Any]:
    """Publishes until stdin closes (or SIGTERM), then reports how many it sent."""
    room = await join(creds, args.room, args.identity)
    print(json.dumps({"ready": True}), flush=True)
    stop = asyncio.create_task(stdin_closed(HOLD_MAX_S))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.cancel)
    sent = 0
    try:
        while not stop.done():
            message = {"event_type": "tick", "event_id": f"tick-{sent}", "n": sent}
            payload = json.dumps(message).encode()
            await room.local_participant.publish_data(payload, topic=GARBAGE_TOPIC)
            sent += 1
            await asyncio.wait({stop}, timeout=args.interval_s)
    finally:
        await room.disconnect()
    return {"sent": sent}


async def play_tickers(creds: Credentials, args: argparse.Namespace) -> dict[str, Any]:
    """A ticker in each room, all in this process, until stdin closes (or SIGTERM)."""
    names = args.room.split(",")
    rooms = await asyncio.gather(*(join(creds, name, args.identity) for name in names))
    print(json.dumps({"ready": True}), flush=True)
    stop = asyncio.create_task(stdin_closed(HOLD_MAX_S))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.cancel)
    sent = dict.fromkeys(names, 0)

    async def tick(name: str, room: Any) -> None:
        while not stop.done():
            n = sent[name]
            message = {"event_type": "tick", "event_id": f"tick-{n}", "n": n}
            await room.local_participant.publish_data(
                json.dumps(message).encode(), topic=GARBAGE_TOPIC
            )
            sent[name] = n + 1
            await asyncio.wait({stop}, timeout=args.interval_s)

    try:
        await asyncio.gather(*(tick(name, room) for name, room in zip(names, rooms, strict=True)))
    finally:
        for room in rooms:
            await room.disconnect()
    return {"sent": sent}


async def play_timed(creds: Credentials, args: argparse.Namespace) -> dict[str, Any]:
    """LiveAvatar turns with known durations: the user speaks `user_s`, the avatar starts
    `latency_s` after the user stopped and speaks `avatar_s`."""
    session_id = args.session_id
    user = await join(creds, args.room, "user-browser")
    agent = await join(creds, args.room, f"liveavatar-agent-{session_id}", kind="agent")
    avatar = await join(creds, args.room, "heygen")
    local = agent.local_participant

    async def respond(event_type: str, **fields: Any) -> None:
        message = {"event_type": event_type, "session_id": session_id, **fields}
        await local.publish_data(json.dumps(message).encode(), topic="agent-response")

    turns = [tuple(float(x) for x in t.split(":")) for t in args.turns.split(",")]
    try:
        await asyncio.sleep(0.5)
        for n, (user_s, latency_s, avatar_s) in enumerate(turns):
            await respond("user.speak_started")
            await asyncio.sleep(user_s)
            await respond("user.speak_ended")
            await respond("user.transcription", text=f"question number {n}")
            await asyncio.sleep(latency_s)
            await respond("avatar.speak_started")
            await respond("avatar.transcription.chunk", text="answer ")
            await asyncio.sleep(avatar_s)
            await respond("avatar.speak_ended")
            await respond("avatar.transcription", text=f"answer number {n}")
            await asyncio.sleep(0.3)
        await respond("session.stopped", end_reason="USER_CLOSED")
    finally:
        for room in (user, agent, avatar):
            await room.disconnect()
    return {"turns": turns}


# One LiveAvatar FULL turn, as the agent publishes it.
CONVERSATION: tuple[tuple[str, dict[str, str]], ...] = (
    ("user.speak_started", {}),
    ("user.transcription.chunk", {"text": "can you"}),
    ("user.speak_ended", {}),
    ("user.transcription", {"text": "can you help"}),
    ("avatar.speak_started", {}),
    ("avatar.transcription.chunk", {"text": "sure"}),
    ("avatar.speak_ended", {}),
    ("avatar.transcription", {"text": "sure, here it is"}),
)


async def play_conversations(creds: Credentials, args: argparse.Namespace) -> dict[str, Any]:
    """A LiveAvatar agent in each of the comma-separated rooms plays turns (CONVERSATION,
    one event every `interval_s`) until stdin closes; reports per room each event's
    `event_id` and when `publish_data` returned (epoch ms): what was sent, and when."""
    names = args.room.split(",")
    agents = await asyncio.gather(
        *(join(creds, name, f"liveavatar-agent-{name}", kind="agent") for name in names)
    )
    print(json.dumps({"ready": True}), flush=True)
    stop = asyncio.create_task(stdin_closed(HOLD_MAX_S))
    sent: dict[str, list[tuple[str, int]]] = {name: [] for name in names}
    failed: dict[str, list[tuple[str, int, str]]] = {name: [] for name in names}
    reconnected: list[int] = []  # epoch ms of each SDK `reconnected` (--keep-going)
    for room in agents:
        room.on("reconnected", lambda: reconnected.append(int(time.time() * 1000)))

    async def talk(name: str, room: Any) -> None:
        n = 0
        while not stop.done():
            event_type, fields = CONVERSATION[n % len(CONVERSATION)]
            event_id = f"{name}-{n}"
            n += 1
            message = {"event_type": event_type, "event_id": event_id, "session_id": name}
            payload = json.dumps({**message, **fields}).encode()
            try:
                await room.local_participant.publish_data(payload, topic="agent-response")
            except Exception as exc:  # --keep-going: the server may be away; reported
                if not args.keep_going:
                    raise
                failed[name].append((event_id, int(time.time() * 1000), repr(exc)))
            else:
                sent[name].append((event_id, int(time.time() * 1000)))
            await asyncio.wait({stop}, timeout=args.interval_s)

    try:
        await asyncio.gather(*(talk(n, r) for n, r in zip(names, agents, strict=True)))
    finally:
        for room in agents:
            await room.disconnect()
    return {"sent": sent, "failed": failed, "reconnected": reconnected}


def flood_payload(identity: str, n: int) -> bytes:
    """The `n`-th packet of a `flood` participant (the tests recompute its size)."""
    message = {"event_type": "tick", "event_id": f"{identity}-{n}", "n": n}
    return json.dumps(message).encode()


async def play_flood(creds: Credentials, args: argparse.Namespace) -> None:
    """Each participant publishes as fast as it can for `seconds` (the i-th from `i *
    stagger_s` on), then the counts are reported; stays until stdin closes (a packet that
    arrives after its sender left has no sender in the SDK)."""
    identities = [f"{args.identity}-{i}" for i in range(args.participants)]
    rooms = await asyncio.gather(*(join(creds, args.room, who) for who in identities))
    print(json.dumps({"ready": True}), flush=True)
    sent = dict.fromkeys(identities, 0)
    sent_bytes = dict.fromkeys(identities, 0)

    async def flood(i: int, identity: str, room: Any) -> None:
        await asyncio.sleep(i * args.stagger_s)
        local = room.local_participant
        until = time.monotonic() + args.seconds
        while time.monotonic() < until:
            payload = flood_payload(identity, sent[identity])
            await local.publish_data(payload, topic=GARBAGE_TOPIC)
            sent[identity] += 1
            sent_bytes[identity] += len(payload)

    try:
        started = time.monotonic()
        await asyncio.gather(
            *(
                flood(i, who, room)
                for i, (who, room) in enumerate(zip(identities, rooms, strict=True))
            )
        )
        report({"sent": sent, "bytes": sent_bytes, "seconds": time.monotonic() - started})
        await stdin_closed(HOLD_MAX_S)
    finally:
        for room in rooms:
            await room.disconnect()


ACTORS = {
    "conversations": play_conversations,
    "flood": play_flood,
    "liveavatar": play_liveavatar,
    "garbage": play_garbage,
    "ticker": play_ticker,
    "tickers": play_tickers,
    "timed": play_timed,
}


def _sizes(text: str) -> list[int]:
    return [int(size) for size in text.split(",") if size]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.actors")
    parser.add_argument("actor", choices=sorted(ACTORS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--identity", default="mallory")
    parser.add_argument("--session-id")
    parser.add_argument("--pace-s", type=float, default=0.02)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--oversized-every", type=int, default=1 << 30)
    parser.add_argument("--oversized-sizes", type=_sizes, default=[])
    parser.add_argument("--stream-bytes", type=int, default=0)
    parser.add_argument("--interval-s", type=float, default=0.01)
    parser.add_argument("--turns", default="1:0.5:1")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--participants", type=int, default=1)
    parser.add_argument("--stagger-s", type=float, default=0.0)
    parser.add_argument("--keep-going", action="store_true", help="conversations: on errors")
    return parser


async def _main(args: argparse.Namespace) -> int:
    key, secret = os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"]
    result = await ACTORS[args.actor](Credentials(args.url, key, secret), args)
    if result is not None:
        report(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(_main(_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
