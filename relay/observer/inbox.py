"""A room's inbox: the raw items its SDK handlers receive, on their way to the decode stage.

Handlers `put()` without waiting: a full inbox drops (counted, `room_queue_full`), so a
flooding room fills its own inbox, not the others'. The decode stage takes items out in
order (`get`, `task_done`); its waiting on the pipeline is the backpressure.

While `holding` (during `connect()`), items wait aside: the observer queues
observer.joined/resumed once `connect()` returns, then what arrived meanwhile, so consumers
learn that the observer is there before they see what it saw.
"""

from __future__ import annotations

import asyncio

from relay import metrics
from relay.contract.raw import RawItem


class RoomInbox:
    def __init__(self, room: str, maxsize: int) -> None:
        self.room = room
        self._maxsize = maxsize
        self._queue: asyncio.Queue[RawItem] = asyncio.Queue(maxsize=maxsize)
        self._held: list[RawItem] | None = None

    # -- the observer's side -----------------------------------------------------------

    def put(self, item: RawItem) -> None:
        if self._held is not None:
            if len(self._held) < self._maxsize:
                self._held.append(item)
            else:
                metrics.dropped("room_queue_full")
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            metrics.dropped("room_queue_full")

    def hold(self) -> None:
        self._held = []

    def release(self) -> list[RawItem]:
        """Stop holding; what was held, for the caller to `put()` (or drop) in order."""
        held, self._held = self._held or [], None
        return held

    # -- the decode stage's side -------------------------------------------------------

    async def get(self) -> RawItem:
        return await self._queue.get()

    def task_done(self) -> None:
        self._queue.task_done()

    async def drain(self) -> None:
        """Wait until the decode stage handed on everything already received. Cancelled
        (the shutdown ran out of time), what is left is counted as dropped."""
        if held := self.release():  # the observer was cancelled mid-connect
            metrics.dropped("shutdown_timeout", len(held))
        try:
            await self._queue.join()
        except asyncio.CancelledError:
            metrics.dropped("shutdown_timeout", self._queue.qsize())
            raise
