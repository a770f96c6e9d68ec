"""`relay` with an injected flusher fault, for the lifecycle tests:

    python -m tests.lifecycle.faulty_relay CRASH_AFTER run [relay run options]

The first `Pipeline.run()` (the worker's supervised flush loop) also starts an in-process
event source, which submits an event every millisecond while the pipeline accepts them
(no LiveKit room needed). Once CRASH_AFTER events were accepted, that flush loop is cut
wherever it is (mid-write included) and raises `FAULT`. Later calls of `run()` (the one
the drain makes) are the real one: what the worker does after the crash is under test.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from relay import cli
from relay.contract.event import Event
from relay.pipeline import Pipeline

FAULT = "injected flusher fault"
ROOM = "fed-room"

_real_run = Pipeline.run
_sources: set[asyncio.Task[None]] = set()


async def _submit_events(pipeline: Pipeline, crash_after: int, crash: asyncio.Event) -> None:
    n = 0
    while pipeline.accepting:
        n += 1
        data = {"n": n}
        event = Event(ROOM, "raw", "raw", data, time.time(), dedupe_key=f"fed-{n}")
        await pipeline.submit(event)
        if pipeline.accepted >= crash_after:
            crash.set()
        await asyncio.sleep(0.001)


def crashing_run(crash_after: int) -> Callable[[Pipeline], Coroutine[Any, Any, None]]:
    crashed = False

    async def run(self: Pipeline) -> None:
        nonlocal crashed
        if crashed:
            await _real_run(self)
            return
        crashed = True
        crash = asyncio.Event()
        source = asyncio.create_task(_submit_events(self, crash_after, crash))
        _sources.add(source)  # a reference, so the task is not collected
        flushing = asyncio.ensure_future(_real_run(self))
        await crash.wait()
        flushing.cancel()
        await asyncio.wait({flushing})
        raise RuntimeError(FAULT)

    return run


def main() -> int:
    crash_after = int(sys.argv[1])
    Pipeline.run = crashing_run(crash_after)  # type: ignore[method-assign, assignment]
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
