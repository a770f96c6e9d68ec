"""SDK load clients for the end-to-end benchmarks; runs INSIDE the bench's network namespace.

One process holds one `rtc.Room` per room (as the relay does) and is driven by JSON
lines on stdin, answering JSON lines on stdout:

    python bench/lk_load.py publish   --url ws://H:P --rooms a,b,c
    python bench/lk_load.py subscribe --url ws://H:P --rooms a,b,c

Credentials come from LIVEKIT_API_KEY / LIVEKIT_API_SECRET (argv is visible to others).

- publish: one agent participant per room (`liveavatar-agent-<room>`). Command
  `{"op": "run", "tag": T, "rate": N, "seconds": S, "out": PATH}` publishes LiveAvatar
  `avatar.transcription.chunk` packets on `agent-response`, N/s in total spread evenly
  over the rooms, for S seconds; each packet's `sent_at` is `time.time()` just before
  its `publish_data` call. Writes `{event_id: sent_at}` to PATH, answers a summary.
  With `"flood": true`, `rate` is only a ceiling: each room sends as fast as its awaited
  `publish_data` returns, up to it, and stops when the S seconds are over.
- subscribe: one hidden, receive-only participant per room (like the relay's observer)
  recording, per packet, `time.time()` in the `data_received` callback minus `sent_at`.
  Command `{"op": "dump", "out": PATH}` writes `{event_id: latency_s}` to PATH and
  forgets them.

EOF on stdin or SIGTERM: leave every room and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from livekit import api, rtc

TOPIC = "agent-response"
CONNECT_TIMEOUT_S = 10.0
WORDS = [
    "Sure,",
    "I",
    "can",
    "help",
    "with",
    "that.",
    "Your",
    "order",
    "shipped",
    "this",
    "morning",
]


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def token(room: str, identity: str, *, hidden: bool) -> str:
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        hidden=hidden,
        can_publish=not hidden,
        can_publish_data=not hidden,
        can_subscribe=True,
    )
    builder = api.AccessToken(os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"])
    builder = builder.with_identity(identity).with_grants(grants).with_ttl(timedelta(hours=1))
    if not hidden:
        builder = builder.with_kind("agent")
    return str(builder.to_jwt())


class Load:
    def __init__(self, mode: str, url: str, rooms: Sequence[str]) -> None:
        self.mode, self.url, self.names = mode, url, list(rooms)
        self.rooms: list[rtc.Room] = []
        self.received: dict[str, float] = {}
        self.unparsed = 0

    async def connect(self) -> None:
        options = rtc.RoomOptions(auto_subscribe=False, connect_timeout=CONNECT_TIMEOUT_S)
        for name in self.names:
            room = rtc.Room()
            if self.mode == "subscribe":
                room.on("data_received", self.on_data)
                jwt = token(name, f"floor-{name}", hidden=True)
            else:
                jwt = token(name, f"liveavatar-agent-{name}", hidden=False)
            # Never cancelled (a cancelled connect upsets the SDK): connect_timeout bounds it.
            await room.connect(self.url, jwt, options)
            self.rooms.append(room)

    def on_data(self, packet: rtc.DataPacket) -> None:
        now = time.time()
        try:
            message = json.loads(packet.data)
            self.received[message["event_id"]] = now - float(message["sent_at"])
        except (ValueError, KeyError, TypeError):
            self.unparsed += 1

    async def run(
        self, tag: str, rate: float, seconds: float, flood: bool = False
    ) -> dict[str, Any]:
        """Publish `rate`/s in total for `seconds`: one paced sender task per room
        (`flood`: stop at the end of `seconds`, whatever is not sent yet)."""
        per_room = rate / len(self.rooms)
        count = max(1, round(per_room * seconds))
        start = time.monotonic() + 0.05
        sent: dict[str, float] = {}
        lags: list[float] = []
        errors: list[str] = []
        until = start + seconds if flood else None
        senders = [
            self._send_room(i, room, tag, per_room, count, start, sent, lags, errors, until)
            for i, room in enumerate(self.rooms)
        ]
        await asyncio.gather(*senders)
        elapsed = time.monotonic() - start
        lags.sort()
        return {
            "sent": sent,
            "published": len(sent),
            "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "elapsed_s": elapsed,
            "lag_p50_ms": lags[len(lags) // 2] * 1000 if lags else 0.0,
            "lag_max_ms": lags[-1] * 1000 if lags else 0.0,
        }

    async def _send_room(
        self,
        index: int,
        room: rtc.Room,
        tag: str,
        per_room: float,
        count: int,
        start: float,
        sent: dict[str, float],
        lags: list[float],
        errors: list[str],
        until: float | None = None,
    ) -> None:
        """Send `count` packets on schedule (until `until`, if given); one awaited publish
        at a time per room (each in-flight publish_data subscribes its own FFI queue, so
        unbounded concurrency would make the publisher's own dispatch cost grow with the
        backlog)."""
        session = f"bench-{self.names[index]}"
        participant = room.local_participant
        # Rooms start staggered within one interval so the total rate is smooth.
        offset = index / (per_room * len(self.rooms))
        for n in range(count):
            if until is not None and time.monotonic() >= until:
                return
            due = start + offset + n / per_room
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(max(0.0, -delay))
            event_id = f"{tag}-{index}-{n}"
            message: dict[str, Any] = {
                "event_id": event_id,
                "event_type": "avatar.transcription.chunk",
                "session_id": session,
                "text": WORDS[n % len(WORDS)] + " ",
                "sent_at": time.time(),
            }
            try:
                await participant.publish_data(json.dumps(message), reliable=True, topic=TOPIC)
            except Exception as exc:  # reported, not fatal: the bench counts it
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            sent[event_id] = message["sent_at"]

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["op"] == "run" and self.mode == "publish":
            result = await self.run(
                cmd["tag"], float(cmd["rate"]), float(cmd["seconds"]), bool(cmd.get("flood"))
            )
            write_json(cmd["out"], result.pop("sent"))
            return result
        if cmd["op"] == "dump" and self.mode == "subscribe":
            received, self.received = self.received, {}
            write_json(cmd["out"], received)
            return {"dumped": len(received), "unparsed": self.unparsed}
        raise ValueError(f"unknown op {cmd['op']!r} for {self.mode}")

    async def close(self) -> None:
        for room in self.rooms:
            try:
                await asyncio.wait_for(room.disconnect(), 5)
            except Exception as exc:  # leaving anyway: the process exits next
                emit({"warning": f"disconnect: {type(exc).__name__}: {exc}"})


def write_json(path: str, data: dict[str, float]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(data, out)


async def serve(args: argparse.Namespace) -> None:
    """Answer commands one at a time; EOF or SIGTERM cancels the one running and exits."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    load = Load(args.mode, args.url, args.rooms.split(","))
    stopping = asyncio.create_task(stop.wait())
    read = asyncio.create_task(reader.readline())
    try:
        started = time.monotonic()
        await load.connect()
        emit({"ready": True, "rooms": len(load.rooms), "connect_s": time.monotonic() - started})
        while True:
            await asyncio.wait({read, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done() or not (line := read.result()):
                break
            work = asyncio.create_task(answer(load, json.loads(line)))
            read = asyncio.create_task(reader.readline())
            if not await finished(work, stopping, read):
                break
    finally:
        stopping.cancel()
        read.cancel()
        await load.close()


async def finished(
    work: asyncio.Task[None], stopping: asyncio.Task[bool], read: asyncio.Task[bytes]
) -> bool:
    """Wait for `work`; cancel it on SIGTERM or EOF on stdin (the bench is closing)."""
    watch: set[asyncio.Future[Any]] = {work, stopping, read}
    while not work.done():
        await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done() or (read.done() and not read.result()):
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            return False
        watch.discard(read)  # a next command already: it waits for this one's answer
    return True


async def answer(load: Load, cmd: dict[str, Any]) -> None:
    try:
        emit({"ok": True, **await load.handle(cmd)})
    except Exception as exc:  # answered, the bench decides
        emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def main() -> None:
    parser = argparse.ArgumentParser(description="SDK load clients for bench/e2e.py, rooms.py")
    parser.add_argument("mode", choices=["publish", "subscribe"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rooms", required=True, help="comma-separated room names")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
