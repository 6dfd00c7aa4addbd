"""Pacing: messages on one long-lived call at most every `interval_s`, unless one is urgent.

A SampleChannel message costs both services far more CPU than the bytes of one more job or
sample in it. Under load, waiting until the interval since the previous message has passed
lets what queued meanwhile share one message; on a quiet call the previous message is long
past and nothing waits. Work someone races a deadline for (a latency budget's vote) is
urgent: it goes at once, and takes whatever is queued with it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

# SampleChannel messages on one call at most this often, each way (the aggregator's writes,
# the sampler's replies; `--channel-write-interval-ms`). At zero engine latency and 16 Score
# calls in flight (k=4) it cut the two services' CPU per sample by ~15% (docs/benchmarks.md);
# what waits, waits at most this long, and only when the previous message was that recent.
SAMPLE_CHANNEL_INTERVAL_S = 0.005


class Pacer:
    """`await turn()` before each message; `hurry()` when urgent work is queued meanwhile."""

    def __init__(self, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._sent_at = -math.inf
        self._hold: asyncio.Future[None] | None = None

    async def turn(self, *, urgent: bool = False) -> None:
        """Return when the next message may go: at once when `urgent` or when the previous
        one is `interval_s` old, else when it is (or when `hurry()` is called first)."""
        wait = self._sent_at + self.interval_s - self.clock()
        if wait > 0 and not urgent:
            loop = asyncio.get_running_loop()
            hold = self._hold = loop.create_future()
            timer = loop.call_later(wait, _release, hold)
            try:
                await hold
            finally:
                timer.cancel()
                self._hold = None
        self._sent_at = self.clock()

    def hurry(self) -> None:
        """Urgent work was queued: a `turn()` waiting now returns at once."""
        if self._hold is not None:
            _release(self._hold)


def _release(hold: asyncio.Future[None]) -> None:
    if not hold.done():
        hold.set_result(None)
