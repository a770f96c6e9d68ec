"""The sink interface: where accepted events go. One real backend (Redis Streams) beside it.

A sink writes a whole batch or raises `SinkError` (wrapping the library's error with
`from exc`); the pipeline then retries the same batch, unchanged, so a sink never sees
events out of order. An entry the sink's backend refuses for good (a Redis key of the
wrong type) is returned as rejected instead, so that one bad key cannot stall every
room: the pipeline dead-letters it. Sinks write `json_bytes()` and never look inside `data`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from relay.contract.event import Entry

Rejected = tuple[Entry, str]  # an entry the backend refused for good, and its error


class Sink(abc.ABC):
    name: str

    @abc.abstractmethod
    async def write(self, batch: Sequence[Entry]) -> list[Rejected]:
        """Write every entry, in order, or raise SinkError (then the same batch comes again,
        so a partly written batch is written twice). Returns the entries refused for good
        (never retried; an event may be partly written, e.g. to one of two streams);
        usually none."""

    async def ping(self) -> bool:
        """True when the sink can take writes now (readiness)."""
        return True

    async def aclose(self) -> None:
        """Release what the sink holds; called once, after the pipeline drained."""
        return None
