"""The blocking client: for scripts and training code without an event loop."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
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
from grm.client.batching import DEFAULT_MAX_BATCH_ITEMS, BatchCall, BatchRun, ScoredItem
from grm.core.errors import DeadlineExceededError, GrmError
from grm.core.types import ScoreItem, ScoreResult
from grm.rpc import convert
from grm.rpc.security import PLAINTEXT, ClientSecurity, sync_channel
from grm.rpc.server import MiB, channel_options
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
        self._channel = sync_channel(target, security, options=options, credentials=credentials)
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
        self,
        items: Sequence[ItemLike],
        *,
        timeout: float | None = None,
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
            reply = self._call(self._stub.ScoreBatch, call.request, timeout)
            run.record(call, batch_outcomes(reply))
        return run.outcomes()

    def score_many(
        self,
        items: Iterable[ItemLike],
        *,
        timeout: float | None = None,
        latency_budget_ms: int | None = None,
        max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS,
        max_message_bytes: int | None = None,
    ) -> list[ScoredItem]:
        """Score any number of items: one ScoredItem per item, in input order.

        Items are split into ScoreBatch calls within `max_message_bytes` (default: this
        client's max_message_mb) and `max_batch_items` (match the server's), sent one after
        another, each with its own `timeout` and retries. Failures are per item (a failed
        call fails its items only); an item too large for any call is an INVALID_ARGUMENT
        of its own. AsyncGrmClient.score_many sends calls concurrently.
        """
        run = BatchRun(
            items,
            max_bytes=max_message_bytes or self.max_message_bytes,
            max_items=max_batch_items,
            latency_budget_ms=latency_budget_ms,
        )
        time_limit = self.timeout if timeout is None else timeout
        for first in run.calls:
            call: BatchCall | None = first
            deadline = None if time_limit is None else time.monotonic() + time_limit
            attempt = 0
            while call is not None:
                left = None if deadline is None else deadline - time.monotonic()
                try:
                    reply = self._call(self._stub.ScoreBatch, call.request, left)
                except GrmError as exc:
                    run.record(call, exc)
                else:
                    run.record(call, batch_outcomes(reply))
                again = run.retry(call, self.retry, attempt)
                if again is None:
                    break
                pause = self.retry.backoff(attempt, self._rng)
                if deadline is not None and time.monotonic() + pause >= deadline:
                    break  # no time for another try: the items keep their status
                time.sleep(pause)
                call, attempt = again, attempt + 1
        return run.results()
