"""The buffer's capacity: a FIFO gate whose wait is the pipeline's backpressure.

Like `asyncio.Semaphore`, but a freed slot is handed straight to the oldest waiter (no
newcomer can overtake a waiter), and `close()` wakes every waiter with a refusal, which
shutdown needs and a semaphore cannot do.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._closed = False

    def try_acquire(self) -> bool:
        """Take a slot if one is free now and nobody waits for one."""
        if self._closed or self._free <= 0 or self._waiters:
            return False
        self._free -= 1
        return True

    async def acquire(self) -> bool:
        """Wait for a slot; False when the gate is (or gets) closed."""
        if self.try_acquire():
            return True
        if self._closed:
            return False
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled after a slot was handed over: give it to the next waiter.
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release(1)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def take(self, count: int) -> None:
        """Take `count` slots now, beyond the capacity if need be (what a replayed
        journal holds): acquirers then wait until enough are released."""
        self._free -= count

    def release(self, count: int) -> None:
        self._free += count
        while self._free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._free -= 1
                waiter.set_result(True)

    def close(self) -> None:
        """Refuse every waiter and every later acquire."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)
