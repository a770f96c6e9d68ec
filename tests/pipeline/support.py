"""Helpers for pipeline and sink tests: events, an in-memory sink, metric reads, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from relay.contract.event import Entry, Event, Participant
from relay.contract.sink import Rejected, Sink
from relay.errors import SinkError


def make_event(room: str, n: int, *, at: float | None = None) -> Event:
    """A distinct event (`data.n`) as a decoder would hand it over: no id, no seq."""
    return Event(
        room=room,
        protocol="liveavatar",
        kind="transcript.final",
        data={"role": "avatar", "text": f"utterance {n}", "segment_id": f"seg-{n}"},
        received_at=time.time() if at is None else at,
        participant=Participant(identity="avatar-1", kind="agent", role="avatar"),
        source={"topic": "agent-response", "event_type": "avatar.transcription"},
    )


async def wait_until(
    predicate: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition"
) -> None:
    """Poll `predicate` every few milliseconds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.002)


class MemorySink(Sink):
    """Keeps what it acknowledged; can fail (`fail_next`, `down`) or hang (`gate`)."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.attempts: list[list[Entry]] = []
        self.batches: list[list[Entry]] = []
        self.fail_next = 0
        self.down = False
        self.error: Exception = SinkError("down")
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, batch: Sequence[Entry]) -> list[Rejected]:
        self.attempts.append(list(batch))
        await self.gate.wait()
        if self.down or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            raise self.error
        self.batches.append(list(batch))
        return []

    @property
    def entries(self) -> list[Entry]:
        return [entry for batch in self.batches for entry in batch]

    @property
    def events(self) -> list[Event]:
        return [entry for entry in self.entries if isinstance(entry, Event)]


def seqs_by_room(events: Sequence[Event]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for event in events:
        out.setdefault(event.room, []).append(event.seq)
    return out
