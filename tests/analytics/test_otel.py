"""Session traces over OTLP/HTTP: the golden conversations through the real analytics on
the real Redis, exported by the official SDK and exporter to a real OTLP/HTTP receiver
started here, which decodes what it gets with opentelemetry-proto. The turns expected are
the golden documents' (test_golden_*.py), restated from the scripts, not from the code."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import REGISTRY

from relay import keys
from relay.analytics.otel import INSTALL_HINT, TraceExport
from relay.analytics.spans import session_trace, span_id_of, trace_id_of
from relay.config import AnalyticsSettings, Settings
from relay.dev.ports import free_port
from tests.analytics.support import (
    T0_MS,
    Script,
    analytics,
    consumed,
    run_script,
    summaries,
)
from tests.analytics.test_golden_agents import agents
from tests.analytics.test_golden_liveavatar import liveavatar_script
from tests.analytics.test_golden_livelayer import livelayer
from tests.analytics.test_golden_streaming_avatar import streaming_avatar
from tests.consumer.support import wait_for, write

DOCS = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
SWEEP_AT_MS = 40_000  # the Streaming Avatar session ends in a sweep (everyone gone 30 s)


# --- the receiver ---------------------------------------------------------------------


class Receiver:
    """POST /v1/traces: ExportTraceServiceRequest in protobuf, as the exporter sends it."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.requests.append(message)
        self.headers.append(dict(request.headers))
        reply = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    def spans(self) -> list[Span]:
        return [
            span
            for message in self.requests
            for resource in message.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def resources(self) -> list[dict[str, Any]]:
        return [
            attributes(resource.resource.attributes)
            for message in self.requests
            for resource in message.resource_spans
        ]

    def traces(self) -> dict[bytes, list[Span]]:
        found: dict[bytes, list[Span]] = {}
        for span in self.spans():
            found.setdefault(span.trace_id, []).append(span)
        return found


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Receiver]:
    """A receiver on 127.0.0.1 (the kernel's port), and the standard variables naming it."""
    found = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    found.url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", found.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20tempo-token")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "relay-analytics-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # ms: batches go out during the run
    try:
        yield found
    finally:
        await runner.cleanup()


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value(v) for v in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    items: list[KeyValue] = list(pairs)
    return {pair.key: value(pair.value) for pair in items}


# --- the golden documents' turns ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Turn:
    """A golden turn, ms from the session start, and the interruptions in it."""

    user: tuple[int, int]
    role: str
    reply: tuple[int, int]
    interruptions: tuple[tuple[int, str], ...] = ()

    @property
    def latency_ms(self) -> int:
        return self.reply[0] - self.user[1]


@dataclasses.dataclass(frozen=True)
class Golden:
    script: Script
    session_id: str
    start_ms: int  # script time of the session start
    duration_ms: int
    protocol: str
    end_reason: str
    latency: tuple[int, int, int]  # p50, p90, p99
    turns: tuple[Turn, ...]
    gaps: tuple[tuple[int, int, str], ...] = ()


def goldens() -> list[Golden]:
    return [
        Golden(
            liveavatar_script(),
            "s1",
            200,
            9300,
            "liveavatar",
            "session_stopped",
            (800, 1700, 1700),
            (
                # the barge-in at 3300 and the avatar.interrupt at 3500 cut turn 0's reply
                Turn(
                    (800, 1800),
                    "avatar",
                    (2600, 3600),
                    ((3300, "user_over_response"), (3500, "command")),
                ),
                Turn((3300, 4300), "avatar", (4800, 5400)),
                Turn((5800, 6600), "avatar", (8300, 8800)),
            ),
            ((6800, 7800, "reconnecting"),),
        ),
        Golden(
            agents(),
            f"ag-1@{T0_MS}",
            0,
            7000,
            "livekit-agents",
            "room_finished",
            (600, 600, 600),
            (
                Turn((1000, 1800), "agent", (2400, 3400), ((3200, "user_over_response"),)),
                Turn((3200, 3900), "agent", (4500, 6200)),
            ),
            ((5000, 6000, "observer_left"),),
        ),
        Golden(
            livelayer(),
            f"ll-1@{T0_MS}",
            0,
            4100,
            "livelayer",
            "participants_left",
            (300, 400, 400),
            (
                Turn((500, 1200), "agent", (1500, 2500), ((2000, "user_over_response"),)),
                Turn((2000, 2600), "agent", (3000, 3500)),
            ),
        ),
        Golden(
            streaming_avatar(),
            f"sa-1@{T0_MS}",
            0,
            4600,
            "liveavatar",
            "participants_left",
            (-300, 500, 500),
            (
                Turn((1000, 1500), "avatar", (2000, 2600)),
                # the avatar began 300 ms before the user stopped: no wait span
                Turn((3000, 3600), "avatar", (3300, 4000), ((3300, "response_over_user"),)),
            ),
        ),
    ]


def otel_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"analytics": AnalyticsSettings(otel=True)})


async def run_goldens(redis: aioredis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """Every golden script into one events stream, one analytics run over all of them (a
    sweep at the end), its traces flushed when it stops; the summaries written."""
    scripts = [golden.script for golden in goldens()]
    for script in scripts:
        await write(redis, settings.redis, script.events)
    total = await redis.xlen(keys.events_key(settings.redis))  # repeats included
    async with analytics(redis, settings, now_ms=T0_MS + SWEEP_AT_MS) as service:
        assert service.traces is not None
        await wait_for(lambda: consumed(service) >= total, 10, "the events")
        await service.sweep_once()

        async def all_written() -> bool:
            return len(await summaries(redis, settings)) == len(scripts)

        await wait_for(all_written, 10, "a summary per script")
    return await summaries(redis, settings)


def ns(golden: Golden, offset_ms: int) -> int:
    return (T0_MS + golden.start_ms + offset_ms) * 1_000_000


def children(spans: list[Span], parent: Span) -> list[Span]:
    return sorted(
        (s for s in spans if s.parent_span_id == parent.span_id),
        key=lambda s: (s.start_time_unix_nano, s.name),
    )


# --- the tests ------------------------------------------------------------------------


async def test_one_trace_per_golden_session(
    redis: aioredis.Redis, settings: Settings, receiver: Receiver
) -> None:
    written = await run_goldens(redis, otel_settings(settings))
    traces = receiver.traces()
    expected = goldens()
    assert len(written) == len(traces) == len(expected)
    assert {s["session_id"] for s in written} == {g.session_id for g in expected}
    for golden in expected:
        trace_id = trace_id_of(golden.session_id).to_bytes(16, "big")
        check_trace(golden, traces[trace_id])
    assert {r["service.name"] for r in receiver.resources()} == {"relay-analytics-test"}
    assert {h.get("Authorization") for h in receiver.headers} == {"Bearer tempo-token"}


def check_trace(golden: Golden, spans: list[Span]) -> None:
    [root] = [s for s in spans if not s.parent_span_id]
    assert root.name == "session"
    assert root.span_id == span_id_of(golden.session_id, 0).to_bytes(8, "big")
    assert (root.start_time_unix_nano, root.end_time_unix_nano) == (
        ns(golden, 0),
        ns(golden, golden.duration_ms),
    )
    top = attributes(root.attributes)
    assert top["relay.session_id"] == golden.session_id
    assert top["relay.room"] == golden.script.room
    assert top["relay.protocol"] == golden.protocol
    assert top["relay.end_reason"] == golden.end_reason
    assert top["relay.turns"] == len(golden.turns)
    assert top["relay.interruptions"] == sum(len(t.interruptions) for t in golden.turns)
    assert top["relay.latency.count"] == len(golden.turns)
    p50, p90, p99 = golden.latency
    assert (top["relay.latency.p50_ms"], top["relay.latency.p90_ms"]) == (p50, p90)
    assert top["relay.latency.p99_ms"] == p99
    turns = [s for s in children(spans, root) if s.name == "turn"]
    gaps = [s for s in children(spans, root) if s.name == "coverage_gap"]
    assert len(turns) + len(gaps) == len(children(spans, root))
    assert len(turns) == len(golden.turns)
    for index, (span, turn) in enumerate(zip(turns, golden.turns, strict=True)):
        check_turn(golden, spans, span, turn, index)
    assert [
        (s.start_time_unix_nano, s.end_time_unix_nano, attributes(s.attributes)["relay.gap.reason"])
        for s in gaps
    ] == [(ns(golden, a), ns(golden, b), reason) for a, b, reason in golden.gaps]
    assert len(spans) == 1 + len(gaps) + sum(1 + len(children(spans, t)) for t in turns)


def check_turn(golden: Golden, spans: list[Span], span: Span, turn: Turn, index: int) -> None:
    found = attributes(span.attributes)
    assert found["relay.turn.index"] == index
    assert found["relay.turn.response_role"] == turn.role
    assert found["relay.turn.latency_ms"] == turn.latency_ms
    assert found["relay.turn.answered"] is True
    assert span.start_time_unix_nano == ns(golden, turn.user[0])
    assert span.end_time_unix_nano == ns(golden, max(turn.user[1], turn.reply[1]))
    parts = [(s.name, s.start_time_unix_nano, s.end_time_unix_nano) for s in children(spans, span)]
    wanted = [("user_speech", ns(golden, turn.user[0]), ns(golden, turn.user[1]))]
    if turn.latency_ms > 0:
        wanted.append(("wait", ns(golden, turn.user[1]), ns(golden, turn.reply[0])))
    wanted.append((f"{turn.role}_speech", ns(golden, turn.reply[0]), ns(golden, turn.reply[1])))
    assert sorted(parts, key=lambda p: (p[1], p[0] != "user_speech")) == wanted
    events = [
        (e.name, e.time_unix_nano, attributes(e.attributes)["relay.interruption.kind"])
        for e in span.events
    ]
    assert events == [("interruption", ns(golden, at), kind) for at, kind in turn.interruptions]


async def test_the_docs_show_the_waterfall_the_receiver_got(
    redis: aioredis.Redis, settings: Settings, receiver: Receiver
) -> None:
    await run_script(redis, otel_settings(settings), liveavatar_script())
    await wait_for(lambda: bool(receiver.requests), 10, "the trace")
    rendered = waterfall(receiver.spans())
    assert rendered in DOCS.read_text(), f"docs/analytics.md should show:\n{rendered}"


def waterfall(spans: list[Span], width: int = 48) -> str:
    """The trace as a trace tool draws it: a row per span, offset and duration in ms, a
    bar on the session's time scale; `x` marks an interruption event."""
    [root] = [s for s in spans if not s.parent_span_id]
    t0, total = root.start_time_unix_nano, root.end_time_unix_nano - root.start_time_unix_nano
    rows: list[str] = []

    def column(t: int) -> int:  # the nearest column boundary, 0..width
        return ((t - t0) * width * 2 // total + 1) // 2

    def draw(span: Span, depth: int) -> None:
        bar = [" "] * width
        first = column(span.start_time_unix_nano)
        for i in range(first, max(first + 1, column(span.end_time_unix_nano))):
            bar[i] = "="
        for event in span.events:
            bar[min(width - 1, column(event.time_unix_nano))] = "x"
        found = attributes(span.attributes)
        label = "  " * depth + span.name
        if "relay.turn.index" in found:
            label += f" {found['relay.turn.index']}"
        start_ms = (span.start_time_unix_nano - t0) // 1_000_000
        duration_ms = (span.end_time_unix_nano - span.start_time_unix_nano) // 1_000_000
        rows.append(f"{label:<20} {start_ms:>6} {duration_ms:>6}  |{''.join(bar)}|")
        for child in children(spans, span):
            draw(child, depth + 1)

    draw(root, 0)
    header = f"{'span':<20} {'at ms':>6} {'ms':>6}"
    return "\n".join([header, *rows])


async def test_receiver_down_analytics_goes_on_failure_counted(
    redis: aioredis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # s, retries included
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    failed, ok = exported("failed"), exported("ok")
    began = time.monotonic()
    summary = await run_script(redis, otel_settings(settings), liveavatar_script())
    assert summary["session_id"] == "s1" and len(summary["turns"]) == 3
    assert time.monotonic() - began < 10  # the run and its bounded final flush
    assert exported("failed") == failed + 1
    assert exported("ok") == ok


def exported(result: str) -> float:
    found = REGISTRY.get_sample_value("relay_analytics_traces_exported_total", {"result": result})
    assert found is not None
    return found


async def test_off_by_default_nothing_sent(
    redis: aioredis.Redis, settings: Settings, receiver: Receiver
) -> None:
    assert Settings().analytics.otel is False
    async with analytics(redis, settings) as service:
        assert service.traces is None
    await run_script(redis, settings, liveavatar_script())
    await asyncio.sleep(0.3)  # three schedule delays: a batch would be out by now
    assert receiver.requests == []


async def test_a_summary_exported_again_gives_the_same_trace(
    redis: aioredis.Redis, settings: Settings, receiver: Receiver
) -> None:
    """A retry or a replay after a crash: the same trace id and span ids, so the trace tool
    shows one trace (the copies overwrite or are deduplicated), not two."""
    summary = await run_script(redis, settings, liveavatar_script())
    for _ in range(2):
        export = TraceExport()
        export.export(summary)
        await export.aclose()
    first, second = receiver.requests
    ids = [{(s.trace_id, s.span_id) for s in one_request(r)} for r in (first, second)]
    assert ids[0] == ids[1] and len(ids[0]) == 1 + 3 * 4 + 1  # session, 3 turns of 4, a gap
    assert {trace_id for trace_id, _ in ids[0]} == {trace_id_of("s1").to_bytes(16, "big")}


def one_request(message: ExportTraceServiceRequest) -> list[Span]:
    return [span for r in message.resource_spans for s in r.scope_spans for span in s.spans]


# Run first in a fresh interpreter: importing the SDK fails as if it were not installed.
BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "opentelemetry":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    """
)
ON = """
from relay.cli import main
sys.exit(main(["analytics"]))
"""
OFF = """
from relay.analytics.service import AnalyticsService
from relay.config import Settings
from relay.redis_client import create_redis
settings = Settings()
service = AnalyticsService(create_redis(settings.redis), settings)
print(service.traces, sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""


def run_blocked(code: str, otel: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "OTEL_"))}
    env |= {"RELAY_ANALYTICS__OTEL": otel, "RELAY_REDIS__URL": f"redis://127.0.0.1:{free_port()}"}
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code], env=env, capture_output=True, text=True, timeout=60
    )


def test_without_the_extra_on_says_what_to_install() -> None:
    done = run_blocked(ON, "true")
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.splitlines()
    assert line.startswith("relay analytics: analytics.otel is on") and line.endswith(INSTALL_HINT)


def test_without_the_extra_off_never_imports_the_sdk() -> None:
    done = run_blocked(OFF, "false")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "None []"


def test_an_unanswered_turn_is_user_speech_alone() -> None:
    """A turn nobody answered (a session that ended on the user): no wait, no reply; an
    interruption outside every turn stays on the session."""
    turn = {
        "index": 0,
        "user_start_ms": 100,
        "user_end_ms": 900,
        "response_role": None,
        "response_start_ms": None,
        "response_end_ms": None,
        "latency_ms": None,
        "signal": "speech_events",
    }
    command = {"at_ms": 1500, "kind": "command", "identity": "visitor"}
    summary = {
        "session_id": "s9",
        "room": "r9",
        "start": "2025-11-21T13:45:00.000Z",
        "duration_ms": 2000,
        "end_reason": "session_stopped",
        "end_detail": None,
        "participants": [],
        "transcript": [],
        "turns": [turn],
        "latency": {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None},
        "interruptions": {"total": 1, "by_kind": {"command": 1}, "items": [command]},
        "overlap_ms": 0,
        "silence_ms": 1200,
        "gap_ms": 0,
        "gaps": [],
        "speaking_ms": {"user": 800},
        "talk_ratio": {"user": 1.0},
        "words": {},
        "speech_signals": {"user": "speech_events"},
    }
    root = session_trace(summary)
    [span] = root.children
    assert [c.name for c in span.children] == ["user_speech"]
    assert span.attributes["relay.turn.answered"] is False
    assert "relay.turn.latency_ms" not in span.attributes and not span.events
    assert "relay.latency.p50_ms" not in root.attributes and "relay.protocol" not in root.attributes
    assert [(e.name, e.at_ns) for e in root.events] == [
        ("interruption", (T0_MS + 1500) * 1_000_000)
    ]
    assert [s.name for s in root.walk()] == ["session", "turn", "user_speech"]
