"""The sink interface: where accepted events go. One real backend (Redis Streams) beside it.

A sink writes a whole batch or raises `SinkError` (wrapping the library's error with
`from exc`); the pipeline then retries the same batch, unchanged, so a sink never sees
events out of order. Sinks call `to_json()` and never look inside `data`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from relay.contract.event import DeadLetter, Event

Entry = Event | DeadLetter


class Sink(abc.ABC):
    name: str

    @abc.abstractmethod
    async def write(self, batch: Sequence[Entry]) -> None:
        """Write every entry, in order, or raise SinkError. May be called again with the
        same batch after a failure, so a partly written batch is written twice."""

    async def ping(self) -> bool:
        """True when the sink can take writes now (readiness)."""
        return True

    async def aclose(self) -> None:
        """Release what the sink holds; called once, after the pipeline drained."""
        return None
