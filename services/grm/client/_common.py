"""What the sync and asyncio clients share: requests, retries, error and result mapping."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from grm.core.errors import GrmError
from grm.core.types import ScoreItem, ScoreResult
from grm.rpc import convert
from grm.v1 import reward_pb2

BatchOutcome = ScoreResult | GrmError
ItemLike = reward_pb2.ScoreRequest | ScoreItem | Mapping[str, Any]

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for transient failures only (UNAVAILABLE, RESOURCE_EXHAUSTED).

    Backoff is exponential with full jitter, so many training workers that failed together
    do not retry together; all tries share the call's one deadline.
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    codes: frozenset[grpc.StatusCode] = field(default=RETRYABLE)

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Sleep before retry number `retry` (0-based)."""
        cap = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**retry)
        return rng.uniform(0, cap)

    def should_retry(self, code: grpc.StatusCode, attempt: int) -> bool:
        return code in self.codes and attempt + 1 < self.max_attempts


NO_RETRY = RetryPolicy(max_attempts=1)


def as_request(item: ItemLike, *, include_samples: bool | None = None) -> reward_pb2.ScoreRequest:
    """A ScoreRequest from a request message, a validated ScoreItem or score() keywords."""
    if isinstance(item, reward_pb2.ScoreRequest):
        request = item
    elif isinstance(item, ScoreItem):
        request = convert.item_to_request(item)
    else:
        request = convert.score_request(**item)
    if include_samples is not None and request.include_samples != include_samples:
        request = reward_pb2.ScoreRequest.FromString(request.SerializeToString())
        request.include_samples = include_samples
    return request


def error_of(exc: grpc.RpcError) -> GrmError:
    """The GrmError for a failed call (the field comes back in trailing metadata)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    field_name = dict(trailing or ()).get(convert.FIELD_METADATA_KEY)
    return convert.error_from_status(code, details or code.name, field_name)


def batch_outcomes(reply: reward_pb2.ScoreBatchResponse) -> list[BatchOutcome]:
    out: list[BatchOutcome] = []
    for item in reply.items:
        if item.HasField("error"):
            out.append(
                convert.error_from_status(
                    item.error.code, item.error.message, item.error.field or None
                )
            )
        else:
            out.append(convert.response_to_result(item.result))
    return out


def batch_request(items: Sequence[ItemLike]) -> reward_pb2.ScoreBatchRequest:
    return reward_pb2.ScoreBatchRequest(items=[as_request(i) for i in items])
