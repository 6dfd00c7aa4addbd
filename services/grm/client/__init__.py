"""Client SDK for RewardService: `GrmClient` (blocking) and `AsyncGrmClient` (asyncio).

    from grm.client import GrmClient
    with GrmClient("127.0.0.1:50051") as client:
        result = client.score("What is 2 + 2?", ["4", "5"], k=4, timeout=60)
        result.rewards, result.best, result.status

Results are `grm.core.types.ScoreResult`; failures raise `grm.core.errors.GrmError`
subclasses (InvalidArgumentError, UnavailableError, DeadlineExceededError, ...), retried
only when transient (UNAVAILABLE, RESOURCE_EXHAUSTED) with jittered exponential backoff.

Any number of items: `client.score_many(items)` splits them into ScoreBatch calls within the
message limit and --max-batch-items and returns one `ScoredItem` per item, in input order
(a result or a per-item error; the asyncio client sends several calls at once).

May import rpc (messages, channels, security) and core.
"""

from grm.client._common import NO_RETRY, BatchOutcome, RetryPolicy
from grm.client.aio import AsyncGrmClient
from grm.client.batching import DEFAULT_MAX_BATCH_ITEMS, ScoredItem
from grm.client.sync import GrmClient

__all__ = [
    "DEFAULT_MAX_BATCH_ITEMS",
    "NO_RETRY",
    "AsyncGrmClient",
    "BatchOutcome",
    "GrmClient",
    "RetryPolicy",
    "ScoredItem",
]
