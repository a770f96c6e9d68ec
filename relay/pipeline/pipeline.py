"""The pipeline: stamp accepted events, buffer them (bounded), write batches to the sinks.

Delivery is at-least-once from `submit()` returning until every sink acknowledged: a
batch is written to each sink in order and retried, whole and unchanged, with capped
jittered backoff until it is acknowledged, so per-room order holds across outages and a
partly written batch is written again with the same ids. An event leaves the buffer (and
`relay_buffer_events`) only when every sink acknowledged it; a full buffer makes
`submit()` wait, which is the backpressure. Every drop is counted with a reason on
`relay_events_dropped_total`:

- `shutdown`: submitted after `drain()` began, or still waiting for room when it began;
- `shutdown_timeout`: accepted but not acknowledged when the drain deadline passed;
- `dead_letter_rejected`: a dead letter a sink refused for good;
- `lease_lost`: an entry of a room whose lease this process could not renew in time
  (`fence_room`), or past the seq block its lease reserved;
- `journal_shed`, `journal_full`, `journal_write_failed`: the on-disk journal could not
  take the event (relay.journal), which is then not accepted.

With a journal, an entry is appended to it before `submit()` returns and retired once
every sink acknowledged it, so a process killed with entries buffered writes them at its
next start: they are buffered first, ahead of anything new, with their id, seq and epoch.

An event a sink refuses for good (a key of the wrong type) becomes a `write_rejected`
dead letter holding the whole event. See docs/delivery.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import structlog
from prometheus_client import Counter

from relay import metrics
from relay.backoff import backoff_s
from relay.config import PipelineSettings
from relay.contract.event import DeadLetter, Entry, Event
from relay.contract.sink import Sink
from relay.errors import SinkError
from relay.journal import Journal
from relay.metrics import (
    BUFFER_CAPACITY_EVENTS,
    BUFFER_EVENTS,
    EVENT_LATENCY,
    EVENTS_RECEIVED,
    EVENTS_WRITTEN,
    SINK_WRITE_DURATION,
    SINK_WRITE_FAILURES,
)
from relay.pipeline.ids import IdMinter
from relay.pipeline.slots import Slots

log = structlog.get_logger(__name__)

# `relay_buffer_events` is read at scrape time from the live pipelines instead of being
# moved on every event (a locked gauge update per event is a visible share of its cost).
_LIVE: weakref.WeakSet[Pipeline] = weakref.WeakSet()
BUFFER_EVENTS.set_function(lambda: float(sum(p.buffered for p in list(_LIVE))))
BUFFER_CAPACITY_EVENTS.set_function(lambda: float(sum(p.capacity for p in list(_LIVE))))


class Pipeline:
    def __init__(
        self,
        settings: PipelineSettings,
        sinks: Sequence[Sink],
        *,
        clock: Callable[[], float] = time.time,
        minter: IdMinter | None = None,
        journal: Journal | None = None,
    ) -> None:
        if not sinks:
            raise ValueError("a pipeline needs at least one sink")
        self._settings = settings
        self._sinks = tuple(sinks)
        self._clock = clock
        self._ids = minter if minter is not None else IdMinter()
        self._seqs: dict[str, int] = {}
        # Scale-out: the epoch of this process's lease per room, and the rooms whose lease
        # could not be renewed in time (their entries are refused: `lease_lost`).
        self._epochs: dict[str, int] = {}
        self._seq_limits: dict[str, int] = {}  # the last seq of the lease's reserved block
        self._fenced: set[str] = set()
        self.accepted = 0  # events accepted since start (the shutdown summary reports it)
        self._slots = Slots(settings.buffer_max_events)
        self._pending: deque[Entry] = deque()
        # The batch being written, kept until every sink acknowledged it, so a restarted
        # run() writes it first; `_sinks_done` sinks have it already.
        self._batch: list[Entry] = []
        self._sinks_done = 0
        # Entries of the batch a sink refused for good: (sink name, entry, error).
        self._rejected: list[tuple[str, Entry, str]] = []
        self._wake = asyncio.Event()
        # Entries ever buffered, and of those, the ones that left it acknowledged (in
        # order: the buffer is FIFO): what `flushed()` waits on.
        self._appended = 0
        self._acked = 0
        self._progress = asyncio.Event()
        self._wake_at = 1  # pending entries that wake the flusher (batch size while lingering)
        self._running = False
        self._closing = False
        self._deadline: float | None = None  # loop time; set by drain()
        self._scope: asyncio.Timeout | None = None  # the write or backoff sleep in progress
        self._finished = asyncio.Event()
        self._unwritten = 0
        self._last_error: str | None = None
        self._failing_since: float | None = None  # for the recovery log line
        self._written = {sink.name: EVENTS_WRITTEN.labels(sink=sink.name) for sink in sinks}
        self._received: dict[tuple[str, str], Counter] = {}
        self._journal = journal
        self._durable = journal is not None and journal.fsync_always
        self.replayed = self._replay(journal) if journal is not None else 0
        _LIVE.add(self)

    def _replay(self, journal: Journal) -> int:
        """Buffer what the journal kept from the last run, oldest first. Its entries take
        buffer slots (beyond the capacity if need be: new submits then wait), and a room
        without a lease goes on from its highest seq (a leased room's seq comes from its
        lease)."""
        replayed = journal.take_replayed()
        self._pending.extend(replayed)
        self._appended += len(replayed)
        self._slots.take(len(replayed))
        for entry in replayed:
            if isinstance(entry, Event) and entry.epoch is None:
                self._seqs[entry.room] = max(self._seqs.get(entry.room, 0), entry.seq)
        return len(replayed)

    # -- intake ----------------------------------------------------------------------

    async def submit(self, entry: Entry) -> None:
        """Buffer an entry, an event stamped with its `id` and `seq` (and encoded once);
        waits while the buffer is full.

        After `drain()` began the entry is dropped (reason `shutdown`), not raised: the
        callers are decode stages of rooms being left, which have nowhere else to put it."""
        if self._fenced and entry.room in self._fenced:
            metrics.dropped("lease_lost")
            return
        if (journal := self._journal) is not None:
            if journal.blocks and not self._closing:
                await journal.wait_for_space()  # full_policy "block" ("shed" refuses)
            kind = entry.kind if isinstance(entry, Event) else None
            if (refusal := journal.refusal(kind)) is not None:
                metrics.dropped(refusal)
                return
        # try_acquire first: the common case then costs no coroutine.
        if not self._slots.try_acquire() and (self._closing or not await self._slots.acquire()):
            metrics.dropped("shutdown")
            return
        if isinstance(entry, DeadLetter):
            await self._accepted(entry)
            return
        # Stamped only once a slot is ours (no await from here on): a cancelled or refused
        # submit never burns a seq, so a room's seqs have no gaps.
        seq = self._seqs.get(entry.room, 0) + 1
        epoch = None
        # Fenced while waiting for a slot, or past the lease's seq block: refused.
        if (
            self._epochs
            and (epoch := self._epochs.get(entry.room)) is not None
            and (entry.room in self._fenced or seq > self._seq_limits[entry.room])
        ):
            self._slots.release(1)
            metrics.dropped("lease_lost")
            return
        parts = entry.encoded_parts()
        if not await self._accepted(
            entry.stamped(self._ids.mint(entry, *parts), seq, parts, epoch), seq
        ):
            return
        self.accepted += 1
        received = self._received.get((entry.protocol, entry.kind))
        if received is None:  # labels() takes a lock and builds a key: once per pair
            received = self._received[(entry.protocol, entry.kind)] = EVENTS_RECEIVED.labels(
                entry.protocol, entry.kind
            )
        received.inc()

    def forget_room(self, room: str) -> None:
        """Drop a left room's counters. If the room is observed again its seq restarts at
        1 (after an `observer.joined` event), unless `own_room` seeds it."""
        self._seqs.pop(room, None)
        self._epochs.pop(room, None)
        self._seq_limits.pop(room, None)
        self._fenced.discard(room)
        self._ids.forget_room(room)

    def own_room(self, room: str, epoch: int, first_seq: int, last_seq: int) -> None:
        """This process won `room`'s lease with `epoch`: its events carry the epoch and
        their seq goes on from `first_seq` (never below what it already stamped), up to
        `last_seq` (the lease's reserved block; `extend_room` moves it)."""
        self._epochs[room] = epoch
        self._seqs[room] = max(self._seqs.get(room, 0), first_seq - 1)
        self._seq_limits[room] = last_seq
        self._fenced.discard(room)

    def extend_room(self, room: str, last_seq: int) -> None:
        if room in self._seq_limits:
            self._seq_limits[room] = max(self._seq_limits[room], last_seq)

    def fence_room(self, room: str) -> None:
        """The lease on `room` may expire: refuse its entries from now on (`lease_lost`)."""
        self._fenced.add(room)

    def last_seq(self, room: str) -> int:
        return self._seqs.get(room, 0)

    @property
    def rooms_tracked(self) -> int:
        """Rooms with a seq counter here (until `forget_room`)."""
        return len(self._seqs)

    async def _accepted(self, entry: Entry, seq: int = 0) -> bool:
        """Journal and buffer a submitted entry that holds a slot (an event's `seq` is
        its room's from now on); with fsync "always", until its append is fsynced.
        False if the journal refused it: the slot is given back, the seq not taken."""
        mark = self._accept(entry)
        if mark is None:
            self._slots.release(1)
            return False
        if seq:
            self._seqs[entry.room] = seq
        if self._durable and self._journal is not None:
            await self._journal.durable(mark)
        return True

    def _accept(self, entry: Entry) -> int | None:
        """Buffer `entry` (journaled first, if there is a journal); the journal's mark,
        or None (counted) when its append failed and the entry is not buffered."""
        mark: int | None = 0
        if self._journal is not None and (mark := self._journal.append(entry)) is None:
            metrics.dropped("journal_write_failed")
            return None
        self._pending.append(entry)
        self._appended += 1
        if len(self._pending) >= self._wake_at:
            self._wake.set()
        return mark

    # -- readiness -------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Entries accepted and not yet acknowledged by every sink."""
        return len(self._pending) + len(self._batch)

    @property
    def capacity(self) -> int:
        """Entries the buffer holds at most (`buffer_max_events`)."""
        return self._slots.capacity

    @property
    def healthy(self) -> bool:
        """False from a failed write until the next acknowledged one."""
        return self._last_error is None

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def accepting(self) -> bool:
        return not self._closing

    # -- the flush loop --------------------------------------------------------------

    async def run(self) -> None:
        """Write batches until `drain()` finished; returns normally after a drain."""
        if self._running:
            if not self._closing:
                raise RuntimeError("Pipeline.run() is already running")
            await self._finished.wait()  # drain() runs the loop itself; nothing to add
            return
        if self._finished.is_set():
            return
        self._running = True
        try:
            async with self._journal.running() if self._journal else contextlib.nullcontext():
                while (batch := await self._next_batch()) is not None:
                    if not await self._deliver(batch):
                        break
        finally:
            self._running = False
            if self._closing:
                self._finish()

    async def _next_batch(self) -> list[Entry] | None:
        """The unacknowledged batch, else the next one; None when draining and done."""
        if self._batch:
            return self._batch
        while not self._pending:
            if self._closing:
                return None
            self._wake_at = 1
            self._wake.clear()
            await self._wake.wait()
        limit = self._settings.batch_max_events
        if len(self._pending) < limit and self._settings.flush_interval_s and not self._closing:
            await self._linger(limit)
        take = min(limit, len(self._pending))
        self._batch = [self._pending.popleft() for _ in range(take)]
        return self._batch

    async def _linger(self, limit: int) -> None:
        """Wait up to flush_interval_s for a full batch (or for drain())."""
        self._wake_at = limit
        self._wake.clear()
        try:
            async with asyncio.timeout(self._settings.flush_interval_s):
                await self._wake.wait()
        except TimeoutError:
            pass
        finally:
            self._wake_at = 1

    async def _deliver(self, batch: list[Entry]) -> bool:
        """Write `batch` to every sink in order; False if the drain deadline cut it off."""
        while self._sinks_done < len(self._sinks):
            sink = self._sinks[self._sinks_done]
            if not await self._write_until_acked(sink, batch):
                return False
            self._sinks_done += 1
        self._acknowledged(batch)
        self._dead_letter_rejected()
        return True

    async def _write(self, sink: Sink, batch: list[Entry]) -> None:
        rejected = await sink.write(batch)
        self._rejected += [(sink.name, entry, error) for entry, error in rejected]
        refused = sum(1 for entry, _ in rejected if isinstance(entry, Event))
        self._written[sink.name].inc(sum(1 for e in batch if isinstance(e, Event)) - refused)

    def _dead_letter_rejected(self) -> None:
        """What a sink refused for good goes to the DLQ (the whole event: nothing else
        holds it); a refused dead letter can only be counted. One log line a batch."""
        if self._rejected:
            sink, _, error = self._rejected[0]
            rooms = sorted({entry.room for _, entry, _ in self._rejected})
            count = len(self._rejected)
            log.error(
                "sink_rejected_entries", sink=sink, count=count, rooms=rooms[:10], error=error
            )
        for sink, entry, error in self._rejected:
            if isinstance(entry, DeadLetter):
                metrics.dropped("dead_letter_rejected")
                continue
            detail = {"sink": sink, "error": error, "event": entry.to_dict()}
            # The event's buffer slot passes to its dead letter (kept by _acknowledged), so
            # it is taken also while draining, and the drain writes it too.
            if (
                self._accept(DeadLetter(entry.room, "write_rejected", self._clock(), detail))
                is None
            ):
                self._slots.release(1)
        self._rejected = []

    async def _write_until_acked(self, sink: Sink, batch: list[Entry]) -> bool:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                if not await self._until_deadline(self._write(sink, batch)):
                    return False
            except Exception as exc:  # SinkError; anything else is a sink bug, retried too
                self._failed(sink, exc, attempt, len(batch))
                delay = backoff_s(
                    attempt, self._settings.retry_initial_s, self._settings.retry_max_s
                )
                attempt += 1
                if not await self._until_deadline(asyncio.sleep(delay)):
                    return False
                continue
            SINK_WRITE_DURATION.labels(sink=sink.name).observe(time.perf_counter() - started)
            if self._last_error is not None:
                self._recovered(sink, attempt)
            return True

    async def _until_deadline(self, step: Coroutine[Any, Any, None]) -> bool:
        """Await `step`; False if the drain deadline passed first (the step is cancelled).

        The scope is kept so that drain() can move the deadline of a step in progress."""
        scope = asyncio.timeout_at(self._deadline)
        try:
            async with scope:
                self._scope = scope
                await step
        except TimeoutError:
            if scope.expired():
                return False
            raise
        finally:
            self._scope = None
        return True

    def _acknowledged(self, batch: list[Entry]) -> None:
        now = self._clock()
        observe = EVENT_LATENCY.observe
        refused = {id(entry) for _, entry, _ in self._rejected}
        kept = sum(1 for _, entry, _ in self._rejected if isinstance(entry, Event))
        for entry in batch:
            if refused and id(entry) in refused:
                continue  # not written: no latency, no dead letter written
            if isinstance(entry, Event):
                observe(now - entry.received_at)
            else:
                metrics.dead_lettered(entry.reason)
        self._batch = []
        self._sinks_done = 0
        if self._journal is not None:
            self._journal.acked(len(batch))
        self._slots.release(len(batch) - kept)  # a rejected event's slot goes to its letter
        self._acked += len(batch)
        self._progressed()

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def flushed(self, timeout_s: float) -> bool:
        """Wait until every entry accepted so far is acknowledged by every sink (a room
        handed to another owner: its last events are written before the lease goes).
        False if `timeout_s` passed first, or a drain ended with entries unwritten."""
        target = self._appended
        try:
            async with asyncio.timeout(timeout_s):
                while self._acked < target:
                    if self._finished.is_set():
                        return False
                    await self._progress.wait()
        except TimeoutError:
            return False
        return True

    def _failed(self, sink: Sink, exc: Exception, attempt: int, size: int) -> None:
        SINK_WRITE_FAILURES.labels(sink=sink.name).inc()
        if self._failing_since is None:
            self._failing_since = self._clock()
        self._last_error = f"{sink.name}: {exc}"
        fields = {"sink": sink.name, "attempt": attempt + 1, "batch": size, "error": str(exc)}
        if not isinstance(exc, SinkError):
            log.error("sink_write_bug", buffered=self.buffered, exc_info=exc, **fields)
        else:
            log.warning("sink_write_failed", buffered=self.buffered, **fields)

    def _recovered(self, sink: Sink, attempts: int) -> None:
        down_s = self._clock() - (self._failing_since or self._clock())
        log.info("sink_write_recovered", sink=sink.name, attempts=attempts + 1, down_s=down_s)
        self._last_error = None
        self._failing_since = None

    # -- shutdown --------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> int:
        """Stop accepting, flush within `timeout_s`, return the entries not written.

        Those are counted as dropped (`shutdown_timeout`). If run() is not running, the
        flush loop runs here. Idempotent: a second call waits for the first."""
        if not self._closing:
            self._closing = True
            self._deadline = asyncio.get_running_loop().time() + timeout_s
            self._slots.close()  # submitters waiting for room give up (reason `shutdown`)
            self._wake.set()  # end the linger or the idle wait
            if self._scope is not None:
                self._scope.reschedule(self._deadline)
            log.info("pipeline_draining", buffered=self.buffered, timeout_s=timeout_s)
        if not self._running and not self._finished.is_set():
            await self.run()
        await self._finished.wait()
        return self._unwritten

    def _finish(self) -> None:
        if self._finished.is_set():
            return
        left = len(self._batch) + len(self._pending)
        self._batch = []
        self._pending.clear()
        self._unwritten = left
        if left and self._journal is not None:  # not lost: the next start writes them
            log.error("pipeline_drain_timeout", unwritten=left, journaled=True,
                      last_error=self._last_error)  # fmt: skip
        elif left:
            metrics.dropped("shutdown_timeout", left)
            log.error("pipeline_drain_timeout", unwritten=left, last_error=self._last_error)
        else:
            log.info("pipeline_drained")
        self._finished.set()
        self._progressed()
