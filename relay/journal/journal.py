"""The on-disk journal: a write-ahead log of the pipeline's buffer.

Every entry the pipeline accepts is appended (one `os.write`, so a kill -9 right after
loses nothing: the kernel has it) before `submit()` returns; the pipeline acknowledges
entries in the order it accepted them, so what is done is a prefix, and the ledger
holds one number: the index of the first record not yet acknowledged. The directory:

    LOCK                      flock'ed while a relay uses the journal
    ledger                    "<index>\\n", replaced atomically (write, fsync, rename)
    00000000000000000000.seg  records (relay.journal.records), named by the first's index

A background task (`run`) fsyncs the appends (every `fsync_interval_ms`, or as soon as
one is waiting with fsync "always"), writes the ledger once acknowledgements moved, and
only then deletes the segments it retires. At start, the records from the ledger's
index on are read back (`take_replayed`), a torn tail (cut short, bad checksum) is
skipped, counted and cut off, and new records go to a fresh segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from relay.config import JournalSettings
from relay.contract.event import Entry
from relay.contract.kinds import DropReason
from relay.errors import StartError
from relay.journal.records import decode_body, encode_record, scan
from relay.metrics import (
    JOURNAL_BYTES,
    JOURNAL_CAPACITY_BYTES,
    JOURNAL_REPLAYED,
    JOURNAL_SYNC_DURATION,
    JOURNAL_TORN,
)

log = structlog.get_logger(__name__)

_SUFFIX = ".seg"
_FREE_SPACE_EVERY_S = 1.0  # how often the disk's free space is read (a statvfs)
_LOG_EVERY_S = 10.0
# Free space left out of the capacity: the ledger, block rounding, a short burst between
# two reads of the free space: the policy refuses before the disk does (ENOSPC).
_DISK_RESERVE_BYTES = 256 * 1024  # one log line at most this often per kind of refusal


class JournalError(StartError):
    """The journal's directory cannot be used; the message names journal.path."""


@dataclass
class _Segment:
    path: Path
    first: int  # the index of its first record
    count: int = 0  # records in it
    acked: int = 0  # of those, acknowledged (always its first ones)
    size: int = 0  # bytes

    @property
    def done(self) -> bool:
        return self.acked == self.count


class Journal:
    def __init__(self, settings: JournalSettings, directory: Path) -> None:
        """Open (create) the journal in `directory` and read back what it holds."""
        self._settings = settings
        self._dir = directory
        self._always = settings.fsync == "always"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock = _lock(directory)
            ledger = _read_ledger(directory)
            self._segments, self._replayed = self._recover(ledger)
            self._bytes = sum(segment.size for segment in self._segments)
            self._current = self._new_segment(self._next_index(ledger))
            self._capacity = self._capacity_with(_free_bytes(directory))
        except OSError as exc:
            raise JournalError(f"journal.path {directory}: {exc.strerror or exc}") from exc
        self._appended = 0  # records appended by this process: the marks `durable` waits on
        self._synced = 0
        self._acks = 0  # acknowledged, not yet applied to the segments (the next round does)
        self._ledger = self._ledger_index()
        self._closing_fds: list[int] = []  # rolled segments, fsynced and closed next round
        self._dir_dirty = True  # a segment was created: the directory needs an fsync
        self._dirty = asyncio.Event()  # an append since the last round
        self._round_done = asyncio.Event()
        self._space = asyncio.Event()
        self._capacity_read_at = time.monotonic()
        self._logged_at: dict[str, float] = {}
        self._closed = False
        self._stopping = False
        JOURNAL_BYTES.set_function(lambda: float(self._bytes))
        JOURNAL_CAPACITY_BYTES.set_function(lambda: float(self._capacity))

    # -- start: what the last run left -------------------------------------------------

    def _recover(self, ledger: int) -> tuple[deque[_Segment], list[Entry]]:
        segments: deque[_Segment] = deque()
        replayed: list[Entry] = []
        torn = 0
        for path, first, bodies, good, size in _segment_files(self._dir):
            if good < size:  # a torn tail: cut off, so appends never follow garbage
                torn += 1
                with open(path, "r+b") as file:
                    file.truncate(good)
            segment = _Segment(path, first, len(bodies), 0, good)
            segment.acked = min(max(ledger - first, 0), segment.count)
            if segment.done:
                path.unlink()  # retired by a durable ledger already
                continue
            replayed += [decode_body(body) for body in bodies[segment.acked :]]
            segments.append(segment)
        if torn:
            JOURNAL_TORN.inc(torn)
            log.warning("journal_torn_records", segments=torn, path=str(self._dir))
        if replayed:
            JOURNAL_REPLAYED.inc(len(replayed))
            log.info("journal_replay", entries=len(replayed), path=str(self._dir))
        return segments, replayed

    def take_replayed(self) -> list[Entry]:
        """The entries a previous run accepted and no sink acknowledged, oldest first
        (once: the pipeline buffers them ahead of anything new)."""
        replayed, self._replayed = self._replayed, []
        return replayed

    def _next_index(self, ledger: int) -> int:
        if self._segments:
            last = self._segments[-1]
            return last.first + last.count
        return ledger

    def _new_segment(self, first: int) -> _Segment:
        segment = _Segment(self._dir / f"{first:020d}{_SUFFIX}", first)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(segment.path, flags, 0o640)
        self._segments.append(segment)
        return segment

    # -- intake (the event loop's thread) -----------------------------------------------

    def refusal(self, kind: str | None) -> DropReason | None:
        """Why an event of `kind` (None: a dead letter) cannot be journaled now (None:
        it can). With full_policy "block", a full journal waits (`wait_for_space`)."""
        settings = self._settings
        if self._bytes >= self._capacity:
            return None if settings.full_policy == "block" else "journal_full"
        if kind in settings.shed_kinds and self._bytes >= settings.shed_at * self._capacity:
            return "journal_shed"
        return None

    @property
    def full(self) -> bool:
        return self._bytes >= self._capacity

    @property
    def blocks(self) -> bool:
        """Full, with full_policy "block": submit() waits (`wait_for_space`)."""
        return self._settings.full_policy == "block" and self.full

    @property
    def fsync_always(self) -> bool:
        return self._always

    async def wait_for_space(self) -> None:
        """Until a round retired segments (full_policy "block")."""
        while self.full and not self._closed:
            self._space.clear()
            await self._space.wait()

    def append(self, entry: Entry) -> int | None:
        """Append `entry`; the mark to pass to `durable`, or None if the write failed
        (the entry is then not accepted: reason journal_write_failed)."""
        record = encode_record(entry)
        current = self._current
        if current.count and current.size + len(record) > self._settings.segment_bytes:
            current = self._roll()
        try:
            written = os.write(self._fd, record)
            if written != len(record):
                raise OSError(f"short write ({written} of {len(record)} bytes)")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, current.size)  # no half record before the next
            self._log_once("journal_write_failed", error=str(exc), path=str(self._dir))
            return None
        current.count += 1
        current.size += len(record)
        self._bytes += len(record)
        self._appended += 1
        if self._always:
            self._dirty.set()
        return self._appended

    def _roll(self) -> _Segment:
        self._closing_fds.append(self._fd)
        self._current = self._new_segment(self._current.first + self._current.count)
        self._dir_dirty = True
        return self._current

    async def durable(self, mark: int) -> None:
        """With fsync "always": until the append that returned `mark` is fsynced."""
        while self._synced < mark and not self._closed:
            self._dirty.set()
            await self._round_done.wait()

    def acked(self, count: int) -> None:
        """The pipeline's sinks acknowledged the oldest `count` entries."""
        self._acks += count

    # -- upkeep (a task; the disk work in a thread) --------------------------------------

    async def run(self) -> None:
        """fsync, write the ledger and retire segments, until cancelled."""
        interval = None if self._always else self._settings.fsync_interval_ms / 1000
        while not self._stopping:
            # Woken by an append with fsync "always" (else by the interval) and by the stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._dirty.wait()
            await self._round()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """`run` for as long as the block lasts, then one last round. Stopped, not
        cancelled: a round cut off in its thread would leave its bookkeeping undone."""
        self._stopping = False
        upkeep = asyncio.create_task(self.run(), name="journal")
        try:
            yield
        finally:
            self._stopping = True
            self._dirty.set()
            await upkeep

    async def _round(self) -> None:
        self._dirty.clear()
        target = self._appended
        retired = self._apply_acks()
        ledger = self._ledger_index()
        write_ledger = ledger != self._ledger
        closing, self._closing_fds = self._closing_fds, []
        sync_dir, self._dir_dirty = self._dir_dirty, False
        read_free = time.monotonic() - self._capacity_read_at >= _FREE_SPACE_EVERY_S
        started = time.perf_counter()
        free: int | None = None
        try:
            free = await asyncio.to_thread(
                self._disk_round,
                closing,
                sync_dir,
                ledger if write_ledger else None,
                retired,
                read_free,
            )
        except OSError as exc:
            # The appends are in the kernel (a kill -9 loses nothing); a power loss could.
            self._log_once("journal_sync_failed", error=str(exc), path=str(self._dir))
            self._dir_dirty = self._dir_dirty or sync_dir
        else:
            if write_ledger:
                self._ledger = ledger
        JOURNAL_SYNC_DURATION.observe(time.perf_counter() - started)
        self._bytes -= sum(segment.size for segment in retired)
        if free is not None:
            self._capacity = self._capacity_with(free)
            self._capacity_read_at = time.monotonic()
        self._synced = max(self._synced, target)
        self._round_done.set()
        self._round_done = asyncio.Event()
        if retired or not self.full:
            self._space.set()

    def _apply_acks(self) -> list[_Segment]:
        """Move the acknowledgements onto the segments; those now done (not the one being
        appended to) leave the list: their files go once the ledger is durable."""
        acks, self._acks = self._acks, 0
        retired: list[_Segment] = []
        for segment in self._segments:
            if not acks:
                break
            take = min(acks, segment.count - segment.acked)
            segment.acked += take
            acks -= take
        current = self._current
        if (
            current.count
            and current.done
            and self._bytes >= self._settings.shed_at * self._capacity
        ):
            self._roll()  # near full and all acknowledged: its bytes go now, not at its end
        while len(self._segments) > 1 and self._segments[0].done:
            retired.append(self._segments.popleft())
        return retired

    def _ledger_index(self) -> int:
        """The index of the first record not acknowledged."""
        for segment in self._segments:
            if not segment.done:
                return segment.first + segment.acked
        return self._current.first + self._current.count

    def _disk_round(
        self,
        closing: list[int],
        sync_dir: bool,
        ledger: int | None,
        retired: list[_Segment],
        read_free: bool,
    ) -> int | None:
        """A round's disk work, in a thread; the disk's free bytes when `read_free`."""
        for fd in closing:
            os.fdatasync(fd)
            os.close(fd)
        os.fdatasync(self._fd)
        if sync_dir:
            _fsync_dir(self._dir)
        if ledger is not None:
            _write_ledger(self._dir, ledger)
        for segment in retired:  # only now: a crash before this replays them (no loss)
            segment.path.unlink(missing_ok=True)
        return _free_bytes(self._dir) if read_free else None

    def _capacity_with(self, free: int) -> int:
        """journal.max_bytes, or what the journal holds plus the disk's `free` bytes."""
        return min(self._settings.max_bytes, self._bytes + free)

    async def close(self) -> int:
        """The last round; when every entry was acknowledged the segments go too (the
        directory keeps its ledger only). The entries left for the next start."""
        if self._closed:
            return 0
        await self._round()
        self._closed = True
        self._round_done.set()
        self._space.set()
        left = sum(segment.count - segment.acked for segment in self._segments)
        os.close(self._fd)
        if not self._current.count:
            self._current.path.unlink(missing_ok=True)
        if not left:
            for segment in self._segments:
                segment.path.unlink(missing_ok=True)
            self._bytes = 0
        os.close(self._lock)
        log.info("journal_closed", entries_left=left, path=str(self._dir))
        return left

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def capacity(self) -> int:
        return self._capacity

    def _log_once(self, event: str, **fields: str) -> None:
        now = time.monotonic()
        if now - self._logged_at.get(event, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged_at[event] = now
            log.error(event, **fields)


def unacknowledged(directory: Path) -> list[Entry]:
    """What a journal directory holds that no sink acknowledged, oldest first, read
    without locking or changing it (what a restart would write; for tests and tools)."""
    ledger = _read_ledger(directory)
    out: list[Entry] = []
    for _, first, bodies, _, _ in _segment_files(directory):
        out += [decode_body(body) for body in bodies[max(ledger - first, 0) :]]
    return out


def _segment_files(directory: Path) -> Iterator[tuple[Path, int, list[bytes], int, int]]:
    """Each segment in index order: its path, first index, whole records' bodies, the bytes
    they span and the file's size (more: a torn tail)."""
    for path in sorted(directory.glob(f"*{_SUFFIX}")):
        data = path.read_bytes()
        bodies, good = scan(data)
        yield path, int(path.stem), bodies, good, len(data)


def _free_bytes(directory: Path) -> int:
    """The disk's free space for the journal, less a reserve."""
    stats = os.statvfs(directory)
    return max(stats.f_bavail * stats.f_frsize - _DISK_RESERVE_BYTES, 0)


def _lock(directory: Path) -> int:
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(
            f"journal.path {directory} is in use by another relay process: give each "
            "process its own directory"
        ) from None
    return fd


def _read_ledger(directory: Path) -> int:
    """The ledger's index; 0 when there is none (everything left is replayed)."""
    path = directory / "ledger"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0
    try:
        return int(text.strip())
    except ValueError:
        # Cannot happen with the atomic replace; if it does, replaying more is safe (the
        # write guard skips what the streams have) and losing is not.
        log.warning("journal_ledger_unreadable", path=str(path))
        return 0


def _write_ledger(directory: Path, index: int) -> None:
    temporary = directory / "ledger.tmp"
    with open(temporary, "w") as file:
        file.write(f"{index}\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, directory / "ledger")
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
