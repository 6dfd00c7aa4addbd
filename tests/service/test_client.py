"""The client SDK against real servers: retries (transient codes only, jittered backoff),
deadlines across retries, typed results and errors, sync and asyncio."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import grpc
import pytest

from grm.client import NO_RETRY, AsyncGrmClient, GrmClient, RetryPolicy
from grm.core.errors import (
    DeadlineExceededError,
    GrmError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)
from grm.core.types import ScoreResult, ScoreStatus
from grm.rpc.server import GrmServer
from grm.v1 import common_pb2, reward_pb2, reward_pb2_grpc
from tests.support.servers import LOOPBACK, running_suite

FAST = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


class Flaky(reward_pb2_grpc.RewardServiceServicer):
    """Fails the first `failures` calls with `error`, then answers; counts calls."""

    def __init__(self, error: GrmError | None, failures: int, delay: float = 0.0) -> None:
        self.error = error
        self.failures = failures
        self.delay = delay
        self.calls = 0
        self.timeouts: list[float | None] = []

    async def Score(self, request, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        self.timeouts.append(context.time_remaining())
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None and self.calls <= self.failures:
            raise self.error
        return reward_pb2.ScoreResponse(
            rewards=[7.0], votes=[7], k_requested=1, k_used=1, k_valid=1,
            status=reward_pb2.SCORE_STATUS_COMPLETE, best=[0],
            aggregation=common_pb2.AGGREGATION_VOTE,
        )  # fmt: skip


async def serve_flaky(flaky: Flaky) -> GrmServer:
    server = GrmServer(
        LOOPBACK,
        register=[lambda s: reward_pb2_grpc.add_RewardServiceServicer_to_server(flaky, s)],
        service_names=["grm.v1.RewardService"],
    )
    await server.start()
    return server


@pytest.mark.parametrize(
    "error", [UnavailableError("restarting"), ResourceExhaustedError("queue full")]
)
async def test_transient_errors_are_retried_until_success(error: GrmError) -> None:
    flaky = Flaky(error, failures=2)
    server = await serve_flaky(flaky)
    try:
        async with AsyncGrmClient(server.address, retry=FAST, timeout=5) as client:
            result = await client.score("q", ["a"])
    finally:
        await server.stop(0)
    assert flaky.calls == 3
    assert result.rewards == (7.0,) and result.status is ScoreStatus.COMPLETE


async def test_retries_stop_after_max_attempts_with_the_typed_error() -> None:
    flaky = Flaky(UnavailableError("down"), failures=100)
    server = await serve_flaky(flaky)
    try:
        async with AsyncGrmClient(server.address, retry=FAST, timeout=5) as client:
            with pytest.raises(UnavailableError, match="down"):
                await client.score("q", ["a"])
    finally:
        await server.stop(0)
    assert flaky.calls == 4


async def test_invalid_argument_is_never_retried() -> None:
    flaky = Flaky(InvalidArgumentError("bad", field="k"), failures=100)
    server = await serve_flaky(flaky)
    try:
        async with AsyncGrmClient(server.address, retry=FAST, timeout=5) as client:
            with pytest.raises(InvalidArgumentError) as info:
                await client.score("q", ["a"])
    finally:
        await server.stop(0)
    assert flaky.calls == 1
    assert info.value.field == "k" and str(info.value) == "k: bad"


class FixedJitter(random.Random):
    """Jitter that always takes the same share of the cap, so pauses are known exactly."""

    def uniform(self, a: float, b: float) -> float:
        return a + 0.5 * (b - a)


async def test_all_tries_share_one_deadline() -> None:
    # Every try fails with UNAVAILABLE; each pause is exactly 0.25 s (half of a 0.5 s cap)
    # and 100 tries are allowed: without one shared deadline the call would run ~25 s. With
    # it, tries start at 0, 0.25, ..., 1.75 s at the latest and the client gives up when the
    # next pause would end at or past 2 s. The bounds below follow from that logic; a loaded
    # machine only delays each try, which can mean fewer tries, never more.
    flaky = Flaky(UnavailableError("down"), failures=1000)
    server = await serve_flaky(flaky)
    policy = RetryPolicy(max_attempts=100, initial_backoff_s=0.5, multiplier=1.0)
    sent: list[float | None] = []
    try:
        async with AsyncGrmClient(server.address, retry=policy, rng=FixedJitter()) as c:
            stub_score = c._stub.Score

            async def recording(request: object, *, timeout: float | None) -> object:  # noqa: ASYNC109 - the stub's own keyword
                sent.append(timeout)  # what the client gives each try, on its own clock
                return await stub_score(request, timeout=timeout)

            c._stub.Score = recording  # type: ignore[method-assign]
            started = time.monotonic()
            with pytest.raises(UnavailableError):
                await c.score("q", ["a"], timeout=2.0)
            elapsed = time.monotonic() - started
    finally:
        await server.stop(0)
    assert 1 <= flaky.calls == len(sent) <= 8
    # Each try is sent with what is left of the one deadline, never a fresh one, and a full
    # pause lies between consecutive tries (both on the client's clock: no network in it).
    assert all(t is not None and t <= 2.0 for t in sent)
    assert all(later <= earlier - 0.249 for earlier, later in itertools.pairwise(sent))
    # The server saw the same shrinking deadline (it adds transfer delays, so only bounded).
    assert all(t is not None and t <= 2.0 for t in flaky.timeouts)
    # Gave up at the deadline, not 25 s later (3 s of slack: scheduling on a loaded machine).
    assert elapsed < 2.0 + 3.0


async def test_a_call_slower_than_its_deadline_raises_deadline_exceeded() -> None:
    flaky = Flaky(None, failures=0, delay=1.0)
    server = await serve_flaky(flaky)
    try:
        async with AsyncGrmClient(server.address, retry=FAST) as client:
            with pytest.raises(DeadlineExceededError):
                await client.score("q", ["a"], timeout=0.2)
    finally:
        await server.stop(0)
    assert flaky.calls == 1  # DEADLINE_EXCEEDED is not retried


async def test_unreachable_server_is_unavailable_after_retries() -> None:
    async with AsyncGrmClient("127.0.0.1:1", retry=FAST, timeout=5) as client:
        with pytest.raises(UnavailableError):
            await client.score("q", ["a"])


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1.0, multiplier=2.0)
    rng = random.Random(0)
    for retry, cap in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        pauses = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(0 <= p <= cap for p in pauses)
        assert max(pauses) > 0.8 * cap and min(pauses) < 0.2 * cap  # spread, not fixed
    assert policy.should_retry(grpc.StatusCode.UNAVAILABLE, 0)
    assert policy.should_retry(grpc.StatusCode.RESOURCE_EXHAUSTED, 2)
    assert not policy.should_retry(grpc.StatusCode.UNAVAILABLE, 3)  # 4 attempts in all
    for name in ("INVALID_ARGUMENT", "INTERNAL", "DEADLINE_EXCEEDED", "FAILED_PRECONDITION"):
        assert not policy.should_retry(grpc.StatusCode[name], 0)
    assert not NO_RETRY.should_retry(grpc.StatusCode.UNAVAILABLE, 0)


async def test_sync_client_scores_and_batches_through_the_suite() -> None:
    async with running_suite() as suite:

        def use_sync_client() -> tuple[ScoreResult, list]:
            with GrmClient(suite.address, timeout=10) as client:
                one = client.score(
                    [{"role": "user", "content": "q"}], ["good", "bad"], k=2, include_samples=True
                )
                batch = client.score_batch(
                    [
                        {"query": "q", "responses": ["bad", "good"], "k": 2},
                        {"query": "", "responses": ["x"]},
                    ]
                )
            return one, batch

        one, batch = await asyncio.to_thread(use_sync_client)
    assert one.rewards == (9.0, 2.0) and len(one.samples) == 2
    assert isinstance(batch[0], ScoreResult) and batch[0].rewards == (2.0, 9.0)
    assert isinstance(batch[1], InvalidArgumentError) and batch[1].field == "items[1].query"


async def test_sync_client_retries_too() -> None:
    flaky = Flaky(UnavailableError("restarting"), failures=1)
    server = await serve_flaky(flaky)
    try:

        def call() -> ScoreResult:
            with GrmClient(server.address, retry=FAST, timeout=5) as client:
                return client.score("q", ["a"])

        result = await asyncio.to_thread(call)
    finally:
        await server.stop(0)
    assert flaky.calls == 2 and result.rewards == (7.0,)
