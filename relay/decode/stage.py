"""The decode stage: one task per room, raw items in order -> events -> the pipeline.

It is the only place where raw items become entries: events from the room's decoder, and
dead letters for what the observer refused (in the room's order, behind what came
before). Awaiting the pipeline's `submit` is the backpressure that fills the room's inbox.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from relay import metrics
from relay.contract.event import DeadLetter, Entry
from relay.contract.raw import RawItem, RejectedItem
from relay.decode.room_decoder import RoomDecoder


class ItemSource(Protocol):
    """Where the stage takes a room's raw items from (the observer's inbox)."""

    async def get(self) -> RawItem: ...

    def task_done(self) -> None: ...


class EntryIntake(Protocol):
    """Where the stage hands entries on (the pipeline)."""

    async def submit(self, entry: Entry) -> None: ...


class DecodeStage:
    def __init__(self, source: ItemSource, intake: EntryIntake) -> None:
        self._source = source
        self._intake = intake
        self.decoder = RoomDecoder()

    async def run(self) -> None:
        """Decode and hand on until cancelled."""
        while True:
            item = await self._source.get()
            entries = self.entries(item)
            for n, entry in enumerate(entries):
                try:
                    await self._intake.submit(entry)
                except asyncio.CancelledError:
                    metrics.dropped("shutdown_timeout", len(entries) - n)
                    raise
            self._source.task_done()

    def entries(self, item: RawItem) -> list[Entry]:
        if isinstance(item, RejectedItem):
            detail = dict(item.detail)
            return [DeadLetter(item.ctx.room, item.reason, item.received_at, detail)]
        return list(self.decoder.decode(item))
