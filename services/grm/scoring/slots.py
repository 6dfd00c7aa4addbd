"""A semaphore whose waiters are served earliest deadline first, not first come.

A sampler's backend slots are shared by requests with very different latency budgets. With
a FIFO queue a 300 ms request waits behind the samples of a 5 s one and misses its budget
although the 5 s one had time to spare; serving the earliest vote first lets every budget
that the pool's capacity allows be met (earliest-deadline-first is optimal for meeting
deadlines on one resource). Equal keys keep their arrival order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class DeadlineSlots:
    """`capacity` slots; `acquire(key)` waits until no waiter with a lower key is ahead."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._free = capacity
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        """Waiters still queued (cancelled ones are dropped lazily, so not counted)."""
        return sum(1 for _, _, fut in self._waiters if not fut.done())

    async def acquire(self, key: float) -> None:
        """Take a slot; queued by `key` (lower first), then by arrival."""
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (key, next(self._arrivals), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over as we were cancelled: pass it on
            raise

    def resize(self, capacity: int) -> None:
        """Change the number of slots (the backend's capacity moved): more slots go to the
        waiters at once; fewer take effect as slots are released (nothing is preempted)."""
        capacity = max(1, capacity)
        delta = capacity - self.capacity
        if delta == 0:
            return
        self.capacity = capacity
        self._free += delta
        while self._free > 0 and self.waiting:
            self._free -= 1
            self.release()

    def release(self) -> None:
        """Hand the slot to the most urgent live waiter, else free it (after a shrink, a
        released slot first pays back the slots taken away)."""
        if self._free < 0:
            self._free += 1
            return
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1
