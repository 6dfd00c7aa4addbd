"""The blocking client: for scripts and training code without an event loop."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from grm import convert
from grm.client._common import (
    BatchOutcome,
    ItemLike,
    RetryPolicy,
    as_request,
    batch_outcomes,
    batch_request,
    error_of,
)
from grm.core.errors import DeadlineExceededError
from grm.core.types import ScoreItem, ScoreResult
from grm.server import channel_options
from grm.v1 import reward_pb2, reward_pb2_grpc

T = TypeVar("T")


class GrmClient:
    """RewardService over one channel; every call has a deadline and bounded retries.

    Failures raise the GrmError subclass of their status (InvalidArgumentError, ...);
    a failed score is an exception, never a reward. Thread-safe (one gRPC channel).
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 120.0,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        max_message_mb: int = 64,
        rng: random.Random | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        options = channel_options(max_message_mb)
        self._channel = (
            grpc.secure_channel(target, credentials, options=options)
            if credentials
            else grpc.insecure_channel(target, options=options)
        )
        self._stub = reward_pb2_grpc.RewardServiceStub(self._channel)

    def __enter__(self) -> GrmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DeadlineExceededError(f"no time left after {attempt} attempt(s)")
            try:
                return method(request, timeout=left)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                if not self.retry.should_retry(code, attempt):
                    raise error_of(exc) from exc
                pause = self.retry.backoff(attempt, self._rng)
                if deadline is not None and time.monotonic() + pause >= deadline:
                    raise error_of(exc) from exc
                attempt += 1
                time.sleep(pause)

    def score(
        self,
        query: str | Sequence[Any],
        responses: Sequence[str],
        *,
        timeout: float | None = None,
        **fields: Any,
    ) -> ScoreResult:
        """Score the responses to a query (or chat turns); keywords as in ScoreRequest."""
        request = as_request({"query": query, "responses": responses, **fields})
        return self.score_request(request, timeout=timeout)

    def score_request(
        self, request: reward_pb2.ScoreRequest, *, timeout: float | None = None
    ) -> ScoreResult:
        return convert.response_to_result(self._call(self._stub.Score, request, timeout))

    def score_item(
        self, item: ScoreItem, *, include_samples: bool = False, timeout: float | None = None
    ) -> ScoreResult:
        """Score a validated ScoreItem exactly as the local pipeline would."""
        return self.score_request(
            as_request(item, include_samples=include_samples), timeout=timeout
        )

    def score_batch(
        self, items: Sequence[ItemLike], *, timeout: float | None = None
    ) -> list[BatchOutcome]:
        """Score many items under one deadline: a ScoreResult or a GrmError per item."""
        return batch_outcomes(self._call(self._stub.ScoreBatch, batch_request(items), timeout))
