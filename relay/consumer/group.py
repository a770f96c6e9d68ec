"""`StreamConsumer`: read a relay stream with a consumer group, at least once.

For each entry, in stream order: parse the event (a bad entry is reported once and
acknowledged), skip it if its `id` was handled within the dedupe window (or the `seen`
hook says the store has it), else await the handler. Entries whose handler returned are
acknowledged, one XACK per batch read. A handler that raises leaves its entry pending:
the consumer backs off and reads its own pending entries again from the first, so the
entry is retried, in order, before anything new. After a restart under the same name it
reads its pending entries first too. Every `claim_every_s` it takes over (XAUTOCLAIM)
the entries another consumer of the group was given and has not acknowledged for
`claim_idle_ms`: what a dead consumer left.

Exactly once is the store's part: a crash after the handler's commit and before the
XACK delivers the entry again (to this consumer after a restart, or to another after
`claim_idle_ms`), and the dedupe window lives in memory. A handler that writes with the
event `id` as a unique key (insert-or-ignore, upsert) makes that delivery harmless.
See docs/consumer.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from relay.backoff import backoff_s
from relay.consumer.entries import (
    BadEntry,
    BadEntryError,
    RecentIds,
    StreamEvent,
    decode_id,
    parse_entry,
)

log = structlog.get_logger(__name__)

Handler = Callable[[StreamEvent], Awaitable[None]]
SeenHook = Callable[[StreamEvent], Awaitable[bool]]
BadEntryHook = Callable[[BadEntry], None]
BeforeAck = Callable[[], Awaitable[None]]
RawEntry = tuple[bytes | str, dict[bytes, bytes] | None]

OWN_PENDING = "0"  # XREADGROUP from here: this consumer's delivered, unacknowledged entries
NEW = ">"  # XREADGROUP from here: entries never delivered to the group
ATTEMPTS_MAX_TRACKED = 10_000  # failing entries whose attempts are counted (bounded memory)


@dataclasses.dataclass
class ConsumerStats:
    handled: int = 0  # the handler returned
    duplicates: int = 0  # skipped: id within the dedupe window, or the seen hook said so
    bad: int = 0  # reported to on_bad_entry (or logged) and acknowledged
    failures: int = 0  # the handler raised; the entry stayed pending
    claimed: int = 0  # taken over from another consumer with XAUTOCLAIM
    acked: int = 0


class _HandlerFailed(Exception):
    """The handler raised: stop the batch here, back off, read own pending again."""


class StreamConsumer:
    """One consumer of a group on one stream; `run()` until `stop()`.

    `stream`: a relay stream key (`relay.keys.events_key(settings)` or a room's key).
    `group_start`: where a group created here starts: "0" (what the stream holds) or "$"
    (only entries added from now). `max_attempts`: after this many handler failures for
    one entry it is reported as a bad entry (`handler_failed`) and acknowledged; None
    retries for ever (the default: a store that is down must not lose events).
    `before_ack`: awaited after the handlers of a batch and before its XACK, for a store
    that commits once per batch (the handler writes, `before_ack` commits); if it raises,
    nothing of the batch is acknowledged and all of it is delivered again.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        group: str,
        consumer: str,
        handler: Handler,
        *,
        dedupe_window: int = 10_000,
        seen: SeenHook | None = None,
        claim_idle_ms: int = 60_000,
        claim_every_s: float = 10.0,
        batch: int = 100,
        block_ms: int = 1000,
        group_start: Literal["0", "$"] = "0",
        max_attempts: int | None = None,
        on_bad_entry: BadEntryHook | None = None,
        before_ack: BeforeAck | None = None,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
    ) -> None:
        if batch <= 0 or block_ms <= 0 or claim_idle_ms <= 0 or claim_every_s <= 0:
            raise ValueError("batch, block_ms, claim_idle_ms and claim_every_s must be > 0")
        if max_attempts is not None and max_attempts <= 0:
            raise ValueError(f"max_attempts must be > 0 or None, got {max_attempts}")
        self.stream, self.group, self.consumer = stream, group, consumer
        self.batch, self.block_ms = batch, block_ms
        self.claim_idle_ms, self.claim_every_s = claim_idle_ms, claim_every_s
        self.stats = ConsumerStats()
        self._redis = redis
        self._handler = handler
        self._seen = seen
        self._recent = RecentIds(dedupe_window)
        self._group_start = group_start
        self._max_attempts = max_attempts
        self._on_bad_entry = on_bad_entry
        self._before_ack = before_ack
        self._retry = (retry_initial_s, retry_max_s)
        self._cursor = OWN_PENDING
        self._claim_cursor = "0-0"
        self._next_claim_at = 0.0  # due once the own pending entries are read
        self._attempts: dict[str, int] = {}
        self._errors_in_row = 0
        self._group_ready = False
        self._stop = asyncio.Event()

    async def ensure_group(self) -> bool:
        """Create the group (and the stream) if missing; True if it was created here."""
        try:
            await self._redis.xgroup_create(
                self.stream, self.group, id=self._group_start, mkstream=True
            )
        except ResponseError as exc:
            if str(exc).startswith("BUSYGROUP"):
                return False
            raise
        log.info("consumer_group_created", stream=self.stream, group=self.group)
        return True

    def stop(self) -> None:
        """Ask `run()` to return: after the entry in hand, at once when it waits for entries."""
        self._stop.set()

    async def run(self) -> None:
        """Consume until `stop()`. Redis errors and handler failures are retried with
        capped backoff and logged; they never end the loop."""
        while not self._stop.is_set():
            try:
                if not self._group_ready:
                    await self.ensure_group()
                    self._group_ready = True
                await self.step()
            except _HandlerFailed:
                await self._pause()
                continue
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
                await self._pause()
                continue
            if self._errors_in_row:
                log.info("consumer_recovered", stream=self.stream, after=self._errors_in_row)
                self._errors_in_row = 0

    async def step(self) -> int:
        """One round: take over idle entries if due, else read one batch (own pending
        first, then new); handle it. Returns the number of entries read."""
        entries: Sequence[RawEntry] = []
        if self._cursor == NEW and time.monotonic() >= self._next_claim_at:
            entries = await self._claim()
        if not entries:
            entries = await self._read()
        await self._process(entries)
        return len(entries)

    async def _read(self) -> Sequence[RawEntry]:
        cursor = self._cursor
        block = self.block_ms if cursor == NEW else None  # history reads never block
        read = self._redis.xreadgroup(
            self.group, self.consumer, {self.stream: cursor}, count=self.batch, block=block
        )
        reply: Any = await self._unless_stopped(read) if block else await read
        entries: Sequence[RawEntry] = reply[0][1] if reply else []
        if cursor != NEW:
            # Page through the own pending entries; an empty page means they are all read.
            self._cursor = decode_id(entries[-1][0]) if entries else NEW
        return entries

    async def _unless_stopped(self, read: Awaitable[Any]) -> Any:
        """The blocking read's reply, or None if stop() came first. Entries Redis handed
        over to a read cancelled this way stay pending for this consumer: read first on
        its next run, or taken over by another."""
        reading = asyncio.ensure_future(read)
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not reading.done():
                reading.cancel()
                await asyncio.wait({reading})  # let it unwind (it never raises here)
        if reading.cancelled():
            return None
        return reading.result()

    async def _claim(self) -> Sequence[RawEntry]:
        reply: Any = await self._redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            self.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.batch,
        )
        self._claim_cursor = decode_id(reply[0])
        # A long pending list is scanned batch by batch, then again after claim_every_s.
        wait_s = self.claim_every_s if self._claim_cursor == "0-0" else 0.0
        self._next_claim_at = time.monotonic() + wait_s
        entries: Sequence[RawEntry] = reply[1]
        # Redis 7 drops pending entries that were trimmed away, and names them.
        for deleted in reply[2] if len(reply) > 2 else []:
            self._report_bad(BadEntry(decode_id(deleted), "deleted", {}))
        if entries:
            self.stats.claimed += len(entries)
            log.info("consumer_claimed", stream=self.stream, entries=len(entries))
        return entries

    async def _process(self, entries: Sequence[RawEntry]) -> None:
        """Handle a batch in order; then `before_ack`, then one XACK for what is done.

        On a handler failure the entries before it are still committed and acknowledged."""
        done: list[str] = []  # entry ids that may be acknowledged
        handled: set[str] = set()  # event ids the handler took in this batch
        failure: _HandlerFailed | None = None
        try:
            for raw_id, fields in entries:
                if self._stop.is_set():
                    self._cursor = OWN_PENDING  # the rest stays pending for the next run
                    break
                entry_id = decode_id(raw_id)
                await self._handle(entry_id, fields, handled)
                done.append(entry_id)
        except _HandlerFailed as exc:
            failure = exc
        if done:
            await self._commit(handled)
            acked: Any = await self._redis.xack(self.stream, self.group, *done)
            self.stats.acked += int(acked)
        if failure is not None:
            raise failure

    async def _commit(self, handled: set[str]) -> None:
        if self._before_ack is not None:
            try:
                await self._before_ack()
            except Exception as exc:  # nothing of the batch is acknowledged: all of it again
                self._cursor = OWN_PENDING
                error = f"{type(exc).__name__}: {exc}"
                log.warning("consumer_before_ack_failed", stream=self.stream, error=error)
                raise _HandlerFailed("before_ack") from exc
        # Only now are they stored: remembered earlier, a failed commit would skip them.
        for event_id in handled:
            self._recent.add(event_id)
        self.stats.handled += len(handled)

    async def _handle(
        self, entry_id: str, fields: dict[bytes, bytes] | None, handled: set[str]
    ) -> None:
        """Returns once the entry may be acknowledged; raises _HandlerFailed if not."""
        try:
            event = parse_entry(entry_id, fields)
        except BadEntryError as exc:
            self._report_bad(BadEntry(entry_id, exc.reason, dict(fields or {})))
            return
        # `handled`: ids of this batch, remembered in the window only once committed.
        if (self._recent.size and event.id in handled) or event.id in self._recent:
            self.stats.duplicates += 1
            return
        try:
            if self._seen is not None and await self._seen(event):
                self.stats.duplicates += 1
                self._recent.add(event.id)
                return
            await self._handler(event)
        except Exception as exc:
            if self._give_up(event, fields, exc):
                return
            raise _HandlerFailed(entry_id) from exc
        self._attempts.pop(entry_id, None)
        handled.add(event.id)

    def _give_up(
        self, event: StreamEvent, fields: dict[bytes, bytes] | None, exc: Exception
    ) -> bool:
        """Count a handler failure; True once the entry has had `max_attempts`."""
        self.stats.failures += 1
        self._cursor = OWN_PENDING  # retry from the first pending entry, keeping the order
        if len(self._attempts) >= ATTEMPTS_MAX_TRACKED:
            self._attempts.clear()
        attempt = self._attempts[event.entry_id] = self._attempts.get(event.entry_id, 0) + 1
        log.warning(
            "consumer_handler_failed",
            stream=self.stream,
            entry_id=event.entry_id,
            event_id=event.id,
            attempt=attempt,
            error=f"{type(exc).__name__}: {exc}",
        )
        if self._max_attempts is None or attempt < self._max_attempts:
            return False
        self._attempts.pop(event.entry_id, None)
        self._report_bad(BadEntry(event.entry_id, "handler_failed", dict(fields or {})))
        return True

    def _report_bad(self, bad: BadEntry) -> None:
        self.stats.bad += 1
        if self._on_bad_entry is None:
            log.warning(
                "consumer_bad_entry", stream=self.stream, entry_id=bad.entry_id, reason=bad.reason
            )
            return
        try:
            self._on_bad_entry(bad)
        except Exception as exc:  # the report must not stop the stream
            log.error("consumer_bad_entry_hook_failed", entry_id=bad.entry_id, error=repr(exc))

    def _redis_failed(self, exc: Exception) -> None:
        if isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
            self._group_ready = False  # the stream or the group was deleted: create again
        log.warning(
            "consumer_redis_error",
            stream=self.stream,
            attempt=self._errors_in_row + 1,
            error=f"{type(exc).__name__}: {exc}",
        )

    async def _pause(self) -> None:
        delay_s = backoff_s(self._errors_in_row, *self._retry)
        self._errors_in_row += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay_s)
