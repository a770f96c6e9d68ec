"""Stdout sink: one JSON object per line (events and dead letters), flushed per batch.

For development and `relay demo`, or a log pipeline that reads the container's output.
The write is synchronous: stdout of a container or a terminal does not block for long,
and a thread hop per batch would cost more than it saves.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from relay.contract.event import Entry
from relay.contract.sink import Rejected, Sink
from relay.errors import SinkError


class StdoutSink(Sink):
    def __init__(self, stream: TextIO | None = None, *, name: str = "stdout") -> None:
        self.name = name
        # None: whatever sys.stdout is at write time (it may be replaced, e.g. by pytest).
        self._stream = stream

    async def write(self, batch: Sequence[Entry]) -> list[Rejected]:
        stream = self._stream if self._stream is not None else sys.stdout
        lines = "".join(entry.to_json() + "\n" for entry in batch)
        try:
            stream.write(lines)
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            raise SinkError(f"{len(batch)} entries not written: {exc}") from exc
        return []

    async def ping(self) -> bool:
        stream = self._stream if self._stream is not None else sys.stdout
        return not stream.closed

    async def aclose(self) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        if not stream.closed:
            stream.flush()
