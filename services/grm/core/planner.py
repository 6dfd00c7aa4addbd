"""The k planner: the largest k that fits a latency budget.

Pure logic, no I/O. The aggregator feeds a `LatencyWindow` with the latencies of samples
the pool drew (service time, not queueing) and asks `KPlanner.plan` for each request with
a budget. The prediction is in waves of one (high-percentile) sample latency each, plus a
margin for the vote and the reply. With the pool's total capacity C known and `busy` samples
already in flight or queued there (FIFO, ahead of this request's), k samples finish after
ceil((busy + k) / C) waves: every slot that frees serves the queue in order. Without C, only
the `free` slots are counted, k / free waves (conservative while the others stay busy).
The pipeline's anytime voting is the safety net when the prediction is wrong; the planner
keeps the request from starting work it cannot finish.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


class LatencyWindow:
    """A streaming high-percentile estimate over the last `size` observed latencies (ms)."""

    def __init__(self, size: int = 256, quantile: float = 0.95) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        if not 0.0 < quantile <= 1.0:
            raise ValueError("quantile must be in (0, 1]")
        self.quantile = quantile
        self._values: deque[float] = deque(maxlen=size)

    def observe(self, latency_ms: float) -> None:
        if math.isfinite(latency_ms) and latency_ms >= 0:
            self._values.append(latency_ms)

    def extend(self, latencies_ms: Iterable[float]) -> None:
        for value in latencies_ms:
            self.observe(value)

    def __len__(self) -> int:
        return len(self._values)

    def estimate(self) -> float | None:
        """The `quantile` of the window (nearest rank), or None before any observation."""
        if not self._values:
            return None
        ordered = sorted(self._values)
        rank = max(1, math.ceil(self.quantile * len(ordered)))
        return ordered[rank - 1]


def predicted_ms(
    k: int,
    latency_ms: float,
    free_capacity: int,
    overhead_ms: float = 0.0,
    *,
    capacity: int | None = None,
) -> float:
    """Finish time of k samples: ceil(k / free) waves of latency, or with the pool's total
    `capacity` known, ceil((busy + k) / capacity) waves (busy = capacity - free_capacity)."""
    if capacity is not None and capacity > 0:
        busy = max(0, capacity - free_capacity)
        return math.ceil((busy + k) / capacity) * latency_ms + overhead_ms
    waves = math.ceil(k / max(1, free_capacity))
    return waves * latency_ms + overhead_ms


def plan_k(
    k_requested: int,
    budget_ms: float | None,
    latency_ms: float | None,
    free_capacity: int,
    *,
    k_min: int = 1,
    margin_ms: float = 0.0,
    overhead_ms: float = 0.0,
    capacity: int | None = None,
) -> int:
    """The largest k ≤ k_requested (≥ min(k_min, k_requested)) predicted to fit the budget.

    No budget or no latency measured yet: k_requested (anytime voting still cuts at the
    budget). With the pool's total `capacity` known, `free_capacity` is capacity minus the
    samples in flight or queued (negative with a backlog): the new samples queue behind those
    `busy` ones and every slot serves the queue, so k ≤ waves × capacity - busy. Without it,
    only the free slots count (no free slot: planned as one). A budget too short for even one
    wave (or a backlog longer than the budget) gives k_min.
    """
    floor_k = max(1, min(k_min, k_requested))
    if not budget_ms or budget_ms <= 0 or latency_ms is None:
        return k_requested
    slots = max(1, free_capacity)
    usable = budget_ms - margin_ms - overhead_ms
    if latency_ms <= 0:
        return k_requested
    waves = math.floor(usable / latency_ms) if usable > 0 else 0
    if capacity is not None and capacity > 0:
        busy = max(0, capacity - free_capacity)
        return max(floor_k, min(k_requested, waves * capacity - busy))
    return max(floor_k, min(k_requested, waves * slots))


@dataclass(frozen=True)
class KPlan:
    k_requested: int
    k_planned: int
    latency_ms: float | None  # the estimate used (None: nothing measured yet)
    free_capacity: int
    predicted_ms: float | None

    @property
    def deficit(self) -> int:
        return self.k_requested - self.k_planned


class KPlanner:
    """Plans k per request from one LatencyWindow (one per sampler pool / backend)."""

    def __init__(self, window: LatencyWindow | None = None, *, k_min: int = 1) -> None:
        if k_min < 1:
            raise ValueError("k_min must be at least 1")
        self.window = window if window is not None else LatencyWindow()
        self.k_min = k_min

    def plan(
        self,
        k_requested: int,
        budget_ms: float | None,
        free_capacity: int,
        *,
        margin_ms: float = 0.0,
        overhead_ms: float = 0.0,
        capacity: int | None = None,
    ) -> KPlan:
        """`capacity`: the pool's total slots when known (see plan_k); `margin_ms`: the part
        of the budget kept for the vote and the reply (grm.core.plan.Margins.vote_margin_ms)."""
        latency = self.window.estimate()
        k = plan_k(
            k_requested,
            budget_ms,
            latency,
            free_capacity,
            k_min=self.k_min,
            margin_ms=margin_ms,
            overhead_ms=overhead_ms,
            capacity=capacity,
        )
        predicted = (
            None
            if latency is None
            else predicted_ms(k, latency, free_capacity, overhead_ms, capacity=capacity)
        )
        return KPlan(k_requested, k, latency, max(0, free_capacity), predicted)
