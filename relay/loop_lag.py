"""How late the event loop runs what is due: the relay's tail latency, as it happens.

Every SDK callback, decode and write shares one event loop; a callback that holds it (a
large payload decoded, a garbage collection, a slow handler) delays every event behind
it. A watcher wakes every `interval_s` and records how late it woke in
`relay_event_loop_lag_seconds`, for operators (an alert on its p99) and for bench/e2e.py.
It costs a timer wake-up per interval (20 a second by default).
"""

from __future__ import annotations

import asyncio

from relay.metrics import LOOP_LAG

INTERVAL_S = 0.05


async def watch_loop_lag(until: asyncio.Event, interval_s: float = INTERVAL_S) -> None:
    """Record the loop's lag until `until` is set."""
    loop = asyncio.get_running_loop()
    while not until.is_set():
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        LOOP_LAG.observe(max(0.0, loop.time() - due))
