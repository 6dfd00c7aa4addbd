"""The cache port: a byte store with TTLs that the typed cache layer talks to.

Two adapters implement it (a storage port with swappable adapters): `RedisStore`
for deployments and `MemoryStore` (a bounded LRU) when no Redis URL is set. The port knows
nothing of GRM: keys are strings, values are bytes; everything GRM-specific (keys, encodings,
failure policy) lives above it, so a new store only has to move bytes.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence


class CacheStoreError(Exception):
    """The store could not serve an operation (down, slow, refused auth); callers degrade."""


class CacheStore(abc.ABC):
    """A key → bytes store with per-entry TTLs; batch calls so one lookup is one round trip."""

    @abc.abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys` (None where absent or expired); raises CacheStoreError."""

    @abc.abstractmethod
    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float | None) -> int:
        """Store each (key, value) whose key is absent, expiring after `ttl_s` (None = never).

        Returns how many keys already held a value and were left alone: values are determined
        by their keys, so an existing one is the same answer, written by another process
        between our miss and our write — the count of cross-process duplicate work.
        """

    @abc.abstractmethod
    async def delete_many(self, keys: Sequence[str]) -> None:
        """Drop `keys` (absent keys are fine)."""

    async def ping(self) -> None:
        """Check that the store answers; raises CacheStoreError when it does not."""

    async def close(self) -> None:
        """Release connections."""

    def describe(self) -> str:
        """A loggable name for the store (never includes credentials)."""
        return type(self).__name__
