"""The asyncio client: for training loops that already run an event loop."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
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


class AsyncGrmClient:
    """RewardService over one channel; every call has a deadline and bounded retries.

    Failures raise the GrmError subclass of their status (InvalidArgumentError, ...);
    a failed score is an exception, never a reward.
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
            grpc.aio.secure_channel(target, credentials, options=options)
            if credentials
            else grpc.aio.insecure_channel(target, options=options)
        )
        self._stub = reward_pb2_grpc.RewardServiceStub(self._channel)

    async def __aenter__(self) -> AsyncGrmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(
        self, method: Callable[..., Awaitable[T]], request: Any, time_limit: float | None
    ) -> T:
        time_limit = self.timeout if time_limit is None else time_limit
        deadline = None if time_limit is None else time.monotonic() + time_limit
        attempt = 0
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DeadlineExceededError(f"no time left after {attempt} attempt(s)")
            try:
                return await method(request, timeout=left)
            except grpc.aio.AioRpcError as exc:
                if not self.retry.should_retry(exc.code(), attempt):
                    raise error_of(exc) from exc
                pause = self.retry.backoff(attempt, self._rng)
                if deadline is not None and time.monotonic() + pause >= deadline:
                    raise error_of(exc) from exc
                attempt += 1
                await asyncio.sleep(pause)

    async def score(
        self,
        query: str | Sequence[Any],
        responses: Sequence[str],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, as in GrmClient
        **fields: Any,
    ) -> ScoreResult:
        """Score the responses to a query (or chat turns); keywords as in ScoreRequest."""
        request = as_request({"query": query, "responses": responses, **fields})
        return await self.score_request(request, timeout=timeout)

    async def score_request(
        self,
        request: reward_pb2.ScoreRequest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline
    ) -> ScoreResult:
        reply = await self._call(self._stub.Score, request, timeout)
        return convert.response_to_result(reply)

    async def score_item(
        self,
        item: ScoreItem,
        *,
        include_samples: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline
    ) -> ScoreResult:
        """Score a validated ScoreItem exactly as the local pipeline would."""
        return await self.score_request(
            as_request(item, include_samples=include_samples), timeout=timeout
        )

    async def score_batch(
        self,
        items: Sequence[ItemLike],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline
    ) -> list[BatchOutcome]:
        """Score many items under one deadline: a ScoreResult or a GrmError per item."""
        reply = await self._call(self._stub.ScoreBatch, batch_request(items), timeout)
        return batch_outcomes(reply)
