"""Overload: the aggregator's admission limit answers RESOURCE_EXHAUSTED at once, not late.

Real servers on loopback with a slow scripted model; only the model is a test double.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from grm.client import NO_RETRY, AsyncGrmClient, RetryPolicy
from grm.core.errors import ResourceExhaustedError
from grm.rpc.server import channel_options
from grm.services.aggregator.admission import Admission, AdmissionLimits
from grm.services.aggregator.main import OPTIONS, build_settings
from grm.v1 import reward_pb2, reward_pb2_grpc
from tests.support.servers import running_suite

RESPONSES = ["bad one", "good one"]
SLOW_S = 1.0


def request(i: int, k: int = 1) -> reward_pb2.ScoreRequest:
    return reward_pb2.ScoreRequest(query=f"question {i}", responses=RESPONSES, k=k)


async def timed(call: asyncio.Future | object) -> tuple[grpc.StatusCode, float]:
    start = time.monotonic()
    try:
        await call  # type: ignore[misc]
        code = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
    return code, time.monotonic() - start


async def test_burst_beyond_the_limit_is_rejected_at_once() -> None:
    limits = AdmissionLimits(max_inflight_requests=2, max_queued_samples=0)
    async with (
        running_suite(delay=SLOW_S, admission=limits) as suite,
        grpc.aio.insecure_channel(suite.address, options=channel_options()) as channel,
    ):
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        first = [asyncio.ensure_future(timed(stub.Score(request(i), timeout=10))) for i in (0, 1)]
        await asyncio.sleep(0.3)  # both admitted and waiting on the slow model
        rest = await asyncio.gather(*(timed(stub.Score(request(i), timeout=10)) for i in range(4)))
        for code, _ in rest:
            # Rejected, not queued: a queued request would be served once a slot frees.
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        admitted = await asyncio.gather(*first)
        assert [code for code, _ in admitted] == [grpc.StatusCode.OK] * 2
        # Capacity comes back once they finish.
        reply = await stub.Score(request(9), timeout=10)
        assert list(reply.rewards) == [2.0, 9.0]


async def test_six_at_once_exactly_the_limit_is_served() -> None:
    limits = AdmissionLimits(max_inflight_requests=2, max_queued_samples=0)
    async with (
        running_suite(delay=SLOW_S, admission=limits) as suite,
        grpc.aio.insecure_channel(suite.address, options=channel_options()) as channel,
    ):
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        outcomes = await asyncio.gather(
            *(timed(stub.Score(request(i), timeout=10)) for i in range(6))
        )
        codes = [code for code, _ in outcomes]
        assert codes.count(grpc.StatusCode.OK) == 2
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4
        assert all(t < 1.0 for c, t in outcomes if c is grpc.StatusCode.RESOURCE_EXHAUSTED)


async def test_queued_samples_limit_counts_k() -> None:
    limits = AdmissionLimits(max_inflight_requests=0, max_queued_samples=4)
    async with (
        running_suite(delay=SLOW_S, admission=limits) as suite,
        grpc.aio.insecure_channel(suite.address, options=channel_options()) as channel,
    ):
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        big = asyncio.ensure_future(timed(stub.Score(request(0, k=4), timeout=10)))
        await asyncio.sleep(0.3)
        code, _ = await timed(stub.Score(request(1, k=1), timeout=10))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED  # refused, not queued
        assert (await big)[0] is grpc.StatusCode.OK


async def test_batch_counts_its_items_and_reports_the_rest_in_place() -> None:
    limits = AdmissionLimits(max_inflight_requests=2, max_queued_samples=0)
    async with (
        running_suite(delay=SLOW_S, admission=limits) as suite,
        grpc.aio.insecure_channel(suite.address, options=channel_options()) as channel,
    ):
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        batch = reward_pb2.ScoreBatchRequest(items=[request(i) for i in range(4)])
        pending = asyncio.ensure_future(stub.ScoreBatch(batch, timeout=10))
        await asyncio.sleep(0.3)
        # The batch's two admitted items fill the limit: a single Score is refused at once.
        code, _ = await timed(stub.Score(request(7), timeout=10))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED  # refused, not queued
        reply = await pending
        kinds = [item.WhichOneof("outcome") for item in reply.items]
        assert kinds == ["result", "result", "error", "error"]
        assert all(list(it.result.rewards) == [2.0, 9.0] for it in reply.items[:2])
        exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert all(it.error.code == exhausted for it in reply.items[2:])


async def test_client_sdk_retries_resource_exhausted_within_its_deadline() -> None:
    limits = AdmissionLimits(max_inflight_requests=1, max_queued_samples=0)
    retry = RetryPolicy(max_attempts=8, initial_backoff_s=0.2, max_backoff_s=0.6)
    async with running_suite(delay=0.4, admission=limits) as suite:
        async with AsyncGrmClient(suite.address, timeout=10, retry=retry) as client:
            results = await asyncio.gather(
                *(client.score(f"q{i}", RESPONSES, k=1) for i in range(3))
            )
        assert [r.rewards for r in results] == [(2.0, 9.0)] * 3
        async with AsyncGrmClient(suite.address, timeout=10, retry=NO_RETRY) as client:
            hold = asyncio.ensure_future(client.score("hold", RESPONSES, k=1))
            await asyncio.sleep(0.2)
            with pytest.raises(ResourceExhaustedError):
                await client.score("refused", RESPONSES, k=1)
            await hold


def test_admission_counts_and_settings() -> None:
    adm = Admission(AdmissionLimits(max_inflight_requests=2, max_queued_samples=10))
    with adm.admit(1, 8):
        with pytest.raises(ResourceExhaustedError):
            adm.reserve(1, 3)  # samples would exceed 10
        with adm.admit(1, 2):
            assert (adm.inflight, adm.samples) == (2, 10)
            with pytest.raises(ResourceExhaustedError):
                adm.reserve(1, 0)
    assert (adm.inflight, adm.samples, adm.rejected) == (0, 0, 2)
    with adm.admit(1, 50):  # an idle server takes one request whatever its k
        pass

    import argparse

    from grm.rpc.options import add_options

    parser = argparse.ArgumentParser()
    add_options(parser, OPTIONS)
    args = parser.parse_args(["--samplers", "a:1", "--max-inflight-requests", "7"])
    settings = build_settings(args, {"GRM_MAX_QUEUED_SAMPLES": "99"})
    assert settings.admission == AdmissionLimits(max_inflight_requests=7, max_queued_samples=99)
