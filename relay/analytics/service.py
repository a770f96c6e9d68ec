"""`relay analytics`: processes that share the rooms (relay.analytics.rooms) and
assemble each room they own from the room's own stream, in its order, from the position
its state records, so a room moves between processes (a crash, a scale-up, a drain)
without a gap or a repeat. The consumer group on the events stream only routes: it
registers the rooms it sees and tells their owners; its entries are acknowledged once
that is done. A sweep lets time close turns and sessions; the lag is read into gauges."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from relay import keys
from relay.analytics import lag, metrics
from relay.analytics.assemble import Doc
from relay.analytics.model import AnalyticsConfig
from relay.analytics.rooms import Owned, Rooms
from relay.analytics.step import Step, on_clock, on_events
from relay.analytics.store import AnalyticsStore, FencedError
from relay.config import Settings
from relay.consumer import StreamConsumer, StreamEvent
from relay.consumer.entries import BadEntryError, parse_entry
from relay.errors import ConfigError

if TYPE_CHECKING:
    from relay.analytics.otel import TraceExport

log = structlog.get_logger(__name__)

ROOM_BATCH = 100  # entries of a room's stream applied per step (one script)
FORGET_AFTER_S = 300.0  # a finished room with no event this long leaves the registry


def config_of(settings: Settings) -> AnalyticsConfig:
    a = settings.analytics
    return AnalyticsConfig(
        utterance_timeout_s=a.utterance_timeout_s, participants_idle_s=a.participants_idle_s
    )


class AnalyticsService:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        consumer_name: str | None = None,
        clock_ms: Callable[[], int] | None = None,
        lag_refresh_s: float = lag.REFRESH_S,
        lease_ttl_s: float | None = None,
        poll_s: float = 0.05,
        **consumer_options: Any,
    ) -> None:
        """`consumer_options`: StreamConsumer's (block_ms, claim_idle_ms, ...);
        `lag_refresh_s`: how often the lag gauges are read from Redis; `poll_s`: how often
        the rooms other processes saw new events of are read."""
        a = settings.analytics
        self.store = AnalyticsStore(redis, settings.redis, config_of(settings), a.summary_ttl_s)
        self.sweep_interval_s = a.sweep_interval_s
        self.clock_ms = clock_ms or (lambda: round(time.time() * 1000))
        name = consumer_name or a.consumer or socket.gethostname()
        self.name = name
        self._redis = redis
        self._settings = settings.redis
        self.stream = keys.events_key(settings.redis)
        self.group = a.group
        self.lag_refresh_s = lag_refresh_s
        self.lease_ttl_s = lease_ttl_s or a.lease_ttl_s
        self.poll_s = poll_s
        self.rooms = Rooms(redis, settings.redis, name, self.lease_ttl_s)
        consumer_options.setdefault("claim_idle_ms", a.claim_idle_ms)
        consumer_options.setdefault("claim_every_s", min(10.0, a.claim_idle_ms / 2000))
        self.consumer = StreamConsumer(
            redis,
            self.stream,
            a.group,
            name,
            self._handle,
            before_ack=self._route,
            **consumer_options,
        )
        self.owned: dict[str, Owned] = {}
        self.applied = 0  # entries of the rooms' streams applied here (duplicates too)
        self.taken_over = 0  # rooms acquired with a position: moved here from another owner
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()  # owned rooms with entries to read
        self._unheld: set[str] = set()  # rooms the group saw that nobody held
        self._batch: dict[str, int] = {}  # room -> its last entry's time (ms), this batch
        self.traces = _trace_export() if a.otel else None

    # --- routing: the group's entries say which rooms have new events ------------------

    async def _handle(self, item: StreamEvent) -> None:
        ms = int(item.entry_id.split("-")[0])
        self._batch[item.room] = max(ms, self._batch.get(item.room, 0))

    async def _route(self) -> None:
        """Before the XACK: the rooms registered, and their owners told."""
        batch, self._batch = self._batch, {}
        if not batch:
            return
        await self.rooms.seen(batch)
        others = [room for room in batch if room not in self.owned]
        self._dirty.update(room for room in batch if room in self.owned)
        holders = await self.rooms.leases.holders(others)
        by_owner: dict[str, set[str]] = {}
        for room, holder in zip(others, holders, strict=True):
            if holder is None:
                self._unheld.add(room)
            else:
                by_owner.setdefault(holder.decode(), set()).add(room)
        await self.rooms.notify(by_owner)
        self._wake.set()

    # --- applying: one task owns, steps and writes every room of this process -----------

    async def _own_loop(self) -> None:
        next_survey = 0.0
        next_sweep = time.monotonic() + self.sweep_interval_s
        try:
            while not self._stopping.is_set():
                try:
                    if time.monotonic() >= next_survey:
                        await self._survey()
                        next_survey = time.monotonic() + self.lease_ttl_s / 4
                    await self._pick_up()
                    self._dirty.update(r for r in await self.rooms.notified() if r in self.owned)
                    for room in list(self._dirty):
                        await self._advance(room)
                    if time.monotonic() >= next_sweep:
                        await self.sweep_once()
                        next_sweep = time.monotonic() + self.sweep_interval_s
                except (RedisError, OSError) as exc:
                    log.warning("analytics_apply_failed", error=f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.5)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
        finally:
            await asyncio.shield(self._leave())

    async def _survey(self) -> None:
        """Renew what is ours, hand back what is above the share, take what nobody holds."""
        known, share = await self.rooms.survey()
        rooms = list(self.owned)
        renewals = await self.rooms.leases.renew_many([(r, False) for r in rooms], self.lease_ttl_s)
        for room, reply in zip(rooms, renewals, strict=True):
            if reply is None:
                self._drop(room, "lease_lost")
        for room, owned in list(self.owned.items()):
            finished = owned.state is None or owned.state["closed"]
            idle = finished and room not in self._dirty and owned.outbox is None
            if idle and await self.rooms.forget(room, FORGET_AFTER_S):
                await self._release(room)
        excess = len(self.owned) - share
        if excess > 0:  # finished rooms first: a live session moves only when it must
            order = sorted(self.owned.values(), key=lambda o: _is_open(o))
            for owned in order[:excess]:
                await self._release(owned.room)
        if len(self.owned) < share:
            self._unheld.update(room for room in known if room not in self.owned)
        metrics.ROOMS_OWNED.set(len(self.owned))

    async def _pick_up(self) -> None:
        if not self._unheld or len(self.owned) >= self.rooms.share:
            self._unheld.clear()
            return
        candidates = sorted(self._unheld)
        self._unheld.clear()
        holders = await self.rooms.leases.holders(candidates)
        for room, holder in zip(candidates, holders, strict=True):
            if len(self.owned) >= self.rooms.share:
                break
            if holder is None or holder.decode() == self.name:
                await self._acquire(room)
        metrics.ROOMS_OWNED.set(len(self.owned))

    async def _acquire(self, room: str) -> None:
        acquired = await self.rooms.leases.acquire(room, self.lease_ttl_s)
        if acquired is None:
            return
        loaded = await self.store.load(room)
        owned = Owned(room, acquired.epoch, loaded.state, loaded.pos, loaded.outbox)
        self.owned[room] = owned
        self.taken_over += loaded.pos != "0-0"
        log.info("analytics_room_acquired", room=room, epoch=acquired.epoch, pos=loaded.pos)
        if owned.outbox is not None:  # the last owner may have died before delivering it
            await self._deliver(owned)
        self._dirty.add(room)

    async def _release(self, room: str) -> None:
        self.owned.pop(room, None)
        self._dirty.discard(room)
        await self.rooms.leases.release(room)
        log.info("analytics_room_released", room=room)

    def _drop(self, room: str, reason: str) -> None:
        self.owned.pop(room, None)
        self._dirty.discard(room)
        log.warning("analytics_room_lost", room=room, reason=reason)

    async def _advance(self, room: str) -> None:
        """Apply the room's entries after its position, in order, a batch per step."""
        self._dirty.discard(room)
        owned = self.owned.get(room)
        if owned is None:
            return
        if owned.stale:  # reload: the lost write may have been applied
            loaded = await self.store.load(room)
            owned.state, owned.pos, owned.outbox = loaded.state, loaded.pos, loaded.outbox
            owned.stale = False
        if owned.outbox is not None:
            await self._deliver(owned)
        stream = keys.room_key(self._settings, room)
        while room in self.owned:
            entries: Any = await self._redis.xrange(
                stream, min=f"({owned.pos}", max="+", count=ROOM_BATCH
            )
            if not entries:
                return
            events: list[Doc] = []
            for entry_id, fields in entries:
                try:
                    events.append(parse_entry(entry_id.decode(), fields).event)
                except BadEntryError as exc:
                    log.warning("analytics_bad_entry", room=room, reason=exc.reason)
            last = entries[-1][0].decode()
            await self._commit(owned, on_events(owned.state, events, self.store.config), last)
            if room in self.owned:  # not fenced: applied here
                self.applied += len(entries)
            if len(entries) < ROOM_BATCH:
                return

    async def _commit(self, owned: Owned, step: Step, pos: str | None) -> None:
        try:
            outbox = await self.store.write(owned.room, self.name, owned.epoch, step, pos)
        except FencedError:
            self._drop(owned.room, "fenced")
            return
        except (RedisError, OSError):
            # Applied or not: the next step reads the room back first (no step twice).
            owned.stale = True
            self._dirty.add(owned.room)
            raise
        if step.state is not None:
            owned.state = step.state
        if pos is not None:
            owned.pos = pos
        owned.outbox = outbox
        if outbox is not None:
            await self._deliver(owned)

    async def _deliver(self, owned: Owned) -> None:
        assert owned.outbox is not None
        written = await self.store.deliver(owned.outbox)
        owned.outbox = None
        self._written(written)

    async def _leave(self) -> None:
        """On stop: every room handed back at once (the others take them at their next
        survey), and this process out of the count."""
        try:
            for room in list(self.owned):
                await self._release(room)
            await self.rooms.leave()
        except (RedisError, OSError) as exc:  # the leases expire by themselves
            log.warning("analytics_leave_failed", error=str(exc))
        metrics.ROOMS_OWNED.set(0)

    def _written(self, written: list[Doc]) -> None:
        """What follows a summary written (once per session, by the process that wrote it)."""
        for summary in written:
            log.info(
                "analytics_session_summarized",
                room=summary["room"],
                session_id=summary["session_id"],
                end_reason=summary["end_reason"],
                turns=len(summary["turns"]),
            )
            if self.traces is not None:
                self._trace(self.traces, summary)

    def _trace(self, traces: TraceExport, summary: Doc) -> None:
        try:
            traces.export(summary)
        except Exception as exc:  # a trace is never worth the consumer: count, log, go on
            metrics.traces_exported("failed")
            log.warning(
                "analytics_trace_failed",
                session_id=summary["session_id"],
                error=f"{type(exc).__name__}: {exc}",
            )

    async def sweep_once(self) -> int:
        """Apply the clock to every open room owned here; summaries written."""
        now = self.clock_ms()
        written = 0
        for owned in list(self.owned.values()):
            if owned.stale:
                continue  # read back by its next advance first
            step = on_clock(owned.state, now, self.store.config)
            if step.state is None and not step.summaries:
                continue
            before = len(step.summaries)
            await self._commit(owned, step, None)
            written += before
        return written

    async def run(self) -> None:
        """Until stop(): the group, the rooms' assembly and the lag; then the traces still
        queued are sent."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.consumer.run())
                group.create_task(self._own_loop())
                group.create_task(self._lag_loop())
        finally:
            if self.traces is not None:
                await asyncio.shield(self.traces.aclose())

    async def own_behind_s(self) -> float:
        """Age of the oldest entry not yet applied in the rooms owned here (0: none)."""
        rooms = list(self.owned.values())
        if not rooms:
            return 0.0
        pipe: Any
        async with self._redis.pipeline(transaction=False) as pipe:
            for owned in rooms:
                pipe.xrange(keys.room_key(self._settings, owned.room), min=f"({owned.pos}", count=1)
            found = await pipe.execute()
        oldest = [int(e[0][0].split(b"-")[0]) for e in found if e]
        if not oldest:
            return 0.0
        now_ms = await lag._server_ms(self._redis, self.stream)
        return max(0, now_ms - min(oldest)) / 1000

    async def refresh_lag(self) -> lag.GroupLag | None:
        """Read the lag from Redis and set the gauges (NaN if the read fails: a metric is
        never worth the consumer, so any error is logged and the loop goes on)."""
        own: float | None = None
        try:
            figures = await lag.read_lag(self._redis, self.stream, self.group)
            own = await self.own_behind_s()
        except Exception as exc:  # RedisClusterException is no RedisError
            log.warning("analytics_lag_read_failed", error=f"{type(exc).__name__}: {exc}")
            figures = None
        metrics.set_lag(figures, own)
        return figures

    async def _lag_loop(self) -> None:
        while not self._stopping.is_set():
            await self.refresh_lag()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.lag_refresh_s)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self.consumer.stop()


def _is_open(owned: Owned) -> bool:
    return owned.state is not None and not owned.state["closed"]


def _trace_export() -> TraceExport:
    # Imported only when asked for: the SDK is the optional `otel` extra (a ConfigError,
    # one line, says what to install when it is missing).
    from relay.analytics.otel import TraceExport

    return TraceExport()


async def run_analytics(settings: Settings) -> int:
    """`relay analytics` until SIGINT/SIGTERM; 1 if its metrics port cannot be bound."""
    import signal

    from relay.redis_client import create_redis

    redis = create_redis(settings.redis)
    try:
        service = AnalyticsService(redis, settings)
    except ConfigError:  # analytics.otel without its extra: the CLI says it in one line
        await redis.aclose()
        raise
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, service.stop)
    runner = None
    try:
        runner = await _serve_metrics(settings.http.host, settings.analytics.metrics_port)
        log.info("analytics_started", group=settings.analytics.group)
        await service.run()
    except OSError as exc:
        print(f"relay: cannot serve /metrics: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        if runner is not None:
            await runner.cleanup()
        await redis.aclose()
    log.info("analytics_stopped")
    return 0


async def _serve_metrics(host: str, port: int) -> web.AppRunner | None:
    """GET /metrics of this process (the analytics metrics are counted here)."""
    if not port:
        return None

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
