"""The cache layer: principle sets, individual samples, final results.

Wiring (e.g. in the aggregator's main)::

    cache = build_cache(CacheSettings.from_env(redis_url=args.redis_url))
    sampler = CachingSampleSource(sampler, cache)            # a SampleSource again
    principles = CachingPrincipleSource(principles, cache)   # reads principles.info (or model=)
    pipeline = ScoringPipeline(sampler, principles=principles, meta_rm=meta_rm)
    results = ResultCache(cache, meta_rm=meta_rm.name if meta_rm else "")
    with track_usage() as usage:                             # per request
        result = await results.get_or_compute(item, sampler.info, lambda: pipeline.score(item))
    # usage.result_hit / samples_reused / samples_generated → the response; cache.stats → metrics
    await cache.close()                                      # on shutdown

Values are grm.v1 protobuf messages mapped by grm.rpc.convert; nothing here imports gRPC
(grm.rpc.convert does, for its status helpers, so the codec imports it only when called).
"""

from grm.cache.base import CacheStore, CacheStoreError
from grm.cache.codec import CorruptValueError
from grm.cache.config import CacheSettings, build_cache
from grm.cache.keys import KEY_VERSION, Kind, principles_key, result_key, sample_key
from grm.cache.layer import CacheStats, CacheTTL, GrmCache, KindStats
from grm.cache.memory import MemoryStore
from grm.cache.sources import CachingPrincipleSource, CachingSampleSource, ResultCache
from grm.cache.usage import CacheUsage, current_usage, track_usage
from grm.core.singleflight import SingleFlight

__all__ = [
    "KEY_VERSION",
    "CacheSettings",
    "CacheStats",
    "CacheStore",
    "CacheStoreError",
    "CacheTTL",
    "CacheUsage",
    "CachingPrincipleSource",
    "CachingSampleSource",
    "CorruptValueError",
    "GrmCache",
    "Kind",
    "KindStats",
    "MemoryStore",
    "ResultCache",
    "SingleFlight",
    "build_cache",
    "current_usage",
    "principles_key",
    "result_key",
    "sample_key",
    "track_usage",
]
