"""A sampler's generation slots: budgeted work earliest vote first, the rest fairly shared.

A sampler's backend slots are shared by requests with very different needs.

- Work with a latency budget (a vote time) is served first, earliest key first: with a FIFO
  queue a 300 ms request waits behind the samples of a 5 s one and misses its budget although
  the 5 s one had time to spare; earliest-deadline-first is optimal for meeting deadlines on
  one resource. Equal keys keep their arrival order.
- Work without a budget is shared round robin between requests ("flows"): each request with
  samples waiting gets the next free slot in turn, so a k = 1 request waits for at most one
  slot per other request, not behind every queued sample of a k = 64 one. Within a request,
  samples go in arrival order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Hashable


class SampleSlots:
    """`capacity` slots; `acquire(key)` for budgeted work, `acquire(None, flow)` for the rest."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._free = capacity
        self._urgent: list[tuple[float, int, asyncio.Future[None]]] = []
        self._flows: dict[Hashable, deque[asyncio.Future[None]]] = {}
        self._turns: deque[Hashable] = deque()  # flows with waiters, next turn first
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        """Waiters still queued (cancelled ones are dropped lazily, so not counted)."""
        urgent = sum(1 for _, _, fut in self._urgent if not fut.done())
        return urgent + sum(1 for q in self._flows.values() for fut in q if not fut.done())

    async def acquire(self, key: float | None, flow: Hashable = None) -> None:
        """Take a slot: queued by `key` (lower first, then arrival) when there is one, else
        in `flow`'s turn among the flows without a key."""
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if key is not None:
            heapq.heappush(self._urgent, (key, next(self._arrivals), fut))
        else:
            queue = self._flows.get(flow)
            if queue is None:
                queue = self._flows[flow] = deque()
                self._turns.append(flow)
            queue.append(fut)
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
        """Hand the slot to the most urgent live waiter, else to the next flow's, else free it
        (after a shrink, a released slot first pays back the slots taken away)."""
        if self._free < 0:
            self._free += 1
            return
        while self._urgent:
            _, _, fut = heapq.heappop(self._urgent)
            if not fut.done():
                fut.set_result(None)
                return
        while self._turns:
            flow = self._turns.popleft()
            queue = self._flows[flow]
            while queue and queue[0].done():
                queue.popleft()  # cancelled while waiting
            if not queue:
                del self._flows[flow]
                continue
            queue.popleft().set_result(None)
            if any(not f.done() for f in queue):
                self._turns.append(flow)  # its next sample waits for its next turn
            else:
                del self._flows[flow]
            return
        self._free += 1
