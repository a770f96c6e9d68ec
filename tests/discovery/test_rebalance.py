"""The assigner's rebalance and its idempotent acquire, in one process on the real Redis:
workers' discovery parts as the worker assembles them (`ScaleOut`: assigner, lease store,
shared room manager), real pipelines and observers, whose SDK rooms are scripted
(tests/observer/sdk_objects.py). The ticks are driven by hand, one worker after another;
the lease TTL is long enough that no fence timer fires during a test."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
import redis.asyncio as aioredis

from relay.config import DiscoverySettings, PipelineSettings, RedisSettings, Settings
from relay.contract.event import Entry, Event
from relay.contract.sink import Rejected, Sink
from relay.discovery.assigner import Assigner, hand_back_count
from relay.discovery.leases import SEQ_BLOCK, Acquired, LeaseStore
from relay.discovery.runtime import ScaleOut
from relay.discovery.wanted import WantedSet
from relay.observer import RoomTarget
from relay.pipeline import Pipeline
from relay.rooms.observed import ObservedRoom
from tests.observer.sdk_objects import STAYS, Script, observer_settings
from tests.pipeline.support import wait_until
from tests.support import metric

TTL_S = 30.0  # no fence timer fires in a test: the ticks are driven by hand

Written = list[tuple[str, int | None, str, dict[str, object]]]  # room, epoch, kind, data


class GatedSink(Sink):
    """Records what it writes, in one order shared by every worker; `gate` holds writes."""

    name = "gated"

    def __init__(self, written: Written) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.written = written

    async def write(self, batch: Sequence[Entry]) -> list[Rejected]:
        await self.gate.wait()
        for entry in batch:
            if isinstance(entry, Event):
                self.written.append((entry.room, entry.epoch, entry.kind, entry.data))
        return []


@dataclasses.dataclass
class Worker:
    id: str
    scaleout: ScaleOut
    pipeline: Pipeline
    sink: GatedSink
    flusher: asyncio.Task[None]

    @property
    def assigner(self) -> Assigner:
        return self.scaleout.assigner

    @property
    def observed(self) -> list[str]:
        return self.scaleout.rooms.wanted

    async def tick(self) -> None:
        """One tick, a tick after the one before (of any worker: one shared clock)."""
        CLOCK[0] += self.assigner.tick_s
        await self.assigner.tick()

    async def settled(self, timeout_s: float = 5.0) -> None:
        """Every hand-back this worker started has ended."""
        if tasks := list(self.assigner._handing.values()):
            await asyncio.wait(tasks, timeout=timeout_s)
        assert not self.assigner.handing


MakeWorker = Callable[..., Awaitable[Worker]]
CLOCK = [0.0]  # the workers' monotonic clock: Worker.tick() steps it


@pytest.fixture
async def make_worker(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> AsyncIterator[MakeWorker]:
    written: Written = []
    workers: list[Worker] = []

    async def make(
        per_tick: int = 2,
        store_type: type[LeaseStore] = LeaseStore,
        ttl_s: float = TTL_S,
        settle_s: float = 0.0,
        handover_s: float = 0.0,  # 0: the giver leaves first (these tests tick by hand)
    ) -> Worker:
        sink = GatedSink(written)
        pipeline = Pipeline(PipelineSettings(), [sink])
        livekit, limits = observer_settings()
        discovery = DiscoverySettings(
            enabled=True,
            lease_ttl_s=ttl_s,
            lease_margin_s=min(2.0, ttl_s / 5),
            pickup_jitter_s=0,
            rebalance_per_tick=per_tick,
            startup_settle_s=settle_s,
            handover_timeout_s=handover_s,
        )
        settings = Settings(livekit=livekit, redis=redis_settings, discovery=discovery)

        def observer(target: RoomTarget) -> ObservedRoom:
            script = Script([STAYS])
            intake = scaleout.intake  # as the worker does: a taker's entries held back
            return ObservedRoom(target, intake, livekit, limits, room_factory=script.room)

        scaleout = ScaleOut(settings, observer, pipeline)  # as the worker assembles it
        scaleout.assigner.clock = lambda: CLOCK[0]
        if store_type is not LeaseStore:
            store = store_type(scaleout.redis, redis_settings, scaleout.worker_id)
            scaleout.assigner = Assigner(
                store, scaleout.rooms, pipeline, discovery, redis_settings, clock=lambda: CLOCK[0]
            )
        flusher = asyncio.create_task(pipeline.run())
        worker = Worker(scaleout.worker_id, scaleout, pipeline, sink, flusher)
        workers.append(worker)
        return worker

    try:
        yield make
    finally:
        for worker in workers:
            await worker.scaleout.rooms.stop_all()
            await worker.scaleout.stop(1.0)
            await worker.pipeline.drain(1.0)
            await worker.flusher


async def want(redis: aioredis.Redis, settings: RedisSettings, rooms: list[str]) -> None:
    wanted = WantedSet(redis, settings)
    for room in rooms:
        await wanted.add(RoomTarget(room), "control")


async def holders(
    redis: aioredis.Redis, settings: RedisSettings, rooms: list[str]
) -> dict[str, str | None]:
    values = await redis.mget([f"{settings.prefix}:lease:{{{room}}}" for room in rooms])
    return {room: v.decode() if v else None for room, v in zip(rooms, values, strict=True)}


def rebalanced() -> float:
    return metric("relay_lease_losses_total", reason="rebalanced")


def test_hand_back_count_never_below_the_share_nor_while_rooms_wait() -> None:
    assert hand_back_count(6, 4, [6, 0], 0, 2) == 2
    assert hand_back_count(6, 4, [6, 0], 0, 5) == 2  # never below the share
    assert hand_back_count(6, 4, [6, 3], 0, 5) == 1  # no more than the others can take
    assert hand_back_count(6, 4, [6, 4], 0, 5) == 0  # nobody below the share
    assert hand_back_count(6, 4, [6, 0], 1, 2) == 0  # an unowned room is picked up first
    assert hand_back_count(4, 4, [4, 0], 0, 2) == 0
    assert hand_back_count(6, 4, [6, 0], 0, 0) == 0  # disabled


async def test_a_late_worker_gets_its_share_by_hand_backs_and_then_nothing_moves(
    redis: aioredis.Redis, redis_settings: RedisSettings, make_worker: MakeWorker
) -> None:
    rooms = [f"r{n:02d}" for n in range(12)]
    await want(redis, redis_settings, rooms)
    a = await make_worker(per_tick=2)
    await a.tick()  # alone: its share is every room
    assert len(a.assigner.held) == 12
    b, c = await make_worker(), await make_worker()
    workers = [a, b, c]
    history: dict[str, list[str]] = {room: [a.id] for room in rooms}
    before = rebalanced()
    await b.tick()
    await c.tick()
    await a.tick()  # 3 live now, 1 at the previous tick: not stable yet
    assert not a.assigner.handing and len(a.assigner.held) == 12

    for _ in range(12):
        for worker in workers:
            await worker.tick()
            handing = len(worker.assigner.handing)
            assert handing <= 2, handing  # rebalance_per_tick
            await worker.settled()
        for room, owner in (await holders(redis, redis_settings, rooms)).items():
            if owner is not None and owner != history[room][-1]:
                history[room].append(owner)
    share = math.ceil(len(rooms) / 3)
    counts = Counter((await holders(redis, redis_settings, rooms)).values())
    assert sorted(counts.values()) == [share] * 3, counts
    assert {w.id: len(w.assigner.held) for w in workers} == dict(counts)
    # No flap: a room moved at most once, from the full worker to a new one.
    assert all(len(owners) <= 2 for owners in history.values()), history
    moved = [room for room, owners in history.items() if len(owners) == 2]
    assert len(moved) == 12 - share
    assert rebalanced() - before == len(moved)  # exactly the excess, not more

    # Balanced: further ticks move nothing.
    for _ in range(5):
        for worker in workers:
            await worker.tick()
            assert not worker.assigner.handing
    assert rebalanced() - before == len(moved)
    assert Counter((await holders(redis, redis_settings, rooms)).values()) == counts

    # One writer at a time: in the shared write order, a room's epochs never go back;
    # the old owner's observer.left is written before the new owner's observer.joined,
    # which announces the takeover and its gap.
    written = a.sink.written
    for room in rooms:
        epochs = [epoch or 0 for r, epoch, _, _ in written if r == room]
        assert epochs == sorted(epochs), (room, epochs)
        kinds = [(epoch, kind) for r, epoch, kind, _ in written if r == room]
        if room in moved:
            assert kinds == [(1, "observer.joined"), (1, "observer.left"), (2, "observer.joined")]
            joined = next(d for r, e, k, d in written if r == room and e == 2)
            assert joined["reason"] == "takeover" and isinstance(joined["gap_ms"], int)
        else:
            assert kinds == [(1, "observer.joined")]


async def test_a_flapping_registration_moves_nothing_and_a_taker_that_never_comes_strands_one_tick(
    redis: aioredis.Redis, redis_settings: RedisSettings, make_worker: MakeWorker
) -> None:
    rooms = [f"f{n:02d}" for n in range(8)]
    await want(redis, redis_settings, rooms)
    a = await make_worker(per_tick=2)
    await a.tick()
    await a.tick()
    workers_key = f"{redis_settings.prefix}:workers"
    ghost = {"ghost": 2**50}  # registered, but never picks up a room
    for _ in range(3):  # it flaps: there one tick, gone the next
        await redis.zadd(workers_key, ghost)
        await a.tick()
        await redis.zrem(workers_key, "ghost")
        await a.tick()
        assert not a.assigner.handing and len(a.assigner.held) == 8
    assert await redis.zadd(workers_key, ghost)
    await a.tick()
    assert not a.assigner.handing  # seen once: not stable yet
    await a.tick()  # the same count a tick later: share 4, the ghost holds none
    assert len(a.assigner.handing) == 2
    await a.settled()
    for _ in range(3):  # nobody takes them: no more is handed back meanwhile
        await a.tick()
        assert not a.assigner.handing
    assert len(a.assigner.held) == 6
    assert list((await holders(redis, redis_settings, rooms)).values()).count(None) == 2
    await redis.zrem(workers_key, "ghost")
    await a.tick()  # alone again: it takes them back
    assert len(a.assigner.held) == 8


async def test_a_hand_back_releases_the_lease_only_once_its_events_are_written(
    redis: aioredis.Redis, redis_settings: RedisSettings, make_worker: MakeWorker
) -> None:
    rooms = ["w0", "w1"]
    await want(redis, redis_settings, rooms)
    a = await make_worker(per_tick=1)
    await a.tick()
    await a.sink.gate.wait()
    b = await make_worker()
    await b.tick()
    await a.tick()
    a.sink.gate.clear()  # Redis slow: A's writes wait
    await a.tick()
    (room,) = a.assigner.handing
    assert room == list(a.assigner.held)[-1]  # the newest first
    await asyncio.sleep(0.3)
    assert room not in a.observed  # left
    assert (await holders(redis, redis_settings, [room]))[room] == a.id  # not released
    await b.tick()
    assert not b.assigner.held  # B cannot take it yet
    a.sink.gate.set()
    await a.settled()
    assert (await holders(redis, redis_settings, [room]))[room] is None
    await b.tick()
    assert b.assigner.held[room].epoch == 2
    await asyncio.sleep(0.2)
    order = [(epoch, kind) for r, epoch, kind, _ in a.sink.written if r == room]
    assert order == [(1, "observer.joined"), (1, "observer.left"), (2, "observer.joined")]


async def test_an_acquire_repeated_by_its_owner_is_its_own_again(
    redis: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    a = LeaseStore(redis, redis_settings, "worker-a")
    b = LeaseStore(redis, redis_settings, "worker-b")
    first = await a.acquire("r", 5.0)
    assert first is not None and (first.epoch, first.seq_high) == (1, SEQ_BLOCK)
    again = await a.acquire("r", 5.0)  # the first reply was lost
    assert again is not None and (again.epoch, again.seq_high, again.gap_ms) == (
        1,
        2 * SEQ_BLOCK,  # a new block: seqs of the first may have been stamped
        None,
    )
    assert await b.acquire("r", 5.0) is None  # still refused to another owner
    assert await a.release("r")
    taken = await b.acquire("r", 5.0)
    assert taken is not None and taken.epoch == 2 and taken.gap_ms is not None
    repeated = await b.acquire("r", 5.0)  # the same gap is announced again
    assert repeated is not None and repeated.epoch == 2 and repeated.seq_high == 4 * SEQ_BLOCK
    assert repeated.gap_ms is not None and repeated.gap_ms >= taken.gap_ms
    assert await a.acquire("r", 5.0) is None
    assert await redis.pttl(f"{redis_settings.prefix}:lease:{{r}}") > 4000  # extended


class LostReply(LeaseStore):
    """The acquire reaches Redis and runs; its first reply is lost on the way back."""

    lost = 0

    async def acquire(self, room: str, ttl_s: float) -> Acquired | None:
        won = await super().acquire(room, ttl_s)
        if not self.lost:
            self.lost += 1
            raise ConnectionResetError("reply lost")
        return won


async def test_a_lost_acquire_reply_is_taken_at_the_next_tick_with_the_same_epoch(
    redis: aioredis.Redis, redis_settings: RedisSettings, make_worker: MakeWorker
) -> None:
    await want(redis, redis_settings, ["lost"])
    a = await make_worker(store_type=LostReply)
    b = await make_worker()
    with pytest.raises(ConnectionResetError):
        await a.tick()  # the worker's loop logs `assigner_tick_failed` and goes on
    assert not a.assigner.held
    assert (await holders(redis, redis_settings, ["lost"]))["lost"] == a.id
    await b.tick()
    assert not b.assigner.held  # another owner is refused
    await a.tick()  # at once, not a TTL later
    assert a.assigner.held["lost"].epoch == 1
    assert a.assigner.held["lost"].seq_high == 2 * SEQ_BLOCK
    assert "lost" in a.observed
    assert int(await redis.get(f"{redis_settings.prefix}:epoch:{{lost}}")) == 1
    await asyncio.sleep(0.2)
    joined = [(e, k) for r, e, k, _ in a.sink.written if r == "lost"]
    assert joined == [(1, "observer.joined")]
    assert list(itertools.chain(b.assigner.held)) == []


async def test_a_hand_back_unwritten_for_longer_than_a_ttl_keeps_its_lease_until_written(
    redis: aioredis.Redis, redis_settings: RedisSettings, make_worker: MakeWorker
) -> None:
    rooms = ["u0", "u1"]
    await want(redis, redis_settings, rooms)
    a = await make_worker(per_tick=1, ttl_s=1.5)  # its ticks (by hand) keep renewing
    await a.tick()
    await a.sink.gate.wait()
    b = await make_worker(ttl_s=1.5)
    await b.tick()
    await a.tick()
    a.sink.gate.clear()  # Redis slow for longer than a TTL
    await a.tick()
    (room,) = a.assigner.handing
    for _ in range(int(2 * 1.5 / a.assigner.tick_s) + 1):  # two TTLs of ticks: renewed
        await asyncio.sleep(a.assigner.tick_s)
        await a.tick()
        await b.tick()
        assert (await holders(redis, redis_settings, [room]))[room] == a.id
        assert room not in b.assigner.held
    a.sink.gate.set()
    await a.settled()
    await b.tick()
    assert b.assigner.held[room].epoch == 2
    await asyncio.sleep(0.2)
    order = [(epoch, kind) for r, epoch, kind, _ in a.sink.written if r == room]
    assert order == [(1, "observer.joined"), (1, "observer.left"), (2, "observer.joined")]


async def test_a_drain_whose_events_are_unwritten_leaves_its_leases_to_expire(
    redis: aioredis.Redis, redis_settings: RedisSettings, make_worker: MakeWorker
) -> None:
    rooms = ["d0", "d1"]
    await want(redis, redis_settings, rooms)
    a = await make_worker(ttl_s=1.5)
    await a.tick()
    await a.sink.gate.wait()
    a.sink.gate.clear()  # the sink away at SIGTERM: the worker's flush does not finish
    await a.scaleout.rooms.stop_all()
    assert not await a.pipeline.flushed(0.2)
    await a.scaleout.stop(1.0, hand_back=False)
    assert await holders(redis, redis_settings, rooms) == {room: a.id for room in rooms}
    assert not await redis.zscore(f"{redis_settings.prefix}:workers", a.id)  # gone
    await asyncio.sleep(1.5)  # the fence timers fire before the leases expire
    assert not a.assigner.held
    a.sink.gate.set()
    await asyncio.sleep(0.2)
    # What was buffered was refused at the fence; one write was already in flight at the
    # gate (a sink call cannot be taken back).
    assert len([e for e in a.sink.written if e[2] == "observer.left"]) <= 1
    assert await holders(redis, redis_settings, rooms) == {room: None for room in rooms}


async def test_replicas_started_together_share_the_rooms_at_first_pick_up(
    redis: aioredis.Redis, redis_settings: RedisSettings, make_worker: MakeWorker
) -> None:
    """The settle before the first tick: started 0.2 s apart, each takes its share at
    once, so nothing is rebalanced away seconds later (without it the first takes all)."""
    rooms = [f"t{n}" for n in range(6)]
    await want(redis, redis_settings, rooms)
    a, b = await make_worker(settle_s=1.0), await make_worker(settle_s=1.0)
    stop = asyncio.Event()
    runs = [asyncio.create_task(a.assigner.run(stop))]
    await asyncio.sleep(0.2)
    runs.append(asyncio.create_task(b.assigner.run(stop)))
    try:
        # The first ticks (the next is a tick_s = 10 s away).
        await wait_until(lambda: len(a.assigner.held) + len(b.assigner.held) == 6, 10.0)
        assert (len(a.assigner.held), len(b.assigner.held)) == (3, 3)
    finally:
        stop.set()
        await asyncio.gather(*runs)


async def test_quiet_rooms_are_handed_back_before_rooms_with_a_conversation(
    redis: aioredis.Redis, redis_settings: RedisSettings, make_worker: MakeWorker
) -> None:
    rooms = [f"q{n}" for n in range(4)]
    await want(redis, redis_settings, rooms)
    a = await make_worker(per_tick=2)
    await a.tick()
    oldest, newest = list(a.assigner.held)[:2], list(a.assigner.held)[2:]
    await redis.zadd(f"{redis_settings.prefix}:workers", {"ghost": 2**50})
    await a.tick()  # two live: not stable yet
    for room in newest:  # a conversation goes on in the two newest rooms
        await a.pipeline.submit(Event(room, "livekit", "chat.message", {"text": "hi"}, 1.0))
    await a.tick()  # stable: share 2, two rooms go, the quiet ones though they are older
    assert sorted(a.assigner.handing) == sorted(oldest)
    await a.settled()
    assert sorted(a.assigner.held) == sorted(newest)


def handovers(result: str) -> float:
    return metric("relay_handovers_total", result=result)


async def test_a_hand_back_is_make_before_break_when_a_taker_answers(
    redis: aioredis.Redis, redis_settings: RedisSettings, make_worker: MakeWorker
) -> None:
    rooms = ["h0", "h1", "h2", "h3"]
    await want(redis, redis_settings, rooms)
    a = await make_worker(per_tick=1, handover_s=10.0)
    await a.tick()
    b = await make_worker(handover_s=10.0)
    await b.tick()  # share 2 with two live; nothing is free, nothing offered yet
    assert not b.assigner.held
    overlapped = handovers("overlapped")
    await a.tick()
    await a.tick()  # the live count held a tick: A offers its newest room
    (room,) = a.assigner.handing
    await asyncio.sleep(0.3)
    assert room in a.observed  # A stays in the room until a taker joined
    await b.tick()  # B answers: it joins, its entries held back
    await wait_until(lambda: room in b.assigner.held, what="B's lease")
    await wait_until(lambda: not b.assigner.shadows, what="what B held written")
    await a.settled()
    assert room not in a.observed and room not in a.assigner.held
    assert handovers("overlapped") - overlapped == 1
    assert (await holders(redis, redis_settings, [room]))[room] == b.id
    await asyncio.sleep(0.2)
    # In the shared write order: A's events, then B's (its join held back until its
    # lease: epoch 2), announcing a hand-over, no gap.
    order = [(epoch, kind) for r, epoch, kind, _ in a.sink.written if r == room]
    assert order == [(1, "observer.joined"), (1, "observer.left"), (2, "observer.joined")]
    joined = next(d for r, e, k, d in a.sink.written if r == room and e == 2)
    assert joined.get("reason") == "handover" and joined.get("gap_ms") is None
    # Nothing is left behind in Redis for the hand-over.
    assert not await redis.keys(f"{redis_settings.prefix}:shadow:*")
    assert not await redis.keys(f"{redis_settings.prefix}:handover:*")


async def test_a_hand_back_nobody_answers_leaves_after_the_timeout(
    redis: aioredis.Redis, redis_settings: RedisSettings, make_worker: MakeWorker
) -> None:
    rooms = ["u0", "u1"]
    await want(redis, redis_settings, rooms)
    a = await make_worker(per_tick=1, handover_s=0.5)
    await a.tick()
    workers_key = f"{redis_settings.prefix}:workers"
    await redis.zadd(workers_key, {"ghost": 2**50})  # registered, never answers
    unanswered = handovers("unanswered")
    await a.tick()
    await a.tick()
    (room,) = a.assigner.handing
    await a.settled()
    assert room not in a.observed
    assert (await holders(redis, redis_settings, [room]))[room] is None
    assert handovers("unanswered") - unanswered == 1
    assert not await redis.keys(f"{redis_settings.prefix}:handover:*")
