"""The caller's deadline, carried through transport-free code in a context variable.

The aggregator's servicer knows the gRPC deadline; the pipeline between it and the sampler
pool does not (and should not) take a deadline argument. A context variable lets the pool
read the time left without coupling the pipeline to gRPC, and it flows into tasks that
`asyncio` creates from the servicer's context.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("grm_deadline", default=None)
# When the caller votes (its latency budget's cut-off), if it has a budget: samplers serve
# queued samples earliest vote first, so a short budget is not stuck behind a long one.
_VOTE_AT: ContextVar[float | None] = ContextVar("grm_vote_at", default=None)


def remaining() -> float | None:
    """Seconds left before the current deadline (may be <= 0), or None when there is none."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def expired(margin_s: float = 0.0) -> bool:
    """Whether a deadline is set and has passed (or is less than `margin_s` away)."""
    left = remaining()
    return left is not None and left <= margin_s


@contextlib.contextmanager
def scope(timeout_s: float | None) -> Iterator[None]:
    """Run the block under `timeout_s` more seconds, never later than an outer deadline."""
    if timeout_s is None:
        yield
        return
    deadline = time.monotonic() + timeout_s
    outer = _DEADLINE.get()
    if outer is not None:
        deadline = min(deadline, outer)
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


@contextlib.contextmanager
def vote_scope(vote_in_s: float | None) -> Iterator[None]:
    """Run the block knowing its caller votes `vote_in_s` seconds from now (None: no budget)."""
    if vote_in_s is None:
        yield
        return
    token = _VOTE_AT.set(time.monotonic() + vote_in_s)
    try:
        yield
    finally:
        _VOTE_AT.reset(token)


def vote_in() -> float | None:
    """Seconds until the caller votes (may be <= 0: it is waiting past its budget), or None."""
    vote_at = _VOTE_AT.get()
    return None if vote_at is None else vote_at - time.monotonic()


def urgency() -> float:
    """The sort key of queued work (monotonic time, lower first): the caller's vote, else its
    deadline, else never (work without either waits behind all that has one)."""
    return min((m for m in (_VOTE_AT.get(), _DEADLINE.get()) if m is not None), default=math.inf)


def downstream_timeout(
    left: float | None, *, reserve_fraction: float = 0.1, max_reserve_s: float = 0.5
) -> float | None:
    """The timeout to give a downstream call: what is left minus a reserve for our own reply.

    Without the reserve a downstream service would use all of the time and its (partial)
    answer would arrive after our caller had already given up.
    """
    if left is None:
        return None
    return left - min(max_reserve_s, max(0.0, left) * reserve_fraction)
