"""The worker's shutdown when rooms cannot finish handing on: Redis away, the buffer full,
an observer re-joining whose connect cannot be cancelled. It must end within the grace
period plus that connect, count what it could not write, and never hang."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from livekit import rtc
from pydantic import SecretStr

from relay.config import (
    HttpSettings,
    LiveKitSettings,
    PipelineSettings,
    RedisSettings,
    Settings,
)
from relay.observer import RoomTarget
from relay.worker import Worker
from tests.fixtures.sockets import free_port
from tests.observer.sdk_objects import SLOW, Script, ScriptedRoom, remote_participant
from tests.support import dropped

GRACE_S = 1.0
SLOW_CONNECT_S = 1.5  # a native connect in flight: it cannot be cancelled, only awaited


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 (counters have no event to wait on)
            await asyncio.sleep(0.02)


def busy_room_then_reconnecting() -> Script:
    """First connect: joins, 10 packets arrive at once, dropped. Second connect: slow."""

    def arrivals(room: ScriptedRoom) -> None:
        if room.script.connects > 0:
            return  # only the first connect finds a busy room
        user = remote_participant("user-1", sid="PA_u")
        for n in range(10):
            body = json.dumps({"type": "user_message", "text": f"m{n}"}).encode()
            packet = rtc.DataPacket(body, rtc.DataPacketKind.KIND_RELIABLE, user, "")
            asyncio.get_running_loop().call_soon(room.emit, "data_received", packet)

    return Script(["SIGNAL_CLOSE", SLOW], slow_s=SLOW_CONNECT_S, during_connect=arrivals)


async def test_shutdown_ends_with_redis_away_a_full_buffer_and_a_connect_in_flight() -> None:
    settings = Settings(
        redis=RedisSettings(url=SecretStr(f"redis://127.0.0.1:{free_port()}/0")),
        livekit=LiveKitSettings(
            url="ws://127.0.0.1:9",
            api_key="devkey",
            api_secret=SecretStr("devsecret-devsecret-devsecret-000"),
            rejoin_backoff_initial_s=0.01,
        ),
        pipeline=PipelineSettings(buffer_max_events=3, retry_initial_s=0.05, retry_max_s=0.1),
        http=HttpSettings(host="127.0.0.1", port=0),
        shutdown_grace_s=GRACE_S,
    )
    script = busy_room_then_reconnecting()
    worker = Worker(settings, room_factory=script.room)
    refused_before, timeouts_before = dropped("shutdown"), dropped("shutdown_timeout")
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.1)  # the HTTP server is up
    worker.rooms.want(RoomTarget(room="busy"))
    await eventually(lambda: worker.pipeline.buffered == 3)  # full: the decode task waits
    await eventually(lambda: len(script.rooms) == 2)  # dropped, now in its slow re-join
    worker.request_stop()
    async with asyncio.timeout(GRACE_S + SLOW_CONNECT_S + 5):  # never a hang
        status = await running
    assert status == 2  # events could not be written: said so, not hidden
    # observer.joined, 10 packets, observer.reconnecting: 12 events (the observer was
    # cancelled in its connect: no observer.left); 3 were accepted and are unwritten
    # (shutdown_timeout), the rest were refused by the closed pipeline (shutdown).
    assert dropped("shutdown_timeout") - timeouts_before == 3
    assert dropped("shutdown") - refused_before == 9
