"""Per-request accounting of what came from the cache (for ScoreResponse fields and traces).

The sources are shared by all requests, so they cannot return this; instead a request opens
`track_usage()` around its work and every caching source adds to the usage of the request it
is serving (a ContextVar: tasks started inside inherit it).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class CacheUsage:
    """What one request got from the cache and what it had to generate."""

    result_hit: bool = False
    samples_reused: int = 0  # from the cache or from an identical in-flight request
    samples_generated: int = 0  # drawn by the inner sample source for this request
    principles_reused: int = 0
    principles_generated: int = 0


_current: contextvars.ContextVar[CacheUsage | None] = contextvars.ContextVar(
    "grm_cache_usage", default=None
)


@contextmanager
def track_usage() -> Iterator[CacheUsage]:
    """Collect the cache usage of the work done inside the block."""
    usage = CacheUsage()
    token = _current.set(usage)
    try:
        yield usage
    finally:
        _current.reset(token)


def current_usage() -> CacheUsage:
    """The usage being collected, or a throwaway one when nobody is tracking."""
    usage = _current.get()
    return usage if usage is not None else CacheUsage()
