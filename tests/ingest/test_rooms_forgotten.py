"""Rooms only ever posted to are forgotten once ingest holds nothing of them: the
pipeline's per-room counters (`Pipeline.rooms_tracked`) drop back, while an observed room
that ingest also posts to keeps its counter.

The worker's own assembly (relay/worker.py: pipeline, Redis sink, room manager, ingest
service, HTTP) against the real Redis; the observed room's SDK room is scripted
(tests/observer/sdk_objects.py), the batches are real HTTP posts with real tokens.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from relay.config import (
    HttpSettings,
    IngestSettings,
    LiveKitSettings,
    RedisSettings,
    Settings,
)
from relay.contract.event import Entry
from relay.ingest import IngestService, mint_ingest_token
from relay.ingest.batch import parse_batch
from relay.ingest.session import IngestSession
from relay.ingest.tokens import IngestGrant
from relay.observer import RoomTarget
from relay.redis_client import create_redis
from relay.worker import Worker
from tests.ingest.support import SECRET, batch, liveavatar_item
from tests.observer.sdk_objects import STAYS, Script

OBSERVED = "observed-room"
INGEST_ONLY = 40  # rooms that only browsers post to
TTL_S = 3  # the short tokens: at least 2 s of it left for the posts (exp is whole seconds)


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 (counters have no event to wait on)
            await asyncio.sleep(0.02)


class RunningWorker:
    def __init__(self, worker: Worker, redis: aioredis.Redis, prefix: str) -> None:
        self.worker = worker
        self.redis = redis
        self.prefix = prefix

    @property
    def ingest(self) -> IngestService:
        assert self.worker.ingest is not None
        return self.worker.ingest

    async def post(self, room: str, seq: int, *, ttl_s: float = 600) -> None:
        """One LiveAvatar transcript of `room` (its own session), with a fresh token."""
        token = mint_ingest_token(SECRET, room=room, session=f"s-{room}", ttl_s=ttl_s)
        body = batch([liveavatar_item(seq, f"evt-{seq}", "hi")], room=room, session=f"s-{room}")
        port = self.worker.http.bound_port
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/v1/ingest",
                data=json.dumps(body),
                headers={"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            answer = await response.json()
            assert (response.status, answer.get("accepted")) == (200, 1), answer

    async def seqs(self, room: str) -> list[tuple[str, int]]:
        """(kind, seq) of the room's stream as written."""
        entries = await self.redis.xrange(f"{self.prefix}:room:{{{room}}}")
        return [(e["kind"], e["seq"]) for e in (json.loads(f[b"event"]) for _, f in entries)]


@pytest.fixture
async def running(redis_settings: RedisSettings) -> AsyncIterator[RunningWorker]:
    settings = Settings(
        redis=redis_settings,
        livekit=LiveKitSettings(
            url="ws://127.0.0.1:9",
            api_key="devkey",
            api_secret=SecretStr("devsecret-devsecret-devsecret-000"),
        ),
        http=HttpSettings(host="127.0.0.1", port=0),
        ingest=IngestSettings(secret=SecretStr(SECRET)),
        shutdown_grace_s=5.0,
    )
    worker = Worker(settings, room_factory=Script([STAYS]).room)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: worker.http.bound_port is not None)
    redis = create_redis(redis_settings)
    try:
        yield RunningWorker(worker, redis, redis_settings.prefix)
    finally:
        worker.request_stop()
        assert await task == 0
        await redis.aclose()


async def test_ingest_only_rooms_are_forgotten_once_their_tokens_expired_not_an_observed_one(
    running: RunningWorker,
) -> None:
    pipeline = running.worker.pipeline
    running.worker.rooms.want(RoomTarget(room=OBSERVED))
    await eventually(lambda: pipeline.last_seq(OBSERVED) == 1)  # its observer.joined
    rooms = [f"ingest-only-{n}" for n in range(INGEST_ONLY)]
    for room in rooms:
        await running.post(room, 1, ttl_s=TTL_S)
    await running.post(OBSERVED, 1, ttl_s=TTL_S)  # a browser of the observed room posts too
    assert pipeline.rooms_tracked == INGEST_ONLY + 1
    assert running.ingest.rooms_in_use == INGEST_ONLY + 1

    await asyncio.sleep(TTL_S + 0.05)  # every token has expired (exp: whole seconds, rounded down)
    assert running.ingest.end_expired_sessions() == INGEST_ONLY + 1
    assert (running.ingest.sessions, running.ingest.rooms_in_use) == (0, 0)
    assert pipeline.rooms_tracked == 1  # the observed room's counter stays
    assert pipeline.last_seq(OBSERVED) == 2

    # The observed room goes on counting; an ingest-only room posted to again restarts.
    await running.post(OBSERVED, 2)
    await running.post(rooms[0], 2)
    await eventually(lambda: pipeline.buffered == 0)
    assert await running.seqs(OBSERVED) == [
        ("observer.joined", 1),
        ("transcript.final", 2),
        ("transcript.final", 3),
    ]
    assert await running.seqs(rooms[0]) == [("transcript.final", 1), ("transcript.final", 1)]
    assert pipeline.rooms_tracked == 2

    # Once the observer left, the room's counter goes with it (ingest still holds a session
    # of the observed room: the leave forgets it, as before).
    await running.worker.rooms.unwant(OBSERVED)
    assert pipeline.last_seq(OBSERVED) == 0
    assert pipeline.rooms_tracked == 1


# -- the service alone: which uses keep a room ---------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class GatedIntake:
    """The pipeline's intake; while `gate` is clear, submits wait (a full buffer)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def submit(self, entry: Entry) -> None:
        await self.gate.wait()
        self.entries.append(entry)


def service(intake: GatedIntake, clock: Clock, idle: list[str], **settings: Any) -> IngestService:
    return IngestService(
        IngestSettings(secret=SecretStr(SECRET), **settings),
        intake,
        max_payload_bytes=64 * 1024,
        on_room_idle=idle.append,
        clock=clock,
        sweep_interval_s=0,  # every request looks
    )


def grant(room: str, session: str, expires_at: float) -> IngestGrant:
    return IngestGrant(room, session, expires_at)


def one_item(room: str, session: str, seq: int = 1) -> Any:
    body = batch([liveavatar_item(seq, f"e{seq}", "hi")], room=room, session=session)
    return parse_batch(json.dumps(body).encode(), max_items=10)


async def post(svc: IngestService, room: str, session: str, expires_at: float) -> IngestSession:
    posted = one_item(room, session)
    taken = svc.check(grant(room, session, expires_at), posted, None)
    await svc.ingest(taken, posted)
    return taken


async def test_a_room_is_idle_when_its_last_session_ends() -> None:
    intake, clock, idle = GatedIntake(), Clock(), list[str]()
    svc = service(intake, clock, idle)
    await post(svc, "r", "a", clock.now + 10)
    await post(svc, "r", "b", clock.now + 20)
    clock.now += 15
    assert svc.end_expired_sessions() == 1  # "a"
    assert (idle, svc.uses_room("r")) == ([], True)
    await post(svc, "other", "c", clock.now + 60)  # a request sweeps: "b" still valid
    clock.now += 10
    await post(svc, "other", "c", clock.now + 60)  # this one sweeps "b" away
    assert idle == ["r"]
    assert (svc.sessions, svc.rooms_in_use) == (1, 1)


async def test_a_refreshed_token_keeps_its_session() -> None:
    intake, clock, idle = GatedIntake(), Clock(), list[str]()
    svc = service(intake, clock, idle)
    first = await post(svc, "r", "a", clock.now + 10)
    again = await post(svc, "r", "a", clock.now + 100)  # the page got a new token
    assert again is first
    clock.now += 50
    assert svc.end_expired_sessions() == 0
    assert idle == []


async def test_sessions_pushed_out_by_newer_ones_free_their_rooms() -> None:
    intake, clock, idle = GatedIntake(), Clock(), list[str]()
    svc = service(intake, clock, idle, max_sessions=3)
    for n in range(5):
        await post(svc, f"r{n}", "s", clock.now + 600)
    assert idle == ["r0", "r1"]
    assert (svc.sessions, svc.rooms_in_use) == (3, 3)


async def test_a_batch_being_handed_on_keeps_its_room_and_session() -> None:
    """The buffer is full: the batch waits in submit() past its token's expiry. Neither
    the sweep nor a push-out may forget the room while its entries are not stamped."""
    intake, clock, idle = GatedIntake(), Clock(), list[str]()
    svc = service(intake, clock, idle, max_sessions=1)
    posted = one_item("r", "a")
    session = svc.check(grant("r", "a", clock.now + 1), posted, None)
    intake.gate.clear()
    waiting = asyncio.create_task(svc.ingest(session, posted))
    await asyncio.sleep(0.01)
    clock.now += 5
    assert svc.end_expired_sessions() == 0  # locked: its batch is in flight
    await post_without_waiting(svc, "other", "b", clock.now + 60)  # pushes "a" out
    assert idle == []
    assert svc.uses_room("r")
    intake.gate.set()
    assert (await waiting).accepted == 1
    assert idle == ["r"]  # its last use ended with the batch


async def post_without_waiting(svc: IngestService, room: str, session: str, exp: float) -> None:
    posted = one_item(room, session)
    svc.check(grant(room, session, exp), posted, None)
