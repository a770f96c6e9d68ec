"""POST /v1/ingest against the real pipeline and a real Redis: every refusal writes
nothing (checked by a sentinel batch behind it), and a replayed batch no duplicate."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from relay.config import IngestSettings, PipelineSettings, RedisSettings
from relay.ingest import IngestService, add_ingest_routes, mint_ingest_token
from relay.ingest.http import forwarder_source
from relay.pipeline import Pipeline
from relay.redis_client import create_redis
from relay.sinks import RedisStreamsSink
from tests.ingest.support import ROOM, SECRET, SESSION, batch, liveavatar_item

Client = TestClient[web.Request, web.Application]
ORIGIN = "https://app.example"


class Relay:
    def __init__(self, http: Client, redis: aioredis.Redis, settings: RedisSettings) -> None:
        self.http = http
        self.redis = redis
        self.settings = settings

    async def post(
        self, body: Any, *, token: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        given = dict(headers or {})
        if token is not None:
            given["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await self.http.post("/v1/ingest", data=data, headers=given)
        return response.status, await response.json()

    async def events(self, count: int, room: str = ROOM) -> list[dict[str, Any]]:
        """The room stream's events once it holds `count` (fails after 5 s)."""
        key = f"{self.settings.prefix}:room:{{{room}}}"
        deadline = time.monotonic() + 5
        while True:
            entries = await self.redis.xrange(key)
            if len(entries) >= count or time.monotonic() > deadline:
                return [json.loads(fields[b"event"]) for _, fields in entries]
            await asyncio.sleep(0.02)

    async def sentinel(self, token: str, seq: int = 999) -> list[dict[str, Any]]:
        """Post one good item; the stream's events once it arrived (all of them)."""
        status, _ = await self.post(batch([liveavatar_item(seq, "sentinel", "end")]), token=token)
        assert status == 200
        for _ in range(250):
            events = await self.events(0)
            if any(e["source"].get("event_id") == "sentinel" for e in events):
                return events
            await asyncio.sleep(0.02)
        raise AssertionError("the sentinel never arrived")


def ingest_settings(**overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {"secret": SECRET, "allowed_origins": (ORIGIN,), **overrides}
    return IngestSettings(**values)


@pytest.fixture
async def relay(
    redis_settings: RedisSettings, request: pytest.FixtureRequest
) -> AsyncIterator[Relay]:
    marker = request.node.get_closest_marker("ingest")
    settings = ingest_settings(**(marker.kwargs if marker else {}))
    redis = create_redis(redis_settings)
    pipeline = Pipeline(PipelineSettings(), [RedisStreamsSink(redis, redis_settings)])
    flushing = asyncio.create_task(pipeline.run())
    app = web.Application()
    add_ingest_routes(app, IngestService(settings, pipeline, max_payload_bytes=64 * 1024))
    async with TestClient(TestServer(app)) as http:
        yield Relay(http, redis, redis_settings)
    await pipeline.drain(5)
    flushing.cancel()
    await asyncio.gather(flushing, return_exceptions=True)
    await redis.aclose()


def token(**overrides: Any) -> str:
    values: dict[str, Any] = {"room": ROOM, "session": SESSION, "ttl_s": 600, **overrides}
    return mint_ingest_token(SECRET, **values)


def rejected(reason: str) -> float:
    value = REGISTRY.get_sample_value("relay_ingest_rejected_total", {"reason": reason})
    return value or 0.0


async def test_a_valid_batch_becomes_events_marked_ingest(relay: Relay) -> None:
    items = [liveavatar_item(1, "evt_1", "hello"), liveavatar_item(2, "evt_2", "there")]
    status, answer = await relay.post(batch(items), token=token())
    assert (status, answer["accepted"], answer["duplicate"], answer["rejected"]) == (200, 2, 0, 0)
    events = await relay.events(2)
    assert [(e["kind"], e["data"]["text"], e["ingress"]) for e in events] == [
        ("transcript.final", "hello", "ingest"),
        ("transcript.final", "there", "ingest"),
    ]
    assert events[0]["participant"]["role"] == "agent"
    assert events[0]["session_id"] == SESSION


async def test_a_replayed_batch_is_answered_duplicate_and_written_once(relay: Relay) -> None:
    body = batch([liveavatar_item(1, "evt_1", "hello"), liveavatar_item(2, "evt_2", "again")])
    first = await relay.post(body, token=token())
    second = await relay.post(body, token=token())
    assert first[1]["accepted"] == 2
    assert (second[1]["accepted"], second[1]["duplicates"]) == (0, [1, 2])
    events = await relay.sentinel(token())
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)) == 3


async def test_the_same_event_from_another_page_load_keeps_its_id(relay: Relay) -> None:
    """Past the (client, seq) window, the deterministic id still names the event: both
    are accepted, and the write guard writes it once."""
    for client in ("a", "b"):
        body = batch([liveavatar_item(1, "evt_1", "hi")], client=client)
        status, answer = await relay.post(body, token=token())
        assert (status, answer["accepted"]) == (200, 1)
    events = await relay.sentinel(token())
    assert [e["source"].get("event_id") for e in events] == ["evt_1", "sentinel"]


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda: _expired(), "expired_token"),
        (
            lambda: mint_ingest_token(
                "another-secret-0123456789abcdef0123", room=ROOM, session=SESSION, ttl_s=60
            ),
            "invalid_token",
        ),
        (lambda: "not.a.jwt", "invalid_token"),
    ],
    ids=["expired", "forged", "garbage"],
)
async def test_bad_tokens_are_401_and_write_nothing(
    relay: Relay, make_token: Any, reason: str
) -> None:
    before = rejected(reason)
    status, answer = await relay.post(batch([liveavatar_item(1, "e1", "x")]), token=make_token())
    assert (status, answer["reason"]) == (401, reason)
    assert rejected(reason) == before + 1
    events = await relay.sentinel(token())
    assert [e["source"]["event_id"] for e in events] == ["sentinel"]


def _expired() -> str:
    claims = {"aud": "relay-ingest", "room": ROOM, "session": SESSION, "exp": int(time.time()) - 5}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("claims", "reason"),
    [({"room": "other-room"}, "wrong_room"), ({"session": "other"}, "wrong_session")],
)
async def test_a_token_for_another_room_or_session_is_403(
    relay: Relay, claims: dict[str, str], reason: str
) -> None:
    status, answer = await relay.post(batch([liveavatar_item(1, "e1", "x")]), token=token(**claims))
    assert (status, answer["reason"]) == (403, reason)
    events = await relay.sentinel(token())
    assert len(events) == 1


async def test_no_token_is_401(relay: Relay) -> None:
    status, answer = await relay.post(batch([liveavatar_item(1, "e1", "x")]))
    assert (status, answer["reason"]) == (401, "missing_token")


async def test_the_token_in_the_body_serves_a_beacon(relay: Relay) -> None:
    """sendBeacon sets no headers: text/plain body, token inside, no Origin check issue."""
    body = {**batch([liveavatar_item(1, "evt_b", "beaconed")]), "token": token()}
    response = await relay.http.post(
        "/v1/ingest",
        data=json.dumps(body),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN},
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    events = await relay.events(1)
    assert events[0]["data"]["text"] == "beaconed"


@pytest.mark.ingest(max_body_bytes=2048)
async def test_an_oversize_body_is_413(relay: Relay) -> None:
    items = [liveavatar_item(n, f"e{n}", "x" * 100) for n in range(30)]
    status, answer = await relay.post(batch(items), token=token())
    assert (status, answer["reason"]) == (413, "too_large")
    assert len(await relay.sentinel(token())) == 1


@pytest.mark.ingest(max_items=5)
async def test_too_many_items_is_413(relay: Relay) -> None:
    items = [liveavatar_item(n, f"e{n}", "x") for n in range(6)]
    status, answer = await relay.post(batch(items), token=token())
    assert (status, answer["reason"]) == (413, "too_many_items")
    assert "too many items: 6 > 5" in answer["error"]
    assert len(await relay.sentinel(token())) == 1


@pytest.mark.ingest(rate_items_per_s=1.0, burst_items=4)
async def test_the_rate_limit_is_429_with_retry_after(relay: Relay) -> None:
    items = [liveavatar_item(n, f"e{n}", "x") for n in range(3)]
    assert (await relay.post(batch(items), token=token()))[0] == 200
    more = [liveavatar_item(n, f"e{n}", "x") for n in range(3, 6)]
    response = await relay.http.post(
        "/v1/ingest", data=json.dumps(batch(more)), headers={"Authorization": f"Bearer {token()}"}
    )
    assert response.status == 429
    assert (await response.json())["reason"] == "rate_limited"
    assert int(response.headers["Retry-After"]) == 2  # 2 items short at 1 item/s
    events = await relay.events(3)
    assert len(events) == 3


async def test_preflight_from_an_allowed_origin(relay: Relay) -> None:
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    response = await relay.http.options("/v1/ingest", headers=headers)
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in response.headers["Access-Control-Allow-Headers"]


async def test_a_refused_origin_gets_no_cors_and_writes_nothing(relay: Relay) -> None:
    headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    before = rejected("origin_refused")
    preflight = await relay.http.options("/v1/ingest", headers=headers)
    assert preflight.status == 403
    assert "Access-Control-Allow-Origin" not in preflight.headers
    status, answer = await relay.post(
        batch([liveavatar_item(1, "e1", "x")]),
        token=token(),
        headers={"Origin": "https://evil.example"},
    )
    assert (status, answer["reason"]) == (403, "origin_refused")
    assert rejected("origin_refused") == before + 2
    assert len(await relay.sentinel(token())) == 1


async def test_a_token_bound_to_an_origin_refuses_another(relay: Relay) -> None:
    bound = token(origin="https://other.example")
    status, answer = await relay.post(
        batch([liveavatar_item(1, "e1", "x")]), token=bound, headers={"Origin": ORIGIN}
    )
    assert (status, answer["reason"]) == (403, "wrong_origin")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body must be JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        ({"room": ROOM, "session": SESSION, "client": "c", "items": "x"}, "'items' must be a list"),
        (batch([{"seq": "1", "ts": 1, "type": "data"}]), "items[0].seq must be"),
        (batch([liveavatar_item(1, "e", "x", payload=7)]), "items[0].payload must be a string"),
        (batch([liveavatar_item(1, "e", "x", sender="me")]), "items[0].sender must be"),
        ({**batch([]), "room": 5}, "'room' must be a non-empty string"),
    ],
    ids=["not-json", "not-object", "items", "seq", "payload", "sender", "room"],
)
async def test_malformed_batches_are_a_clear_400(relay: Relay, body: Any, message: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, answer = await relay.post(raw, token=token())
    assert (status, answer["reason"]) == (400, "malformed")
    assert message in answer["error"]
    assert len(await relay.sentinel(token())) == 1


async def test_an_unknown_item_type_is_rejected_alone(relay: Relay) -> None:
    items = [
        {"seq": 1, "ts": time.time() * 1000, "type": "hologram"},
        liveavatar_item(2, "e2", "ok"),
    ]
    status, answer = await relay.post(batch(items), token=token())
    assert status == 200
    assert answer["rejections"] == [{"seq": 1, "reason": "unknown_type"}]
    assert answer["accepted"] == 1


async def test_client_drops_are_counted(relay: Relay) -> None:
    before = REGISTRY.get_sample_value("relay_ingest_client_dropped_total") or 0
    body = {**batch([liveavatar_item(1, "e1", "x")]), "dropped": 7}
    assert (await relay.post(body, token=token()))[0] == 200
    assert REGISTRY.get_sample_value("relay_ingest_client_dropped_total") == before + 7


async def test_other_item_types_become_the_observers_events(relay: Relay) -> None:
    now = time.time() * 1000
    user = {"identity": "user-1", "sid": "PA_user", "kind": "standard"}
    items = [
        {"seq": 1, "ts": now, "type": "participant", "change": "joined", "sender": user},
        {"seq": 2, "ts": now, "type": "speakers", "identities": ["user-1"]},
        {
            "seq": 3,
            "ts": now,
            "type": "text",
            "topic": "lk.chat",
            "stream_id": "TS_1",
            "text": "typed",
            "sender": user,
            "attributes": {},
        },
        {
            "seq": 4,
            "ts": now,
            "type": "attributes",
            "sender": user,
            "changed": {"a": "1"},
            "attributes": {"a": "1"},
        },
    ]
    status, answer = await relay.post(batch(items), token=token())
    assert (status, answer["accepted"]) == (200, 4)
    events = await relay.events(3)
    kinds = [e["kind"] for e in events]
    assert kinds == ["participant.joined", "speakers.active", "chat.message"]
    assert events[0]["participant"]["role"] == "user"
    assert events[2]["data"]["text"] == "typed"


async def test_the_forwarder_is_served(relay: Relay) -> None:
    response = await relay.http.get("/v1/forwarder.js")
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert await response.read() == forwarder_source()
    assert b"export function createForwarder" in forwarder_source()


async def test_a_body_that_arrives_in_pieces_is_read_whole(relay: Relay) -> None:
    """Chunked, without Content-Length: the cap counts every piece, the body is whole."""
    items = [liveavatar_item(n, f"evt_{n}", "x" * 500) for n in range(1, 61)]
    raw = json.dumps(batch(items)).encode()
    assert 30_000 < len(raw) < 60 * 1024

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 1000):
            yield raw[start : start + 1000]
            await asyncio.sleep(0)

    headers = {"Authorization": f"Bearer {token()}"}
    response = await relay.http.post("/v1/ingest", data=pieces(), headers=headers)
    assert response.status == 200, await response.text()
    assert (await response.json())["accepted"] == 60


@pytest.mark.ingest(rate_items_per_s=1.0, burst_items=1)
async def test_a_page_can_read_retry_after(relay: Relay) -> None:
    headers = {"Authorization": f"Bearer {token()}", "Origin": ORIGIN}
    body = json.dumps(batch([liveavatar_item(n, f"e{n}", "x") for n in range(2)]))
    response = await relay.http.post("/v1/ingest", data=body, headers=headers)
    assert response.status == 429
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
