"""The Redis adapter of the cache port (`redis.asyncio`), shared by every aggregator pod.

Timeouts are short on purpose: a cache that answers slower than ~a quarter second is worse than
no cache, because the caller could have been generating instead. Retries are limited to one
immediate reconnect (which absorbs a Redis restart), never redis-py's default backoff of
seconds — the typed layer above decides when to try again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from grm.cache.base import CacheStore, CacheStoreError

SCHEMES = ("redis", "rediss")


def redact_url(url: str) -> str:
    """The URL without its credentials, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    auth = "***@" if parts.username or parts.password else ""
    return f"{parts.scheme}://{auth}{host}{port}{parts.path}"


class RedisStore(CacheStore):
    """Values under `{prefix}:{key}`, so deployments or tenants can share one Redis."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "grm",
        connect_timeout_s: float = 0.25,
        timeout_s: float = 0.25,
        op_timeout_s: float = 0.5,
        max_connections: int = 64,
        username: str | None = None,
        password: str | None = None,
        ssl_ca_certs: str | None = None,
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in SCHEMES:
            raise ValueError(f"cache URL must start with redis:// or rediss://, got {scheme!r}://")
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError("cache key prefix must be non-empty and without whitespace")
        self.url = url
        self.prefix = prefix
        self.op_timeout_s = op_timeout_s
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout_s,
            "socket_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 1),
            "max_connections": max_connections,
            # A burst beyond the pool waits for a connection (within the op timeout) instead
            # of failing with "Too many connections" and tripping the breaker for everyone.
            "timeout": op_timeout_s,
        }
        if username is not None:
            kwargs["username"] = username
        if password is not None:
            kwargs["password"] = password
        if ssl_ca_certs is not None:
            kwargs["ssl_ca_certs"] = ssl_ca_certs
        self.pool = BlockingConnectionPool.from_url(url, **kwargs)
        self.client = Redis(connection_pool=self.pool)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    async def _run(self, what: str, op: Any) -> Any:
        try:
            async with asyncio.timeout(self.op_timeout_s):
                return await op
        except (RedisError, OSError, TimeoutError) as exc:
            raise CacheStoreError(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values = await self._run("MGET", self.client.mget([self._key(k) for k in keys]))
        return [v if isinstance(v, bytes) else None for v in values]

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float | None) -> int:
        if not items:
            return 0
        px = None if ttl_s is None else max(1, round(ttl_s * 1000))

        async def write() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(self._key(key), value, px=px, nx=True)  # NX: any Redis >= 2.6.12
                return list(await pipe.execute())

        done = await self._run("SET", write())
        return sum(1 for ok in done if not ok)

    async def delete_many(self, keys: Sequence[str]) -> None:
        if keys:
            await self._run("DEL", self.client.delete(*(self._key(k) for k in keys)))

    async def ping(self) -> None:
        await self._run("PING", self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()
        await self.pool.disconnect()

    def describe(self) -> str:
        return f"redis({redact_url(self.url)}, prefix={self.prefix!r})"
