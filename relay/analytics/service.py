"""`relay analytics`: a consumer group on the events stream feeding the store, a sweep
that lets time close turns and sessions, and the group's lag read into gauges. Several
processes may share the group: the state is in Redis, and a dead consumer's pending
entries are taken over."""

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
from relay.analytics.store import AnalyticsStore, Outcome
from relay.config import Settings
from relay.consumer import StreamConsumer, StreamEvent
from relay.errors import ConfigError

if TYPE_CHECKING:
    from relay.analytics.otel import TraceExport

log = structlog.get_logger(__name__)


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
        **consumer_options: Any,
    ) -> None:
        """`consumer_options`: StreamConsumer's (block_ms, claim_idle_ms, ...);
        `lag_refresh_s`: how often the group's lag gauges are read from Redis."""
        a = settings.analytics
        self.store = AnalyticsStore(redis, settings.redis, config_of(settings), a.summary_ttl_s)
        self.sweep_interval_s = a.sweep_interval_s
        self.clock_ms = clock_ms or (lambda: round(time.time() * 1000))
        name = consumer_name or a.consumer or socket.gethostname()
        self._redis = redis
        self.stream = keys.events_key(settings.redis)
        self.group = a.group
        self.lag_refresh_s = lag_refresh_s
        self.consumer = StreamConsumer(
            redis,
            self.stream,
            a.group,
            name,
            self._handle,
            before_ack=self._flush,
            **consumer_options,
        )
        self._stopping = asyncio.Event()
        # A batch's events per room: applied in one transaction per room before the XACK
        # (a failure redelivers the whole batch; the state's ids make that harmless).
        self._batch: dict[str, list[Doc]] = {}
        self.traces = _trace_export() if a.otel else None

    async def _handle(self, item: StreamEvent) -> None:
        self._batch.setdefault(item.room, []).append(item.event)

    async def _flush(self) -> None:
        batch, self._batch = self._batch, {}
        for room, events in batch.items():
            self._written(await self.store.apply_events(room, events))

    def _written(self, outcome: Outcome) -> None:
        """What follows a summary written (once per session, by the process that wrote it)."""
        for summary in outcome.summaries_written:
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
        """Tick every room whose last event is old enough for a timeout; summaries written."""
        now = self.clock_ms()
        config = self.store.config
        shortest = min(config.utterance_timeout_s, config.participants_idle_s)
        written = 0
        for room in await self.store.due_rooms(now - round(shortest * 1000)):
            outcome = await self.store.tick(room, now)
            self._written(outcome)
            written += len(outcome.summaries_written)
        return written

    async def run(self) -> None:
        """Until stop(): the consumer and the sweep; then the traces still queued are sent."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.consumer.run())
                group.create_task(self._sweep_loop())
                group.create_task(self._lag_loop())
        finally:
            if self.traces is not None:
                await asyncio.shield(self.traces.aclose())

    async def _sweep_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep_once()
            except (RedisError, OSError) as exc:
                log.warning("analytics_sweep_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.sweep_interval_s)

    async def refresh_lag(self) -> lag.GroupLag | None:
        """Read the group's lag from Redis and set the gauges (NaN if the read fails: a
        metric is never worth the consumer, so any error is logged and the loop goes on)."""
        try:
            figures = await lag.read_lag(self._redis, self.stream, self.group)
        except Exception as exc:  # RedisClusterException is no RedisError
            log.warning("analytics_lag_read_failed", error=f"{type(exc).__name__}: {exc}")
            figures = None
        metrics.set_lag(figures)
        return figures

    async def _lag_loop(self) -> None:
        while not self._stopping.is_set():
            await self.refresh_lag()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.lag_refresh_s)

    def stop(self) -> None:
        self._stopping.set()
        self.consumer.stop()


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
