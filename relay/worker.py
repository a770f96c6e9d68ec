"""The worker (`relay run`): assemble the stages, run until a signal or a failure, shut
down in order.

Components that live as long as the worker run supervised in an `asyncio.TaskGroup`:
the pipeline's flush loop and the event-loop lag watcher (the HTTP server has no task of
its own: asyncio accepts its connections, and its one way to fail, the bind, is a start
step). If one raises, or
returns while the worker is not stopping, the worker logs `worker_component_failed`
(component, error) and shuts down as on a signal; its drain runs the flush loop itself,
so what is buffered is still written, or counted.

Shutdown (a signal, a component failure or a failed start step), each step bounded by
what is left of `shutdown_grace_s`:
1. stop intake: no new rooms (the admin API answers 503 from here on); with discovery
   on, hand the rooms over first: other replicas join them before this one leaves
   (make-before-break, up to `discovery.handover_timeout_s`, half the grace at most);
2. leave every room, handing what each already received to the pipeline (rooms that
   are not done when the grace runs out go on beside step 3, whose closed intake refuses
   what they still submit, and are cancelled at the end of the grace);
3. flush the pipeline to the sinks (retrying while Redis is away); with discovery on,
   the room leases are handed back once everything accepted is written (within a
   lease TTL; else they are left to expire, the fence timers refusing what remains);
4. close the HTTP server and Redis connections; log `relay_stopped` (accepted, unwritten).
The shutdown runs to its end even if the worker's task is cancelled meanwhile; the
cancellation propagates after it. A second signal exits at once, counting what was still
buffered (`forced_exit`).

Exit status of `relay run`:
- 0: stopped on a signal, every accepted event written;
- 1: a component failed, a start step failed (`relay: cannot listen on ...` on stderr),
  or a second signal forced the exit;
- 2: stopped on a signal with events that could not be written in time (each counted as
  `shutdown_timeout`); also a configuration error, before anything starts (relay/cli.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import structlog

from relay import metrics
from relay.analytics.views import SessionReader
from relay.config import Settings
from relay.discovery.runtime import ScaleOut
from relay.errors import StartError
from relay.http import HttpServer, build_app
from relay.ingest import IngestService, add_ingest_routes
from relay.journal import Journal
from relay.loop_lag import watch_loop_lag
from relay.observer import RoomTarget
from relay.observer.room import RoomFactory
from relay.observer.sdk_room import ObserverRoom
from relay.pipeline import Pipeline
from relay.redis_client import create_redis
from relay.rooms import RoomManager
from relay.rooms.observed import ObservedRoom
from relay.sinks import RedisStreamsSink, Sink, StdoutSink

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # a component failed, a start step failed, or a forced exit
EXIT_UNWRITTEN = 2  # stopped, but events could not be written in time
FORCED_EXIT_STATUS = EXIT_FAILED

T = TypeVar("T")


class Worker:
    def __init__(self, settings: Settings, *, room_factory: RoomFactory = ObserverRoom) -> None:
        """`room_factory` makes the SDK rooms the observers join with (a test seam)."""
        self.settings = settings
        self._room_factory = room_factory
        self._stop = asyncio.Event()
        self._signals = 0
        self._failed: str | None = None  # the first component that failed
        self._redis = create_redis(settings.redis) if "redis" in settings.sinks else None
        self.sinks: list[Sink] = []
        if self._redis is not None:
            self.sinks.append(RedisStreamsSink(self._redis, settings.redis))
        if "stdout" in settings.sinks:
            self.sinks.append(StdoutSink(sys.stdout))
        self.journal: Journal | None = None
        if settings.journal.enabled:  # each worker process in a directory of its own
            directory = Path(settings.journal.path) / f"worker-{settings.worker_index}"
            self.journal = Journal(settings.journal, directory)
        self.pipeline = Pipeline(settings.pipeline, self.sinks, journal=self.journal)
        self.scaleout: ScaleOut | None = None
        if settings.discovery.enabled:
            self.scaleout = ScaleOut(settings, self._make_observer, self.pipeline)
            self.rooms: RoomManager = self.scaleout.rooms
        else:
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
            sessions=SessionReader(self._redis, settings.redis) if self._redis else None,
        )
        self.ingest: IngestService | None = None
        if settings.ingest.enabled:  # POST /v1/ingest: what browsers forward
            self.ingest = IngestService(
                settings.ingest,
                self.pipeline,
                max_payload_bytes=settings.pipeline.max_payload_bytes,
                on_room_idle=self._ingest_room_idle,
            )
            add_ingest_routes(app, self.ingest)
        if self.scaleout is not None:
            self.scaleout.register_routes(app)
        self.http = HttpServer(app, settings.http.host, settings.http.port)

    def _make_observer(self, target: RoomTarget) -> ObservedRoom:
        s = self.settings
        return ObservedRoom(
            target,
            self.pipeline if self.scaleout is None else self.scaleout.intake,
            s.livekit,
            s.pipeline,
            room_factory=self._room_factory,
            worker_index=s.worker_index,
            rate_limits=s.limits,
        )

    def _ingest_room_idle(self, room: str) -> None:
        """Ingest holds nothing of `room` any more: its seq counter and id state go, unless
        the room is observed (the observer's leave forgets them then)."""
        if not self.rooms.observes(room):
            self.pipeline.forget_room(room)

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
        buffered = self.pipeline.buffered
        if self.journal is not None:  # the next start writes them
            log.error("shutdown_forced", events_journaled=buffered)
        else:
            log.error("shutdown_forced", events_lost=buffered)
            metrics.dropped("forced_exit", buffered)
        os._exit(FORCED_EXIT_STATUS)

    async def run(self) -> int:
        """Start, run until a signal or a component failure, shut down; the exit status.

        A failed start step raises its StartError, after the shutdown."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        start_error: StartError | None = None
        async with asyncio.TaskGroup() as components:
            try:
                await self._start(components)
                await self._stop.wait()
            except StartError as exc:
                start_error = exc  # raised below: out of the group, it is not wrapped
            finally:
                unwritten = await _to_the_end(self._shutdown())
        if start_error is not None:
            raise start_error
        if self._failed is not None:
            return EXIT_FAILED
        return EXIT_OK if unwritten == 0 else EXIT_UNWRITTEN

    async def _start(self, components: asyncio.TaskGroup) -> None:
        metrics.ROOMS_OBSERVED.set_function(self.rooms.observed_count)
        flusher = self._supervise("pipeline", self.pipeline.run())
        components.create_task(flusher, name="pipeline")
        lag = self._supervise("loop_lag", watch_loop_lag(until=self._stop))
        components.create_task(lag, name="loop_lag")
        await self.http.start()
        if self.scaleout is not None:
            await self.scaleout.start(components, self._supervise, self._stop)
        else:
            for room in self.settings.rooms:
                self.rooms.want(RoomTarget(room=room))
        log.info(
            "relay_started",
            rooms=len(self.settings.rooms),
            sinks=self.settings.sinks,
            journal_replayed=self.pipeline.replayed,
        )

    async def _supervise(self, component: str, lifelong: Coroutine[Any, Any, None]) -> None:
        """Run a component meant to live as long as the worker: an exception, or a return
        before the worker stops, stops the worker. A cancellation passes through."""
        try:
            await lifelong
        except Exception as exc:
            self._component_failed(component, repr(exc), exc)
        else:
            if not self._stop.is_set():
                self._component_failed(component, "returned while the worker was running")

    def _component_failed(
        self, component: str, error: str, exc: BaseException | None = None
    ) -> None:
        log.error("worker_component_failed", component=component, error=error, exc_info=exc)
        self._failed = self._failed or component
        self._stop.set()

    async def _shutdown(self) -> int:
        """Steps 1-4 of the module docstring; returns the entries not written."""
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        self._stop.set()  # stopping now (also after a failed start): components may end
        if self.scaleout is not None:  # 0. takers join our rooms first (half the grace)
            await self.scaleout.hand_over(_left(deadline) / 2)
        # 1-2. Stop taking rooms, leave them; their received events go to the pipeline.
        leaving = asyncio.ensure_future(self.rooms.stop_all())
        if not await _done_within(leaving, _left(deadline)):
            # Rooms still handing on (a full buffer while Redis is away, a connect that
            # cannot be cancelled): the drain below refuses what they still submit.
            log.error("shutdown_rooms_timeout")
        if self.scaleout is not None:
            # The rooms are left; once what they received is written, others may take
            # them (their events must come after ours). Not written within a lease TTL
            # (the sink away): the leases are not handed back but expire, and the fence
            # timers refuse what is left of those rooms before they do.
            ttl_s = self.settings.discovery.lease_ttl_s
            written = await self.pipeline.flushed(min(_left(deadline), ttl_s))
            await self.scaleout.stop(_left(deadline), hand_back=written)
        # 3. Flush (the flush loop runs in drain() if the supervised one is gone).
        unwritten = await self._drain(_left(deadline))
        if not await _done_within(leaving, _left(deadline)):
            leaving.cancel()  # what the rooms still hold is counted (`shutdown_timeout`)
            await asyncio.wait({leaving})
        # 4. Close what we opened.
        await self.http.stop()
        for sink in self.sinks:
            await sink.aclose()
        if self.journal is not None:
            await self.journal.close()
        log.info("relay_stopped", accepted=self.pipeline.accepted, unwritten=unwritten)
        return unwritten

    async def _drain(self, timeout_s: float) -> int:
        """drain(), which runs the flush loop itself if the supervised one is gone. If that
        loop fails too, it has most likely ended the drain on its way out (counting what
        is unwritten): drain() is idempotent, so asking once more returns that count."""
        for _ in range(2):
            try:
                return await self.pipeline.drain(timeout_s)
            except Exception as exc:
                self._component_failed("pipeline", repr(exc), exc)
        return self.pipeline.buffered  # the drain never ended: what it still holds is lost


async def _to_the_end(step: Coroutine[Any, Any, T]) -> T:
    """Await `step` to its end even if this task is cancelled meanwhile, then re-raise the
    cancellation: a stray cancel neither cuts the ordered shutdown short nor is swallowed.
    (The shutdown is bounded by the grace period; a second signal is the way out.)"""
    task = asyncio.ensure_future(step)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        raise cancelled
    return task.result()


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


async def _done_within(task: asyncio.Future[None], timeout_s: float) -> bool:
    """Wait for `task` up to `timeout_s`, without cancelling it."""
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    return bool(done)


async def run_worker(settings: Settings) -> int:
    return await Worker(settings).run()
