"""A room's inbox: the raw items its SDK handlers receive, on their way to the pipeline.

Handlers `put()` without waiting: a full inbox drops (counted, `room_queue_full`), so a
flooding room fills its own inbox, not the others'. One task per room decodes the items in
order and submits the events; the pipeline's `submit` waiting is the backpressure.

While `holding` (during `connect()`), items wait aside: the observer queues
observer.joined/resumed once `connect()` returns, then what arrived meanwhile, so consumers
learn that the observer is there before they see what it saw.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from relay import metrics
from relay.contract.event import DeadLetter, Event
from relay.decode import RoomDecoder
from relay.decode.items import RawItem


class EventIntake(Protocol):
    """What an observer hands its events to (the pipeline)."""

    async def submit(self, event: Event) -> None: ...

    def submit_dead_letter(self, dead_letter: DeadLetter) -> None: ...


def _dropped(reason: str, count: int = 1) -> None:
    metrics.EVENTS_DROPPED.labels(reason=reason).inc(count)


class RoomInbox:
    def __init__(self, room: str, maxsize: int, intake: EventIntake) -> None:
        self._room = room
        self._maxsize = maxsize
        self._intake = intake
        self._decoder = RoomDecoder()
        self._queue: asyncio.Queue[RawItem] = asyncio.Queue(maxsize=maxsize)
        self._held: list[RawItem] | None = None
        self._task: asyncio.Task[None] | None = None

    def put(self, item: RawItem) -> None:
        if self._held is not None:
            if len(self._held) < self._maxsize:
                self._held.append(item)
            else:
                _dropped("room_queue_full")
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            _dropped("room_queue_full")

    def hold(self) -> None:
        self._held = []

    def release(self) -> list[RawItem]:
        """Stop holding; what was held, for the caller to `put()` (or drop) in order."""
        held, self._held = self._held or [], None
        return held

    def start(self) -> None:
        self._task = asyncio.create_task(self._decode_loop(), name=f"decode:{self._room}")

    async def drain(self) -> None:
        """Hand on everything already received, then end the decode task. Cancelled (the
        shutdown ran out of time), what is left is counted as dropped."""
        if held := self.release():  # the observer was cancelled mid-connect
            _dropped("shutdown_timeout", len(held))
        try:
            await self._queue.join()
        except asyncio.CancelledError:
            _dropped("shutdown_timeout", self._queue.qsize())
            raise
        finally:
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    async def _decode_loop(self) -> None:
        while True:
            item = await self._queue.get()
            events = self._decoder.decode(item)
            for n, event in enumerate(events):
                try:
                    await self._intake.submit(event)
                except asyncio.CancelledError:
                    _dropped("shutdown_timeout", len(events) - n)
                    raise
            self._queue.task_done()
