"""The worker's shutdown when rooms cannot finish handing on: Redis away, the buffer full,
an observer re-joining whose connect cannot be cancelled. It must end within the grace
period plus that connect, count what it could not write, and never hang."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from livekit import rtc
from prometheus_client import REGISTRY
from pydantic import SecretStr

from relay.config import (
    HttpSettings,
    LiveKitSettings,
    PipelineSettings,
    RedisSettings,
    Settings,
)
from relay.observer import RoomObserver, RoomTarget
from relay.observer.sdk_room import ObserverRoom
from relay.worker import Worker
from tests.fixtures.sockets import free_port
from tests.observer.sdk_objects import remote_participant

GRACE_S = 1.0
SLOW_CONNECT_S = 1.5  # a native connect in flight: it cannot be cancelled, only awaited


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 (counters have no event to wait on)
            await asyncio.sleep(0.02)


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("relay_events_dropped_total", {"reason": reason}) or 0.0


class BusyRoomThenReconnecting(RoomObserver):
    """First connect: joins, receives 10 packets at once, is dropped. Second connect: slow."""

    connects = 0

    async def _connect(self, room: ObserverRoom) -> bool:
        self.connects += 1
        if self.connects == 1:
            self.state = "connected"
            self._disconnected.clear()
            user = remote_participant("user-1", sid="PA_u")
            for n in range(10):
                body = json.dumps({"type": "user_message", "text": f"m{n}"}).encode()
                packet = rtc.DataPacket(body, rtc.DataPacketKind.KIND_RELIABLE, user, "")
                asyncio.get_running_loop().call_soon(room.emit, "data_received", packet)
            reason = rtc.DisconnectReason.SIGNAL_CLOSE
            asyncio.get_running_loop().call_later(0.05, self._on_disconnected, reason)
            return True
        connect = asyncio.ensure_future(asyncio.sleep(SLOW_CONNECT_S))
        try:
            await asyncio.shield(connect)
        except asyncio.CancelledError:
            await self._leave_after_connect(connect, room)
            raise
        return False


class WorkerWithBusyRoom(Worker):
    def _make_observer(self, target: RoomTarget) -> RoomObserver:
        s = self.settings
        return BusyRoomThenReconnecting(target, self.pipeline, s.livekit, s.pipeline)


async def test_shutdown_ends_with_redis_away_a_full_buffer_and_a_connect_in_flight() -> None:
    settings = Settings(
        redis=RedisSettings(url=SecretStr(f"redis://127.0.0.1:{free_port()}/0")),
        livekit=LiveKitSettings(rejoin_backoff_initial_s=0.01),
        pipeline=PipelineSettings(buffer_max_events=3, retry_initial_s=0.05, retry_max_s=0.1),
        http=HttpSettings(host="127.0.0.1", port=0),
        shutdown_grace_s=GRACE_S,
    )
    worker = WorkerWithBusyRoom(settings)
    refused_before, timeouts_before = dropped("shutdown"), dropped("shutdown_timeout")
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.1)  # the HTTP server is up
    worker.rooms.want(RoomTarget(room="busy"))
    await eventually(lambda: worker.pipeline.buffered == 3)  # full: the decode task waits
    [observer] = worker.rooms._observers.values()
    assert isinstance(observer, BusyRoomThenReconnecting)
    await eventually(lambda: observer.connects == 2)  # dropped, now in its slow re-join
    worker.request_stop()
    async with asyncio.timeout(GRACE_S + SLOW_CONNECT_S + 5):  # never a hang
        status = await running
    assert status == 2  # events could not be written: said so, not hidden
    # observer.joined, 10 packets, observer.reconnecting: 12 events (the observer was
    # cancelled in its connect: no observer.left); 3 were accepted and are unwritten
    # (shutdown_timeout), the rest were refused by the closed pipeline (shutdown).
    assert dropped("shutdown_timeout") - timeouts_before == 3
    assert dropped("shutdown") - refused_before == 9
