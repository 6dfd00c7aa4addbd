"""The failure-tolerant face of a cache store: TTLs per kind, counters, and never an error.

Redis down = slower, never wrong, never down. A failed store operation is counted,
logged once per outage, and answered as a miss; after that the store is bypassed (no request
pays a timeout) while a background ping probes it every `retry_after_s`, and caching resumes
as soon as a ping succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from grm import telemetry
from grm.cache.base import CacheStore
from grm.cache.keys import Kind

log = logging.getLogger("grm.cache")

DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class CacheTTL:
    """How long each kind lives: samples and principles are reused across epochs (days)."""

    principles_s: float = 3 * DAY_S
    sample_s: float = 3 * DAY_S
    result_s: float = 1 * DAY_S

    def for_kind(self, kind: Kind) -> float:
        return {
            Kind.PRINCIPLES: self.principles_s,
            Kind.SAMPLE: self.sample_s,
            Kind.RESULT: self.result_s,
        }[kind]


@dataclass
class KindStats:
    """Counters of one kind (plain ints: telemetry reads them later)."""

    hits: int = 0
    misses: int = 0
    stores: int = 0  # values written
    duplicates: int = 0  # values another process wrote between our miss and our write
    shared: int = 0  # lookups that joined an identical in-flight computation (single-flight)
    corrupt: int = 0  # stored values that failed to decode: ignored and overwritten
    errors: int = 0  # store operations that failed (lookups, writes, deletes)
    bypassed: int = 0  # operations skipped while the store was marked down


@dataclass
class CacheStats:
    principles: KindStats = field(default_factory=KindStats)
    sample: KindStats = field(default_factory=KindStats)
    result: KindStats = field(default_factory=KindStats)
    outages: int = 0  # times the store went from usable to down

    def __getitem__(self, kind: Kind) -> KindStats:
        return getattr(self, str(kind))  # type: ignore[no-any-return]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GrmCache:
    """A CacheStore behind a breaker: every method returns normally whatever the store does."""

    def __init__(
        self,
        store: CacheStore,
        *,
        ttl: CacheTTL = CacheTTL(),
        retry_after_s: float = 1.0,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.retry_after_s = retry_after_s
        self.stats = CacheStats()
        telemetry.watch_cache(self)  # grm_cache_hits / grm_cache_misses read self.stats
        self._down = False
        self._retry_at = 0.0
        self._probe: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """False while the store is treated as down."""
        return not self._down

    def describe(self) -> str:
        return self.store.describe()

    def _usable(self, kind: Kind) -> bool:
        if not self._down:
            return True
        self.stats[kind].bypassed += 1
        if time.monotonic() >= self._retry_at and (self._probe is None or self._probe.done()):
            self._probe = asyncio.get_running_loop().create_task(self._ping())
        return False

    async def _ping(self) -> None:
        try:
            await self.store.ping()
        except Exception:  # still down: try again later, quietly (one log line per outage)
            self._retry_at = time.monotonic() + self.retry_after_s
            return
        self._recovered()

    def _failed(self, kind: Kind, what: str, exc: BaseException) -> None:
        self.stats[kind].errors += 1
        self._retry_at = time.monotonic() + self.retry_after_s
        if not self._down:
            self._down = True
            self.stats.outages += 1
            log.warning(
                "cache %s failed on %s %s (%s: %s); continuing without cache, retrying every %.1fs",
                self.store.describe(),
                kind,
                what,
                type(exc).__name__,
                exc,
                self.retry_after_s,
            )

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            log.info("cache %s is available again", self.store.describe())

    async def get(self, kind: Kind, keys: Sequence[str]) -> list[bytes | None]:
        """Stored values (None for absent); all None when the store fails or is down."""
        if not keys:
            return []
        if not self._usable(kind):
            return [None] * len(keys)
        try:
            with telemetry.stage("cache", **{"grm.cache.kind": str(kind)}) as span:
                values = await self.store.get_many(keys)
                span.set_attribute("grm.cache.keys", len(keys))
                span.set_attribute("grm.cache.found", sum(v is not None for v in values))
        except Exception as exc:  # any store failure degrades to a miss, never to an error
            self._failed(kind, "get", exc)
            return [None] * len(keys)
        self._recovered()
        return values

    async def put(self, kind: Kind, items: Sequence[tuple[str, bytes]]) -> None:
        """Store absent values with the kind's TTL; a failure is counted and swallowed."""
        if not items or not self._usable(kind):
            return
        try:
            existing = await self.store.set_many(items, self.ttl.for_kind(kind))
        except Exception as exc:
            self._failed(kind, "put", exc)
            return
        self.stats[kind].stores += len(items) - existing
        self.stats[kind].duplicates += existing

    async def delete(self, kind: Kind, keys: Sequence[str]) -> None:
        """Drop values (corrupt ones); a failure is counted and swallowed."""
        if not keys or not self._usable(kind):
            return
        try:
            await self.store.delete_many(keys)
        except Exception as exc:
            self._failed(kind, "delete", exc)

    async def close(self) -> None:
        """Stop probing and release the store's connections."""
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        await self.store.close()
