"""Redis Streams sink: each batch pipelined on the sink's own connection, `XADD ... MAXLEN ~`.

Each event goes to two streams, the all-events stream and its room's stream
(`{prefix}:room:{<room>}`, the braces a Cluster hash tag), with the fields `kind`, `room`,
`id`, `event`; each dead letter goes to the DLQ stream with `reason`, `room`, `id`, `entry`.
A pipeline is not atomic: after a failure part of the batch may already be written, and
the retried batch comes again with the same ids; the write guard (relay/sinks/write_guard.py)
skips what a stream already has, so each id (an event's, a dead letter's) is written once
(with `redis.write_guard=off` the repeats are written, for consumers to drop).

The batch goes out in one socket write on a connection the sink keeps (taken from the
client's pool), and the replies are read in order: at realistic rates a batch holds one
event, and a redis-py `Pipeline` object per batch cost twice the CPU of this at 300
writes/s. The commands are encoded here, in RESP, from parts made once: each stream's
command head for the guard mode and an event's fields (the same bytes serve both of its
streams).
A connection error drops the connection (its replies may be half read); the next write
takes a fresh one.

Replies are read one by one. An error that cannot pass by waiting (`WRONGTYPE`: a key
taken by something else; `NOPERM`: an ACL that refuses a key) rejects only the entries
it hit, for the pipeline to dead-letter, so one bad key cannot stall every room. Any
other error (out of memory, a replica promoted, a cluster resharding, a lost connection)
fails the batch, which is retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, NoScriptError, RedisError, ResponseError

from relay import keys, redis_client
from relay.config import RedisSettings
from relay.contract.event import Entry, Event
from relay.contract.sink import Rejected, Sink
from relay.errors import SinkError
from relay.lru import LRU
from relay.metrics import DUPLICATES_SKIPPED
from relay.sinks import write_guard
from relay.sinks.redis_cluster import ClusterWriter, Command
from relay.sinks.write_guard import GUARDED_XADD, GUARDED_XADD_SHA, GuardMode, guard_prefix

ROOM_CACHE_MAX = 4096  # room names -> their stream's command parts (rooms come and go)
# Fields an entry has: an event's kind, room, id, event; a dead letter's reason, room, id,
# entry. One count, so both are written by the same guarded command.
FIELDS = 4


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def pack(commands: Sequence[Sequence[bytes]]) -> bytes:
    """Commands in RESP, as Redis reads them (arrays of bulk strings)."""
    return b"".join(
        b"*%d\r\n%s" % (len(command), b"".join(map(_bulk, command))) for command in commands
    )


def _xadd_head(key: str, maxlen: int) -> tuple[bytes, ...]:
    """`XADD key MAXLEN ~ maxlen *`: trimming is approximate (whole radix-tree nodes),
    which costs next to nothing; the id is Redis's own."""
    return (b"XADD", key.encode(), b"MAXLEN", b"~", str(maxlen).encode(), b"*")


_KIND, _ROOM, _ID, _EVENT = (_bulk(name) for name in (b"kind", b"room", b"id", b"event"))
_REASON, _ENTRY = _bulk(b"reason"), _bulk(b"entry")
_XADD = _bulk(b"XADD")


Stream = tuple[bytes, bytes, bytes]  # _Commands.stream(): pre, post, guard key prefix


class _Commands:
    """An event's command to one stream in RESP, for the guard mode, from parts made once:

        off:    *N XADD key MAXLEN ~ n *                                   <fields>
        idmp:   *N XADD key IDMP <room> <id> MAXLEN ~ n *                  <fields>
        script: *N EVALSHA <sha> 2 <guard-prefix><id> key <window> n       <fields>

    i.e. `xadd()`: `lead + pre + <the entry's part> + post + fields`; a stream's `pre` and
    `post` come from `stream()`. After NOSCRIPT the batch goes again as EVAL with the script's
    body (`loading`), which also loads it."""

    def __init__(self, mode: GuardMode, window_ms: int, prefix: str) -> None:
        self.mode = mode
        self._window = _bulk(b"%d" % window_ms)
        self._prefix = prefix
        size = 2 * FIELDS + {"off": 6, "idmp": 9, "script": 7}[mode]
        count = b"*%d\r\n" % size
        if mode == "script":
            self._leads = (
                count + _bulk(b"EVALSHA") + _bulk(GUARDED_XADD_SHA) + _bulk(b"2"),
                count + _bulk(b"EVAL") + _bulk(GUARDED_XADD) + _bulk(b"2"),
            )
        else:
            self._leads = (count + _XADD, count + _XADD)

    def lead(self, loading: bool) -> bytes:
        return self._leads[loading]

    def stream(self, key: str, maxlen: int) -> tuple[bytes, bytes, bytes]:
        """A stream's (pre, post, guard key prefix)."""
        trim = _bulk(b"MAXLEN") + _bulk(b"~") + _bulk(b"%d" % maxlen) + _bulk(b"*")
        if self.mode == "off":
            return _bulk(key.encode()) + trim, b"", b""
        if self.mode == "idmp":
            return _bulk(key.encode()) + _bulk(b"IDMP"), trim, b""
        post = _bulk(key.encode()) + self._window + _bulk(b"%d" % maxlen)
        return b"", post, guard_prefix(self._prefix, key).encode("utf-8", "replace")

    def xadd(
        self, lead: bytes, stream: Stream, room: bytes, entry_id: bytes, fields: bytes
    ) -> bytes:
        """One entry's command to one stream: `lead + pre + <its guard part> + post + fields`."""
        pre, post, guard = stream
        if self.mode == "off":
            guarded = b""
        elif self.mode == "idmp":
            guarded = room + _bulk(entry_id)  # the producer is the room
        else:
            guarded = _bulk(guard + entry_id)
        return b"".join((lead, pre, guarded, post, fields))


class RedisStreamsSink(Sink):
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: RedisSettings,
        *,
        name: str = "redis",
        close_client: bool = True,
    ) -> None:
        self.name = name
        self._redis = redis
        self._settings = settings
        self._close_client = close_client
        # The guard mode: `auto` is resolved at the first write (it asks the server).
        self._commands: _Commands | None = None
        if settings.write_guard != "auto":
            self._use(settings.write_guard)
        # Commands are built from bytes: redis-py passes bytes through as they are, where
        # every str or int argument costs it a round of type checks and an encode.
        self._events_head = _xadd_head(keys.events_key(settings), settings.events_maxlen)
        self._dlq_head = _xadd_head(keys.dlq_key(settings), settings.dlq_maxlen)
        # room -> (its stream's key, command parts, the room name as a RESP value)
        self._rooms: LRU[str, tuple[bytes, Stream, bytes]] = LRU(ROOM_CACHE_MAX)
        self._conn: Connection | None = None  # the connection batches are written on
        # A Redis Cluster client: batches are grouped by node (relay/sinks/redis_cluster.py).
        self._cluster = ClusterWriter(redis) if isinstance(redis, RedisCluster) else None
        # WAIT after each batch (redis.wait_replicas): acknowledged once replicated.
        self._wait_replicas = settings.wait_replicas
        self._wait_resp = pack(
            [(b"WAIT", b"%d" % settings.wait_replicas, b"%d" % (settings.wait_timeout_s * 1000))]
        )
        self.duplicates_skipped = 0  # XADDs the guard skipped (every stream)
        self._skipped = {
            stream: DUPLICATES_SKIPPED.labels(stream=stream) for stream in ("events", "room", "dlq")
        }

    def _use(self, mode: GuardMode) -> None:
        window_ms = int(self._settings.dedupe_window_s * 1000)
        self._commands = _Commands(mode, window_ms, self._settings.prefix)
        self._events = self._commands.stream(
            keys.events_key(self._settings), self._settings.events_maxlen
        )
        self._dlq = self._commands.stream(keys.dlq_key(self._settings), self._settings.dlq_maxlen)
        self._rooms = LRU(ROOM_CACHE_MAX)

    @property
    def guard(self) -> GuardMode | None:
        """The write guard in use (None: `auto`, before the first write asked the server)."""
        return None if self._commands is None else self._commands.mode

    async def resolve_guard(self) -> GuardMode:
        if self._commands is None:
            try:
                mode = await write_guard.resolve(self._settings.write_guard, self._redis)
            except (RedisError, OSError) as exc:
                reason = redis_client.describe_redis_error(exc, tls=self._settings.tls)
                raise SinkError(f"cannot ask Redis for its version: {reason}") from exc
            self._use(mode)
        assert self._commands is not None
        return self._commands.mode

    def room_key(self, room: str) -> str:
        return keys.room_key(self._settings, room)

    def _room(self, room: str) -> tuple[bytes, Stream, bytes]:
        cached = self._rooms.get(room)
        if cached is None:
            assert self._commands is not None
            key = self.room_key(room)
            stream = self._commands.stream(key, self._settings.room_maxlen)
            cached = (key.encode(), stream, _bulk(room.encode("utf-8", "replace")))
            self._rooms.put(room, cached)
        return cached

    def encode(self, batch: Sequence[Entry], *, loading: bool = False) -> tuple[bytes, int]:
        """The batch's commands in RESP, and how many commands (replies) that is."""
        keyed = self.keyed(batch, loading=loading)
        return b"".join(resp for _, resp in keyed), len(keyed)

    def keyed(self, batch: Sequence[Entry], *, loading: bool = False) -> list[Command]:
        """The batch's commands one by one in RESP, each with its stream's key (a Cluster
        routes by key, and a guard shares its stream's slot; one node takes them all in
        one write): two an event (the events stream, its room's), one a dead letter."""
        commands = self._commands
        assert commands is not None, "resolve_guard() first"
        lead = commands.lead(loading)
        out: list[Command] = []
        events_key, dlq_key = self._events_head[1], self._dlq_head[1]
        for entry in batch:
            if isinstance(entry, Event):
                room_key, room_stream, room = self._room(entry.room)
                event_id = entry.id.encode()
                fields = b"".join(
                    (_KIND, _bulk(entry.kind.encode()), _ROOM, room, _ID, _bulk(event_id),
                     _EVENT, _bulk(entry.json_bytes()))
                )  # fmt: skip
                out += [
                    (events_key, commands.xadd(lead, self._events, room, event_id, fields)),
                    (room_key, commands.xadd(lead, room_stream, room, event_id, fields)),
                ]
            else:
                room = _bulk(entry.room.encode("utf-8", "replace"))
                letter_id = entry.id.encode()
                fields = b"".join(
                    (_REASON, _bulk(entry.reason.encode()), _ROOM, room, _ID, _bulk(letter_id),
                     _ENTRY, _bulk(entry.json_bytes()))
                )  # fmt: skip
                out.append((dlq_key, commands.xadd(lead, self._dlq, room, letter_id, fields)))
        return out

    def commands(self, batch: Sequence[Entry]) -> list[tuple[bytes, ...]]:
        """The same writes as unguarded XADD argument tuples (what `encode` packs with the
        guard off; the benchmark's baselines send these through redis-py)."""
        out: list[tuple[bytes, ...]] = []
        for entry in batch:
            if isinstance(entry, Event):
                room_head = _xadd_head(self.room_key(entry.room), self._settings.room_maxlen)
                room = entry.room.encode("utf-8", "replace")
                fields = (
                    b"kind", entry.kind.encode(), b"room", room, b"id", entry.id.encode(),
                    b"event", entry.json_bytes(),
                )  # fmt: skip
                out += [(*self._events_head, *fields), (*room_head, *fields)]
            else:
                room = entry.room.encode("utf-8", "replace")
                letter = (b"reason", entry.reason.encode(), b"room", room, b"id", entry.id.encode())
                out.append((*self._dlq_head, *letter, b"entry", entry.json_bytes()))
        return out

    async def write(self, batch: Sequence[Entry]) -> list[Rejected]:
        if not batch:
            return []
        mode = await self.resolve_guard()
        replies = await self._write_replies(batch, loading=False)
        if mode == "script" and any(isinstance(r, NoScriptError) for r in replies):
            # Redis restarted or flushed its scripts: the batch again, as EVAL, loads it;
            # what the first try wrote is skipped by its guard.
            replies = await self._write_replies(batch, loading=True)
        if mode == "script":
            self._count_skipped(batch, replies)
        return _rejected(batch, replies)

    async def _write_replies(self, batch: Sequence[Entry], *, loading: bool) -> list[Any]:
        try:
            if self._cluster is not None:
                return await self._cluster.send(self.keyed(batch, loading=loading))
            payload, commands = self.encode(batch, loading=loading)
            if self._wait_replicas:
                payload, commands = payload + self._wait_resp, commands + 1
            replies = await self._pipelined(payload, commands)
        except (RedisError, OSError) as exc:
            reason = redis_client.describe_redis_error(exc, tls=self._settings.tls)
            raise SinkError(f"{len(batch)} entries not written: {reason}") from exc
        if self._wait_replicas:
            await self._check_replicated(len(batch), replies.pop())
        return replies

    def _count_skipped(self, batch: Sequence[Entry], replies: Sequence[Any]) -> None:
        """A nil reply to a guarded XADD: a repeat, skipped."""
        position = 0
        for entry in batch:
            if isinstance(entry, Event):
                pair = replies[position : position + 2]
                for stream, reply in zip(("events", "room"), pair, strict=True):
                    if reply is None:
                        self._skipped[stream].inc()
                        self.duplicates_skipped += 1
                position += 2
            else:
                if replies[position] is None:
                    self._skipped["dlq"].inc()
                    self.duplicates_skipped += 1
                position += 1

    async def _check_replicated(self, entries: int, reply: Any) -> None:
        if isinstance(reply, Exception) or reply < self._wait_replicas:
            # Perhaps a master that lost its replicas to a failover and does not know yet:
            # the next write takes a new connection (Sentinel: to the master it names now).
            await self._drop_connection()
            raise SinkError(
                f"{entries} entries written but on {reply} of {self._wait_replicas} replicas "
                f"within {self._settings.wait_timeout_s:g} s (RELAY_REDIS__WAIT_REPLICAS); "
                "retried"
            )

    async def _pipelined(self, payload: bytes, commands: int) -> list[Any]:
        """Every command in one write, every reply in order (error replies as exceptions).
        A kept connection that died meanwhile (Redis restarted) is replaced once at once."""
        kept = self._conn is not None
        try:
            return await self._send(payload, commands)
        except RedisConnectionError:
            if not kept:
                raise
        return await self._send(payload, commands)

    async def _send(self, payload: bytes, commands: int) -> list[Any]:
        if self._conn is None:
            self._conn = await self._redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        conn = self._conn
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            await conn.send_packed_command(payload)
            if task is not None and task.cancelling() > cancels:
                # redis-py sends through asyncio.wait_for, which on Python 3.11 returns
                # the result of a send that finished as the task was cancelled and drops
                # the cancellation (fixed in 3.12): a drain deadline would be ignored.
                raise asyncio.CancelledError
            replies: list[Any] = []
            for _ in range(commands):
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # an error reply: the other replies follow
                    replies.append(exc)
        except BaseException:  # also a cancellation mid-read: the replies are out of step
            await self._drop_connection()
            raise
        return replies

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)
            await self._redis.connection_pool.release(conn)

    async def ping(self) -> bool:
        try:
            return await redis_client.ping(self._redis)
        except (RedisError, OSError):
            return False

    async def aclose(self) -> None:
        if self._cluster is not None:
            await self._cluster.aclose()
        if self._conn is not None:
            await self._redis.connection_pool.release(self._conn)
            self._conn = None
        if self._close_client:
            await self._redis.aclose()


def _rejected(batch: Sequence[Entry], replies: Sequence[Any]) -> list[Rejected]:
    """The entries whose XADDs got an error reply (two XADDs an event, one a dead letter);
    raises SinkError if any error may pass."""
    if not any(isinstance(reply, Exception) for reply in replies):
        return []
    rejected: list[Rejected] = []
    position = 0
    for entry in batch:
        width = 2 if isinstance(entry, Event) else 1
        errors = [r for r in replies[position : position + width] if isinstance(r, Exception)]
        position += width
        for error in errors:
            if not _refused_for_good(error):
                raise SinkError(f"{len(batch)} entries not written: {error}") from error
        if errors:
            rejected.append((entry, _describe(errors[0])))
    return rejected


def _refused_for_good(error: Exception) -> bool:
    # redis-py turns most error codes into subclasses and strips the code from the
    # message (OutOfMemoryError, ReadOnlyError, ...): only these two cannot pass.
    if isinstance(error, NoPermissionError):
        return True
    return type(error) is ResponseError and str(error).startswith("WRONGTYPE")


def _describe(error: Exception) -> str:
    return f"NOPERM {error}" if isinstance(error, NoPermissionError) else str(error)
