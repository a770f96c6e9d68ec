"""The worker (`relay run`): assemble the stages, run until a signal, shut down in order.

Shutdown (SIGTERM/SIGINT), each step bounded by what is left of `shutdown_grace_s`:
1. stop intake: no new rooms (the admin API answers 503 from here on);
2. leave every room, handing what each already received to the pipeline (rooms that
   are not done when the grace runs out go on beside step 3, whose closed intake refuses
   what they still submit, and are cancelled at the end of the grace);
3. flush the pipeline to the sinks (retrying while Redis is away);
4. close the HTTP server and Redis connections, exit 0.
A second signal exits at once (status 1), counting what was still buffered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import structlog

from relay import metrics
from relay.config import Settings
from relay.http import HttpServer, build_app
from relay.observer import RoomTarget
from relay.observer.room import RoomFactory
from relay.observer.sdk_room import ObserverRoom
from relay.pipeline import Pipeline
from relay.redis_client import create_redis
from relay.rooms import RoomManager
from relay.rooms.observed import ObservedRoom
from relay.sinks import RedisStreamsSink, Sink, StdoutSink

log = structlog.get_logger(__name__)

FORCED_EXIT_STATUS = 1


class Worker:
    def __init__(self, settings: Settings, *, room_factory: RoomFactory = ObserverRoom) -> None:
        """`room_factory` makes the SDK rooms the observers join with (a test seam)."""
        self.settings = settings
        self._room_factory = room_factory
        self._stop = asyncio.Event()
        self._signals = 0
        self._redis = create_redis(settings.redis) if "redis" in settings.sinks else None
        self.sinks: list[Sink] = []
        if self._redis is not None:
            self.sinks.append(RedisStreamsSink(self._redis, settings.redis))
        if "stdout" in settings.sinks:
            self.sinks.append(StdoutSink(sys.stdout))
        self.pipeline = Pipeline(settings.pipeline, self.sinks)
        self.rooms = RoomManager(
            self._make_observer,
            max_rooms=settings.max_rooms,
            static_rooms=settings.rooms,
            on_room_left=self.pipeline.forget_room,
        )
        app = build_app(
            self.rooms,
            self.readiness,
            settings.http.admin_token.get_secret_value(),
            mints_tokens=settings.livekit.can_mint_tokens,
        )
        self.http = HttpServer(app, settings.http.host, settings.http.port)

    def _make_observer(self, target: RoomTarget) -> ObservedRoom:
        s = self.settings
        return ObservedRoom(
            target, self.pipeline, s.livekit, s.pipeline, room_factory=self._room_factory
        )

    async def readiness(self) -> dict[str, bool]:
        checks = {"rooms": self.rooms.static_rooms_ready()}
        for sink in self.sinks:
            checks[sink.name] = await sink.ping()
        return checks

    def request_stop(self) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("shutdown_requested")
            self._stop.set()
            return
        lost = self.pipeline.buffered
        log.error("shutdown_forced", events_lost=lost)
        metrics.dropped("forced_exit", lost)
        os._exit(FORCED_EXIT_STATUS)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        metrics.ROOMS_OBSERVED.set_function(self.rooms.observed_count)
        flusher = asyncio.create_task(self.pipeline.run(), name="pipeline")
        await self.http.start()
        try:
            for room in self.settings.rooms:
                self.rooms.want(RoomTarget(room=room))
            log.info("relay_started", rooms=len(self.settings.rooms), sinks=self.settings.sinks)
            await self._stop.wait()
        finally:
            unwritten = await self._shutdown(flusher)
        return 0 if unwritten == 0 else 2

    async def _shutdown(self, flusher: asyncio.Task[None]) -> int:
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        # 1-2. Stop taking rooms, leave them; their received events go to the pipeline.
        leaving = asyncio.ensure_future(self.rooms.stop_all())
        if not await _done_within(leaving, _left(deadline)):
            # Rooms still handing on (a full buffer while Redis is away, a connect that
            # cannot be cancelled): the drain below refuses what they still submit.
            log.error("shutdown_rooms_timeout")
        # 3. Flush, shielded so a stray cancellation cannot lose the final flush.
        unwritten = await asyncio.shield(self.pipeline.drain(_left(deadline)))
        if not await _done_within(leaving, _left(deadline)):
            leaving.cancel()  # what the rooms still hold is counted (`shutdown_timeout`)
            await asyncio.gather(leaving, return_exceptions=True)
        await asyncio.gather(flusher, return_exceptions=True)
        # 4. Close what we opened.
        await self.http.stop()
        for sink in self.sinks:
            await sink.aclose()
        log.info("relay_stopped", accepted=self.pipeline.accepted, unwritten=unwritten)
        return unwritten


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


async def _done_within(task: asyncio.Future[None], timeout_s: float) -> bool:
    """Wait for `task` up to `timeout_s`, without cancelling it."""
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    return bool(done)


async def run_worker(settings: Settings) -> int:
    return await Worker(settings).run()
