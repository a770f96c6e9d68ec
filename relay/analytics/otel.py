"""Session traces over OTLP/HTTP (`analytics.otel`, off by default; the `otel` extra).

Each summary written becomes one trace (relay.analytics.spans), handed to the official
SDK's BatchSpanProcessor: ending a span only queues it, and the export runs in the SDK's
thread, so a slow or absent receiver never holds the consumer up. The exporter is
configured by the standard variables (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS,
_TIMEOUT, ..., OTEL_SERVICE_NAME, OTEL_BSP_*), read by the SDK itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import structlog

from relay import __version__
from relay.analytics import metrics
from relay.analytics.assemble import Doc
from relay.analytics.spans import PlannedSpan, session_trace, span_id_of, trace_id_of
from relay.errors import ConfigError

EXTRA = "otel"
INSTALL_HINT = f"pip install 'relay[{EXTRA}]'"

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.id_generator import IdGenerator
except ImportError as exc:  # one line for the operator, not a traceback
    raise ConfigError(
        f"analytics.otel is on but the otel extra is not installed ({exc.name}): {INSTALL_HINT}"
    ) from exc

log = structlog.get_logger(__name__)
DEFAULT_SERVICE_NAME = "relay-analytics"
# The final flush on stop: bounded, so a receiver that is down cannot hold a SIGTERM past
# the pod's grace period (the exporter's own retries stop when it is shut down).
SHUTDOWN_TIMEOUT_S = 5.0


class _SessionIds(IdGenerator):
    """Ids from the session id: the SDK asks for a trace id for the root span and a span id
    for every span, in the order the spans are started (depth first, relay.analytics.spans)."""

    def __init__(self) -> None:
        self._session_id = ""
        self._next = 0

    def use(self, session_id: str) -> None:
        self._session_id, self._next = session_id, 0

    def generate_trace_id(self) -> int:
        return trace_id_of(self._session_id)

    def generate_span_id(self) -> int:
        span_id = span_id_of(self._session_id, self._next)
        self._next += 1
        return span_id


class _CountingExporter(SpanExporter):
    """The OTLP exporter, with each session counted (its root span) by the batch's result."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self._shut = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        sessions = sum(1 for span in spans if span.parent is None)
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # a bug of the exporter must not end the SDK's thread
            log.warning("analytics_trace_export_failed", error=f"{type(exc).__name__}: {exc}")
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            metrics.traces_exported("ok", sessions)
        else:
            metrics.traces_exported("failed", sessions)
            log.warning("analytics_traces_not_exported", spans=len(spans), sessions=sessions)
        return result

    def shutdown(self) -> None:
        """Once (on a flush that timed out, and again by the processor's own shutdown)."""
        if not self._shut.is_set():
            self._shut.set()
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class TraceExport:
    """One trace per session summary, batched to an OTLP/HTTP receiver."""

    def __init__(self, exporter: SpanExporter | None = None) -> None:
        """`exporter`: the OTLP/HTTP one (from the OTEL_* environment) unless given."""
        self._ids = _SessionIds()
        self._provider = TracerProvider(resource=_resource(), id_generator=self._ids)
        self._exporter = _CountingExporter(exporter or OTLPSpanExporter())
        self._processor = BatchSpanProcessor(self._exporter)
        self._provider.add_span_processor(self._processor)
        # Our own provider, not the global one: nothing else's spans get these ids.
        self._tracer = self._provider.get_tracer("relay.analytics", __version__)
        self._lock = threading.Lock()
        self._closed = False

    def export(self, summary: Doc) -> None:
        """Queue the session's trace (never blocks on the network)."""
        plan = session_trace(summary)
        with self._lock:
            if self._closed:
                return
            self._ids.use(summary["session_id"])
            self._emit(plan, Context())  # an empty context: the session is a root

    def _emit(self, plan: PlannedSpan, parent: Context) -> None:
        span = self._tracer.start_span(
            plan.name, context=parent, attributes=plan.attributes, start_time=plan.start_ns
        )
        for event in plan.events:
            span.add_event(event.name, event.attributes, timestamp=event.at_ns)
        inside = trace.set_span_in_context(span, parent)
        for child in plan.children:
            self._emit(child, inside)
        span.end(end_time=plan.end_ns)

    async def aclose(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Send what is queued (up to `timeout_s`), then stop the exporter's thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # The processor's shutdown exports the queue and waits for its thread (up to 30 s,
        # not configurable): bounded here, and past the bound the exporter is shut down,
        # which ends its retries; what is still queued then is counted as failed.
        flush = asyncio.ensure_future(asyncio.to_thread(self._processor.shutdown))
        try:
            await asyncio.wait_for(asyncio.shield(flush), timeout_s)
        except TimeoutError:
            log.warning("analytics_traces_flush_timeout", timeout_s=timeout_s)
            self._exporter.shutdown()
            await flush  # the request in flight ends within OTEL_EXPORTER_OTLP_TIMEOUT


def _resource() -> Resource:
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; without either
    # the SDK says `unknown_service`, and a trace tool should show what sent it.
    resource = Resource.create({SERVICE_VERSION: __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource
