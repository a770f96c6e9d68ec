"""Redis Streams sink: each batch pipelined on the sink's own connection, `XADD ... MAXLEN ~`.

Each event goes to two streams, the all-events stream and its room's stream
(`{prefix}:room:{<room>}`, the braces a Cluster hash tag), with the fields `kind`, `room`,
`id`, `event`; each dead letter goes to the DLQ stream with `reason`, `room`, `entry`.
A pipeline is not atomic: after a failure part of the batch may already be written, and
the retried batch writes it again, with the same ids, for consumers to drop.

The batch goes out in one socket write on a connection the sink keeps (taken from the
client's pool), and the replies are read in order: at realistic rates a batch holds one
event, and a redis-py `Pipeline` object per batch cost twice the CPU of this at 300
writes/s. The commands are encoded here, in RESP, from parts made once: each stream's
`XADD key MAXLEN ~ n *` and an event's fields (the same bytes serve both of its XADDs).
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
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from relay import keys, redis_client
from relay.config import RedisSettings
from relay.contract.event import Entry, Event
from relay.contract.sink import Rejected, Sink
from relay.errors import SinkError
from relay.lru import LRU
from relay.sinks.redis_cluster import ClusterWriter, Command

ROOM_CACHE_MAX = 4096  # room names -> their stream's XADD head (rooms come and go)


def _xadd_head(key: str, maxlen: int) -> tuple[bytes, ...]:
    """`XADD key MAXLEN ~ maxlen *`: trimming is approximate (whole radix-tree nodes),
    which costs next to nothing; the id is Redis's own."""
    return (b"XADD", key.encode(), b"MAXLEN", b"~", str(maxlen).encode(), b"*")


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def pack(commands: Sequence[Sequence[bytes]]) -> bytes:
    """Commands in RESP, as Redis reads them (arrays of bulk strings)."""
    return b"".join(
        b"*%d\r\n%s" % (len(command), b"".join(map(_bulk, command))) for command in commands
    )


_KIND, _ROOM, _ID, _EVENT = (_bulk(name) for name in (b"kind", b"room", b"id", b"event"))
_REASON, _ENTRY = _bulk(b"reason"), _bulk(b"entry")


def _resp_head(head: tuple[bytes, ...], pairs: int) -> bytes:
    """An XADD's array header and head arguments in RESP, for `pairs` field-value pairs."""
    return b"*%d\r\n%s" % (len(head) + 2 * pairs, b"".join(map(_bulk, head)))


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
        # Commands are built from bytes: redis-py passes bytes through as they are, where
        # every str or int argument costs it a round of type checks and an encode.
        self._events_head = _xadd_head(keys.events_key(settings), settings.events_maxlen)
        self._dlq_head = _xadd_head(keys.dlq_key(settings), settings.dlq_maxlen)
        self._events_resp = _resp_head(self._events_head, 4)  # kind, room, id, event
        self._dlq_resp = _resp_head(self._dlq_head, 3)  # reason, room, entry
        # room -> (its stream's XADD head, the same in RESP, the room name as a RESP value)
        self._rooms: LRU[str, tuple[tuple[bytes, ...], bytes, bytes]] = LRU(ROOM_CACHE_MAX)
        self._conn: Connection | None = None  # the connection batches are written on
        # A Redis Cluster client: batches are grouped by node (relay/sinks/redis_cluster.py).
        self._cluster = ClusterWriter(redis) if isinstance(redis, RedisCluster) else None
        # WAIT after each batch (redis.wait_replicas): acknowledged once replicated.
        self._wait_replicas = settings.wait_replicas
        self._wait_resp = pack(
            [(b"WAIT", b"%d" % settings.wait_replicas, b"%d" % (settings.wait_timeout_s * 1000))]
        )

    def room_key(self, room: str) -> str:
        return keys.room_key(self._settings, room)

    def _room(self, room: str) -> tuple[tuple[bytes, ...], bytes, bytes]:
        cached = self._rooms.get(room)
        if cached is None:
            head = _xadd_head(self.room_key(room), self._settings.room_maxlen)
            cached = (head, _resp_head(head, 4), _bulk(room.encode("utf-8", "replace")))
            self._rooms.put(room, cached)
        return cached

    def encode(self, batch: Sequence[Entry]) -> tuple[bytes, int]:
        """The batch's XADDs in RESP, and how many commands (replies) that is."""
        keyed = self.keyed(batch)
        return b"".join(resp for _, resp in keyed), len(keyed)

    def keyed(self, batch: Sequence[Entry]) -> list[Command]:
        """The batch's XADDs one by one in RESP, each with its key (a Cluster routes by key;
        one node takes them all in one write)."""
        out: list[Command] = []
        events_key, dlq_key = self._events_head[1], self._dlq_head[1]
        for entry in batch:
            if isinstance(entry, Event):
                head, room_resp, room = self._room(entry.room)
                fields = b"".join(
                    (_KIND, _bulk(entry.kind.encode()), _ROOM, room, _ID,
                     _bulk(entry.id.encode()), _EVENT, _bulk(entry.json_bytes()))
                )  # fmt: skip
                out += [(events_key, self._events_resp + fields), (head[1], room_resp + fields)]
            else:
                room = _bulk(entry.room.encode("utf-8", "replace"))
                letter = (self._dlq_resp, _REASON, _bulk(entry.reason.encode()), _ROOM, room)
                out.append((dlq_key, b"".join((*letter, _ENTRY, _bulk(entry.json_bytes())))))
        return out

    def commands(self, batch: Sequence[Entry]) -> list[tuple[bytes, ...]]:
        """The same XADDs as argument tuples (what `encode` packs; the benchmark's
        baselines send these through redis-py)."""
        out: list[tuple[bytes, ...]] = []
        for entry in batch:
            if isinstance(entry, Event):
                room_head = self._room(entry.room)[0]
                room = entry.room.encode("utf-8", "replace")
                fields = (
                    b"kind", entry.kind.encode(), b"room", room, b"id", entry.id.encode(),
                    b"event", entry.json_bytes(),
                )  # fmt: skip
                out += [(*self._events_head, *fields), (*room_head, *fields)]
            else:
                room = entry.room.encode("utf-8", "replace")
                letter = (b"reason", entry.reason.encode(), b"room", room, b"entry")
                out.append((*self._dlq_head, *letter, entry.json_bytes()))
        return out

    async def write(self, batch: Sequence[Entry]) -> list[Rejected]:
        if not batch:
            return []
        if self._cluster is not None:
            return await self._write_cluster(batch, self._cluster)
        payload, commands = self.encode(batch)
        if self._wait_replicas:
            payload, commands = payload + self._wait_resp, commands + 1
        try:
            replies = await self._pipelined(payload, commands)
        except (RedisError, OSError) as exc:
            reason = redis_client.describe_redis_error(exc, tls=self._settings.tls)
            raise SinkError(f"{len(batch)} entries not written: {reason}") from exc
        if self._wait_replicas:
            await self._check_replicated(len(batch), replies.pop())
        return _rejected(batch, replies)

    async def _write_cluster(
        self, batch: Sequence[Entry], cluster: ClusterWriter
    ) -> list[Rejected]:
        try:
            replies = await cluster.send(self.keyed(batch))
        except (RedisError, OSError) as exc:
            reason = redis_client.describe_redis_error(exc, tls=self._settings.tls)
            raise SinkError(f"{len(batch)} entries not written: {reason}") from exc
        return _rejected(batch, replies)

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
