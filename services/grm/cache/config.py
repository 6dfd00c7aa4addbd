"""Typed cache settings, built once in a service's main (never at import time)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from grm.cache.layer import CacheTTL, GrmCache
from grm.cache.memory import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, MemoryStore


@dataclass(frozen=True)
class CacheSettings:
    """Where the cache lives and how it behaves; no Redis URL = a bounded in-memory LRU."""

    redis_url: str = ""  # redis://[user:password@]host:port/db or rediss://… (TLS)
    redis_password: str = field(default="", repr=False)  # overrides the URL's (e.g. a Secret)
    redis_ca_certs: str = ""  # CA bundle for rediss:// with a private CA
    prefix: str = "grm"  # per deployment or tenant: keys are `{prefix}:{kind}:…`
    connect_timeout_s: float = 0.25
    timeout_s: float = 0.25  # socket read/write
    op_timeout_s: float = 0.5  # one whole store operation, retry included
    retry_after_s: float = 1.0  # while down: how often a background ping probes the store
    memory_max_entries: int = DEFAULT_MAX_ENTRIES
    memory_max_bytes: int = DEFAULT_MAX_BYTES
    ttl: CacheTTL = field(default_factory=CacheTTL)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> CacheSettings:
        """Settings from GRM_REDIS_URL, GRM_REDIS_PASSWORD, GRM_REDIS_CA_CERTS, GRM_CACHE_PREFIX,
        then overrides.

        Overrides that are None or empty are ignored, so CLI flags can be passed as they come.
        """
        env = os.environ if env is None else env
        settings = cls(
            redis_url=env.get("GRM_REDIS_URL", ""),
            redis_password=env.get("GRM_REDIS_PASSWORD", ""),
            redis_ca_certs=env.get("GRM_REDIS_CA_CERTS", ""),
            prefix=env.get("GRM_CACHE_PREFIX", "") or "grm",
        )
        given = {k: v for k, v in overrides.items() if v is not None and v != ""}
        return replace(settings, **given)


def build_cache(settings: CacheSettings) -> GrmCache:
    """The cache a service runs with: Redis when a URL is set, else the in-memory LRU.

    Nothing connects here; the first lookup does (a down Redis is then bypassed, not fatal).
    """
    if settings.redis_url:
        from grm.cache.redis_store import RedisStore  # only deployments with Redis need it

        store: Any = RedisStore(
            settings.redis_url,
            prefix=settings.prefix,
            connect_timeout_s=settings.connect_timeout_s,
            timeout_s=settings.timeout_s,
            op_timeout_s=settings.op_timeout_s,
            password=settings.redis_password or None,
            ssl_ca_certs=settings.redis_ca_certs or None,
        )
    else:
        store = MemoryStore(
            max_entries=settings.memory_max_entries, max_bytes=settings.memory_max_bytes
        )
    return GrmCache(store, ttl=settings.ttl, retry_after_s=settings.retry_after_s)
