"""RedisStreamsSink against a real Redis: exact fields, both streams, MAXLEN, errors."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.crc import key_slot
from redis.exceptions import RedisError

from relay.config import RedisSettings
from relay.contract.event import DeadLetter, Entry, Event
from relay.errors import SinkError
from relay.redis_client import create_redis, ping
from relay.sinks import RedisStreamsSink
from relay.sinks.redis_streams import pack
from relay.sinks.write_guard import GUARDED_XADD, GUARDED_XADD_SHA, guard_prefix
from tests.fixtures.redis_server import RedisServer
from tests.pipeline.support import make_event

# Spaces, braces, a colon, a glob character, non-ASCII: all legal in a LiveKit room name.
ODD_ROOM = "Lobby {2}: café*?"


def stamped(room: str, n: int) -> Event:
    return make_event(room, n).stamped(f"ev_{n:020x}", n + 1)


async def test_an_event_goes_to_both_streams_with_exact_fields(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sink = RedisStreamsSink(redis, redis_settings, close_client=False)
    events = [stamped(ODD_ROOM, 0), stamped("plain", 1)]
    await sink.write(events)

    prefix = redis_settings.prefix
    everything = await redis.xrange(f"{prefix}:events")
    assert [fields for _, fields in everything] == [
        {
            b"kind": b"transcript.final",
            b"room": e.room.encode(),
            b"id": e.id.encode(),
            b"event": e.to_json().encode(),
        }
        for e in events
    ]
    odd = await redis.xrange(f"{prefix}:room:{{{ODD_ROOM}}}")
    assert [fields[b"id"] for _, fields in odd] == [events[0].id.encode()]
    assert json.loads(odd[0][1][b"event"])["seq"] == 1
    plain = await redis.xrange(f"{prefix}:room:{{plain}}")
    assert [fields[b"id"] for _, fields in plain] == [events[1].id.encode()]


async def test_a_dead_letter_goes_to_the_dlq(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sink = RedisStreamsSink(redis, redis_settings, close_client=False)
    letter = DeadLetter(ODD_ROOM, "oversized", time.time(), {"topic": "t", "size": 70_000})
    await sink.write([letter])
    entries = await redis.xrange(f"{redis_settings.prefix}:dlq")
    assert [fields for _, fields in entries] == [
        {
            b"reason": b"oversized",
            b"room": ODD_ROOM.encode(),
            b"id": letter.id.encode(),
            b"entry": letter.to_json().encode(),
        }
    ]
    assert letter.id.startswith("dl_") and json.loads(entries[0][1][b"entry"])["id"] == letter.id
    assert await redis.exists(f"{redis_settings.prefix}:events") == 0


async def test_streams_are_trimmed_to_about_maxlen(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    settings = redis_settings.model_copy(update={"events_maxlen": 10, "room_maxlen": 5})
    sink = RedisStreamsSink(redis, settings, close_client=False)
    for start in range(0, 1000, 100):
        await sink.write([stamped("r", n) for n in range(start, start + 100)])
    # `MAXLEN ~` trims whole radix-tree nodes, so up to one node's worth stays above n.
    config = await redis.config_get("stream-node-max-entries")
    node = int(config.get(b"stream-node-max-entries", config.get("stream-node-max-entries", 100)))
    events_len = await redis.xlen(f"{settings.prefix}:events")
    room_len = await redis.xlen(f"{settings.prefix}:room:{{r}}")
    assert 10 <= events_len <= 10 + node
    assert 5 <= room_len <= 5 + node
    last = await redis.xrevrange(f"{settings.prefix}:events", count=1)
    assert last[0][1][b"id"] == stamped("r", 999).id.encode()  # trimming keeps the newest


async def test_a_redis_error_becomes_a_sink_error(redis_settings: RedisSettings) -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    down = redis_settings.model_copy(update={"url": SecretStr("redis://127.0.0.1:1/0")})
    sink = RedisStreamsSink(create_redis(down), down)
    with pytest.raises(SinkError) as raised:
        await sink.write([stamped("a", 0)])
    assert isinstance(raised.value.__cause__, RedisError)
    assert not await sink.ping()
    await sink.aclose()


async def test_ping_and_aclose_on_a_live_redis(redis_settings: RedisSettings) -> None:
    client = create_redis(redis_settings)
    sink = RedisStreamsSink(client, redis_settings)
    assert await sink.ping()
    assert await ping(client)
    await sink.aclose()  # closes the client it was given (close_client=True)
    pool = client.connection_pool
    assert pool._available_connections
    assert not any(conn.is_connected for conn in pool._available_connections)


async def test_the_sinks_connection_survives_a_redis_restart_between_writes(
    private_redis: RedisServer,
) -> None:
    settings = RedisSettings(url=SecretStr(private_redis.url), prefix="restart")
    sink = RedisStreamsSink(create_redis(settings), settings)
    await sink.write([stamped("a", 0)])
    await asyncio.to_thread(private_redis.stop)
    await asyncio.to_thread(private_redis.start)
    # The kept connection died with the server: the write takes a fresh one at once.
    assert await sink.write([stamped("a", 1)]) == []
    client = create_redis(settings)
    assert await client.xlen("restart:events") == 2  # the first write was saved on stop
    await client.aclose()
    await sink.aclose()


async def test_a_write_cut_off_mid_reply_leaves_no_reply_behind(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sink = RedisStreamsSink(redis, redis_settings, close_client=False)
    write = asyncio.create_task(sink.write([stamped("a", n) for n in range(200)]))
    await asyncio.sleep(0)  # sent, replies not read yet
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    # The next write reads its own replies, not the cancelled write's.
    assert await sink.write([stamped("a", 999)]) == []


def test_the_resp_encoding_is_the_commands_packed(redis_settings: RedisSettings) -> None:
    settings = redis_settings.model_copy(update={"write_guard": "off"})
    sink = RedisStreamsSink(None, settings)  # type: ignore[arg-type]  # no I/O here
    letter = DeadLetter(ODD_ROOM, "oversized", time.time(), {"size": 9})
    batch: list[Entry] = [stamped(ODD_ROOM, 0), letter, stamped("plain", 1)]
    payload, count = sink.encode(batch)
    commands = sink.commands(batch)
    assert count == len(commands) == 5
    assert payload == pack(commands)
    # pack() itself, against redis-py's own encoder:
    conn = aioredis.Connection()
    assert pack(commands) == b"".join(conn.pack_commands(commands))


def guarded(
    mode: str, command: tuple[bytes, ...], prefix: str, *, loading: bool
) -> tuple[bytes, ...]:
    """An unguarded `XADD key MAXLEN ~ n * fields...` as the guard mode sends it."""
    key, maxlen, fields = command[1], command[4], command[6:]
    event_id = fields[fields.index(b"id") + 1]
    if mode == "idmp":
        room = fields[fields.index(b"room") + 1]
        return (b"XADD", key, b"IDMP", room, event_id, *command[2:])
    guard = guard_prefix(prefix, key.decode()).encode() + event_id
    call = (b"EVAL", GUARDED_XADD) if loading else (b"EVALSHA", GUARDED_XADD_SHA)
    return (*call, b"2", guard, key, b"900000", maxlen, *fields)


@pytest.mark.parametrize(
    ("mode", "loading"), [("idmp", False), ("script", False), ("script", True)]
)
def test_guarded_commands_are_the_xadds_with_their_guard(
    redis_settings: RedisSettings, mode: str, loading: bool
) -> None:
    settings = redis_settings.model_copy(update={"write_guard": mode})
    sink = RedisStreamsSink(None, settings)  # type: ignore[arg-type]  # no I/O here
    letter = DeadLetter(ODD_ROOM, "oversized", time.time(), {"size": 9})
    batch: list[Entry] = [stamped(ODD_ROOM, 0), letter, stamped("plain", 1)]
    plain = sink.commands(batch)
    expected = [
        guarded(mode, c, settings.prefix, loading=loading) if b"id" in c else c for c in plain
    ]
    assert sink.encode(batch, loading=loading) == (pack(expected), 5)
    # Each command is routed by its stream's key (a guard shares the stream's slot).
    assert [key for key, _ in sink.keyed(batch)] == [c[1] for c in plain]


@pytest.mark.parametrize("room", [ODD_ROOM, "plain", "{}", "a}b{c", "café {x}"])
def test_a_guard_key_is_in_its_streams_cluster_slot(
    redis_settings: RedisSettings, room: str
) -> None:
    for stream in (f"{redis_settings.prefix}:events", f"{redis_settings.prefix}:room:{{{room}}}"):
        guard = guard_prefix(redis_settings.prefix, stream) + "ev_0123456789abcdef0123"
        assert guard.startswith(f"{redis_settings.prefix}:dedupe:")
        assert key_slot(guard.encode()) == key_slot(stream.encode()), (stream, guard)
