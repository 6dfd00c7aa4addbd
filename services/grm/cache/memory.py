"""A bounded in-process LRU store: the default when no Redis URL is set.

It makes repeat work cheap inside one process (`grm up`, `grm score`, tests) without any
server, and it is bounded by entries and by bytes so a long training run cannot grow the
aggregator until the kernel kills it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from grm.cache.base import CacheStore

DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class MemoryStore(CacheStore):
    """LRU over (key, value, expiry); evicts least recently used entries past either bound."""

    def __init__(
        self,
        *,
        max_entries: int | None = DEFAULT_MAX_ENTRIES,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    @staticmethod
    def _size(key: str, value: bytes) -> int:
        return len(key) + len(value)

    def _drop(self, key: str) -> None:
        value, _ = self._data.pop(key)
        self.bytes -= self._size(key, value)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        out: list[bytes | None] = []
        for key in keys:
            entry = self._data.get(key)
            if entry is None:
                out.append(None)
            elif entry[1] is not None and entry[1] <= now:
                self._drop(key)
                out.append(None)
            else:
                self._data.move_to_end(key)
                out.append(entry[0])
        return out

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float | None) -> int:
        now = self._clock()
        expires = None if ttl_s is None else now + ttl_s
        existing = 0
        for key, value in items:
            if key in self._data:
                if self._data[key][1] is None or self._data[key][1] > now:
                    existing += 1
                    continue
                self._drop(key)  # expired
            size = self._size(key, value)
            if self.max_bytes is not None and size > self.max_bytes:
                continue  # larger than the whole cache: storing it would only evict everything
            self._data[key] = (bytes(value), expires)
            self.bytes += size
            self._evict()
        return existing

    def _evict(self) -> None:
        while self._data and (
            (self.max_entries is not None and len(self._data) > self.max_entries)
            or (self.max_bytes is not None and self.bytes > self.max_bytes)
        ):
            self._drop(next(iter(self._data)))
            self.evictions += 1

    async def delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            if key in self._data:
                self._drop(key)

    def describe(self) -> str:
        return f"memory(max_entries={self.max_entries}, max_bytes={self.max_bytes})"
