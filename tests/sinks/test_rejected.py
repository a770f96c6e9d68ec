"""A key taken by something else (WRONGTYPE) must not stall every room: the sink rejects
only the entries it hit, the pipeline dead-letters them whole, the rest flows on."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.exceptions import NoPermissionError, OutOfMemoryError, ReadOnlyError, ResponseError

from relay.config import PipelineSettings, RedisSettings
from relay.contract.event import DeadLetter
from relay.errors import SinkError
from relay.pipeline import Pipeline
from relay.redis_client import create_redis
from relay.sinks import RedisStreamsSink
from relay.sinks.redis_streams import _rejected
from tests.fixtures.redis_server import RedisServer
from tests.pipeline.support import make_event
from tests.support import dropped

QUICK = PipelineSettings(batch_max_events=10, retry_initial_s=0.01, retry_max_s=0.05)


async def test_the_sink_rejects_only_entries_whose_key_has_the_wrong_type(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sink = RedisStreamsSink(redis, redis_settings, close_client=False)
    await redis.set(sink.room_key("taken"), "not a stream")
    bad, good = make_event("taken", 0).stamped("ev_bad", 1), make_event("ok", 1).stamped("ev_ok", 1)
    letter = DeadLetter("ok", "oversized", 0.0, {"size": 1})

    rejected = await sink.write([bad, good, letter])

    assert [(entry, error.split()[0]) for entry, error in rejected] == [(bad, "WRONGTYPE")]
    ok = await redis.xrange(sink.room_key("ok"))
    assert [fields[b"id"] for _, fields in ok] == [b"ev_ok"]
    assert len(await redis.xrange(f"{redis_settings.prefix}:dlq")) == 1


async def test_the_pipeline_dead_letters_rejected_events_and_keeps_going(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sink = RedisStreamsSink(redis, redis_settings, close_client=False)
    await redis.set(sink.room_key("taken"), "not a stream")
    pipeline = Pipeline(QUICK, [sink])
    for n in range(3):
        for room in ("taken", "ok"):
            await pipeline.submit(make_event(room, n))

    assert await pipeline.drain(5.0) == 0  # not stalled: nothing left unwritten

    ok = await redis.xrange(sink.room_key("ok"))
    assert [json.loads(f[b"event"])["seq"] for _, f in ok] == [1, 2, 3]
    letters = [
        json.loads(f[b"entry"]) for _, f in await redis.xrange(f"{redis_settings.prefix}:dlq")
    ]
    assert [letter["reason"] for letter in letters] == ["write_rejected"] * 3
    for n, letter in enumerate(letters):
        detail = letter["detail"]
        assert detail["sink"] == "redis"
        assert detail["error"].startswith("WRONGTYPE")
        # The whole event, ready to be replayed: nothing else holds it.
        assert (detail["event"]["room"], detail["event"]["seq"]) == ("taken", n + 1)
        assert detail["event"]["data"]["text"] == f"utterance {n}"


async def test_a_rejected_dead_letter_is_counted_not_retried_forever(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sink = RedisStreamsSink(redis, redis_settings, close_client=False)
    await redis.set(sink.room_key("taken"), "not a stream")
    await redis.set(f"{redis_settings.prefix}:dlq", "not a stream either")
    pipeline = Pipeline(QUICK, [sink])
    before = dropped("dead_letter_rejected")
    await pipeline.submit(make_event("taken", 0))
    assert await pipeline.drain(5.0) == 0
    assert dropped("dead_letter_rejected") == before + 1


async def test_a_full_redis_holds_events_back_and_writes_them_once_it_has_room(
    private_redis: RedisServer,
) -> None:
    """OOM passes (memory is freed, maxmemory raised): a retry, never a rejection."""
    settings = RedisSettings(url=SecretStr(private_redis.url), prefix="oom", socket_timeout_s=1)
    admin = create_redis(settings)
    sink = RedisStreamsSink(create_redis(settings), settings)
    await admin.config_set("maxmemory", "1")  # every write is refused with OOM
    pipeline = Pipeline(QUICK, [sink])
    flushing = asyncio.create_task(pipeline.run())
    try:
        for n in range(3):
            await pipeline.submit(make_event("room", n))
        probe = RedisStreamsSink(create_redis(settings), settings)  # not the pipeline's:
        with pytest.raises(SinkError, match="maxmemory"):  # a sink writes one batch at a time
            await probe.write([make_event("room", 9).stamped("ev_probe", 9)])
        await probe.aclose()
        await asyncio.sleep(0.3)  # a few retries, all refused
        assert pipeline.buffered == 3
        await admin.config_set("maxmemory", "0")
        assert await pipeline.drain(5.0) == 0
    finally:
        await asyncio.gather(flushing, return_exceptions=True)
        await sink.aclose()
    entries = await admin.xrange(sink.room_key("room"))
    assert [json.loads(f[b"event"])["seq"] for _, f in entries] == [1, 2, 3]
    assert await admin.xlen("oom:dlq") == 0
    await admin.aclose()


def test_only_wrongtype_and_noperm_reject_anything_else_fails_the_batch() -> None:
    event = make_event("r", 0).stamped("ev_1", 1)
    # As redis-py hands them over: most codes become subclasses without the code.
    for passing in (
        OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        ReadOnlyError("You can't write against a read only replica."),
        ResponseError("BUSY Redis is busy running a script."),
        ConnectionResetError("reset"),
    ):
        with pytest.raises(SinkError):
            _rejected([event], [b"1-0", passing])
    wrongtype = ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    assert _rejected([event], [b"1-0", wrongtype]) == [(event, str(wrongtype))]
    noperm = NoPermissionError("this user has no permissions to access the key")
    assert _rejected([event], [noperm, b"1-0"]) == [(event, f"NOPERM {noperm}")]
    with pytest.raises(SinkError):  # one refusal for good, one that passes: retry
        _rejected([event], [wrongtype, OutOfMemoryError("full")])
