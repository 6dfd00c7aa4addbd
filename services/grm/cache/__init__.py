"""The cache layer: principle sets, individual samples and final results, in Redis or in
memory behind one store interface (`base`); Redis down = slower, never wrong, never down.

`CachingSampleSource` and `CachingPrincipleSource` wrap the pipeline's sources (a cache hit
is indistinguishable from a fresh sample); `ResultCache` answers repeated requests;
`track_usage` tells each request what it got from the cache. Keys (`keys`) hold everything
that determines a value: model id + revision, template version, context, responses in the
order shown, principles, seed, sampling parameters.

May import rpc (the value codec is protobuf), scoring, metarm, backends, telemetry and core.
"""

from grm.cache.base import CacheStore, CacheStoreError
from grm.cache.codec import CorruptValueError
from grm.cache.config import CacheSettings, build_cache
from grm.cache.keys import KEY_VERSION, Kind, SampleKeys, principles_key, result_key, sample_key
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
    "SampleKeys",
    "SingleFlight",
    "build_cache",
    "current_usage",
    "principles_key",
    "result_key",
    "sample_key",
    "track_usage",
]
