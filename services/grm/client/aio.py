"""The asyncio client: for training loops that already run an event loop."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc

from grm.client._common import (
    BatchOutcome,
    ItemLike,
    RetryPolicy,
    as_request,
    batch_outcomes,
    error_of,
)
from grm.client.batching import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_BATCH_ITEMS,
    BatchCall,
    BatchRun,
    ScoredItem,
)
from grm.core.errors import DeadlineExceededError, GrmError
from grm.core.types import ScoreItem, ScoreResult
from grm.rpc import convert
from grm.rpc.security import PLAINTEXT, ClientSecurity, aio_channel
from grm.rpc.server import MiB, channel_options
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
        security: ClientSecurity | None = None,
        token: str | None = None,
    ) -> None:
        """`security` (grm.rpc.security.ClientSecurity): TLS / mutual TLS and the bearer token;
        `credentials` replace its TLS settings, `token` its token."""
        self.target = target
        self.timeout = timeout
        self.max_message_bytes = max_message_mb * MiB  # score_many packs calls up to this
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        options = channel_options(max_message_mb)
        security = (security or PLAINTEXT).with_token(token)
        self._channel = aio_channel(target, security, options=options, credentials=credentials)
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
        latency_budget_ms: int = 0,
        **fields: Any,
    ) -> ScoreResult:
        """Score the responses to a query (or chat turns); keywords as in ScoreRequest
        (`reference=` a reference answer the judge is shown; unset sampling fields take the
        server's decoding profile).

        `timeout` (s) is this call's gRPC deadline, retries included (None: the client's);
        `latency_budget_ms` lets the server vote over the samples done by then (0: none).
        """
        request = as_request(
            {"query": query, "responses": responses, "latency_budget_ms": latency_budget_ms}
            | fields
        )
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
        latency_budget_ms: int | None = None,
    ) -> list[BatchOutcome]:
        """Score many items under one deadline: a ScoreResult or a GrmError per item.

        One call: it must fit the message limit and --max-batch-items (score_many splits).
        `latency_budget_ms` applies to the items that carry no budget of their own.
        """
        run = BatchRun(
            items,
            max_bytes=2**62,
            max_items=max(1, len(items)),
            latency_budget_ms=latency_budget_ms,
        )  # one call; an item that cannot be sent (e.g. unencodable text) is its own error
        for call in run.calls:
            reply = await self._call(self._stub.ScoreBatch, call.request, timeout)
            run.record(call, batch_outcomes(reply))
        return run.outcomes()

    async def score_many(
        self,
        items: Iterable[ItemLike],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the deadline of each ScoreBatch
        latency_budget_ms: int | None = None,
        max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS,
        max_message_bytes: int | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> list[ScoredItem]:
        """Score any number of items: one ScoredItem per item, in input order.

        Items are split into ScoreBatch calls within `max_message_bytes` (default: this
        client's max_message_mb) and `max_batch_items` (match the server's); up to
        `concurrency` calls run at once, each with its own `timeout` and retries. Failures
        are per item (a failed call fails its items only); an item too large for any call
        is an INVALID_ARGUMENT of its own.
        """
        run = BatchRun(
            items,
            max_bytes=max_message_bytes or self.max_message_bytes,
            max_items=max_batch_items,
            latency_budget_ms=latency_budget_ms,
        )
        limit = asyncio.Semaphore(max(1, concurrency))
        time_limit = self.timeout if timeout is None else timeout

        async def send(call: BatchCall) -> None:
            async with limit:
                deadline = None if time_limit is None else time.monotonic() + time_limit
                attempt = 0
                while True:
                    left = None if deadline is None else deadline - time.monotonic()
                    try:
                        reply = await self._call(self._stub.ScoreBatch, call.request, left)
                    except GrmError as exc:
                        run.record(call, exc)
                    else:
                        run.record(call, batch_outcomes(reply))
                    again = run.retry(call, self.retry, attempt)
                    if again is None:
                        return
                    pause = self.retry.backoff(attempt, self._rng)
                    if deadline is not None and time.monotonic() + pause >= deadline:
                        return  # no time for another try: the items keep their status
                    await asyncio.sleep(pause)
                    call, attempt = again, attempt + 1

        await asyncio.gather(*(send(call) for call in run.calls))
        return run.results()
