"""The aggregator's readiness and model identity, over real servers and channels.

Readiness: the front door is SERVING only while a sampler answers health (and the principle
generator, when the default mode is separate), re-checked every `readiness_interval_s`.
Model identity: the samplers say which model they serve before the aggregator turns SERVING,
so an aggregator that just restarted keys its first request like the last one did; samplers
that disagree are reported and never mixed inside one request.

Time: the checks run every 0.1 s here. Each wait below allows 10 s, far more than the few
intervals and one reconnect backoff (at most 2 s, grm.rpc.server.channel_options) a flip
takes, because the machine running the tests may be loaded; what is asserted is the order of
the transitions, not their speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grm.cache import CacheSettings
from grm.client import AsyncGrmClient
from grm.client._common import NO_RETRY
from grm.core.errors import UnavailableError
from grm.core.types import ModelInfo, PrincipleMode, ScoreStatus
from grm.core.validation import Defaults
from grm.rpc.server import LIVENESS_SERVICE, serve
from grm.services.aggregator.main import Aggregator, AggregatorSettings, build
from grm.services.aggregator.pool import MODEL_MISMATCH_REASON
from tests.support.redis_server import RedisServer, free_port
from tests.support.servers import (
    LOOPBACK,
    RunningService,
    TrackingBackend,
    start_principles,
    start_sampler,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RESPONSES = ["a bad answer", "a good answer"]
WAIT_S = 10.0  # generous: see the module docstring


async def health(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.aio.AioRpcError:
            return -1
    return int(reply.status)


async def until_health(address: str, status: int) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + WAIT_S
    while loop.time() < end:
        if await health(address) == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{address} never reached health status {status}")


@contextlib.asynccontextmanager
async def serving(settings: AggregatorSettings, **kw: Any) -> AsyncIterator[Aggregator]:
    """The aggregator under grm.rpc.server.serve, as `grm serve aggregator` runs it."""
    agg = build(settings, **kw)
    stop = asyncio.Event()
    task = asyncio.ensure_future(serve(agg.server, warm_up=agg.start, close=agg.close, stop=stop))
    for _ in range(200):
        if agg.server.port:
            break
        await asyncio.sleep(0.01)
    try:
        yield agg
    finally:
        stop.set()
        await task


def settings_for(*samplers: str, **kw: Any) -> AggregatorSettings:
    return AggregatorSettings(
        server=replace(LOOPBACK, grace_s=0.5), samplers=samplers, readiness_interval_s=0.1, **kw
    )


async def test_not_serving_until_a_sampler_answers_then_follows_the_last_one() -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    async with serving(settings_for(address)) as agg:
        # No sampler yet: the front door listens but is not ready.
        await until_health(agg.server.address, NOT_SERVING)
        await asyncio.sleep(0.5)  # several checks later, still not
        assert await health(agg.server.address) == NOT_SERVING
        # ...but alive: kubelet's liveness probe must not restart it for a missing sampler
        assert await health(agg.server.address, LIVENESS_SERVICE) == SERVING

        sampler = await start_sampler(server=replace(LOOPBACK, port=port))
        await until_health(agg.server.address, SERVING)
        assert agg.pool.info.model_id == "scripted"  # known before the first request

        await sampler.stop(0)  # the last sampler is gone
        await until_health(agg.server.address, NOT_SERVING)

        sampler = await start_sampler(server=replace(LOOPBACK, port=port))  # it comes back
        try:
            await until_health(agg.server.address, SERVING)
            async with AsyncGrmClient(agg.server.address, timeout=10, retry=NO_RETRY) as c:
                result = await c.score("q", RESPONSES, k=2)
            assert result.rewards == (2.0, 9.0)
        finally:
            await sampler.stop(0)


async def test_a_sampler_whose_backend_is_not_serving_does_not_count() -> None:
    sampler = await start_sampler()
    try:
        async with serving(settings_for(sampler.address)) as agg:
            await until_health(agg.server.address, SERVING)
            await sampler.server.set_serving(False)  # e.g. its TGI went away
            await until_health(agg.server.address, NOT_SERVING)
            await sampler.server.set_serving(True)
            await until_health(agg.server.address, SERVING)
    finally:
        await sampler.stop(0)


async def test_separate_mode_also_needs_the_principle_generator() -> None:
    sampler = await start_sampler()
    principles = await start_principles()
    defaults = Defaults(principle_mode=PrincipleMode.SEPARATE)
    try:
        settings = settings_for(
            sampler.address, principles=(principles.address,), defaults=defaults
        )
        async with serving(settings) as agg:
            await until_health(agg.server.address, SERVING)
            await principles.server.set_serving(False)
            await until_health(agg.server.address, NOT_SERVING)
            assert agg.pool.ready  # the samplers alone are not enough in this mode
            await principles.server.set_serving(True)
            await until_health(agg.server.address, SERVING)
            assert agg.principles is not None and agg.principles.info.model_id == "scripted"
    finally:
        await principles.stop(0)
        await sampler.stop(0)


async def test_joint_mode_serves_without_the_principle_generator() -> None:
    sampler = await start_sampler()
    principles = await start_principles()
    await principles.server.set_serving(False)
    try:
        settings = settings_for(sampler.address, principles=(principles.address,))
        async with serving(settings) as agg:
            await until_health(agg.server.address, SERVING)
    finally:
        await principles.stop(0)
        await sampler.stop(0)


async def test_the_first_request_after_a_restart_is_a_cache_hit(own_redis: RedisServer) -> None:
    sampler = await start_sampler()
    cache = CacheSettings(redis_url=own_redis.url, prefix="restart-test")
    settings = settings_for(sampler.address, cache=cache)
    try:
        async with serving(settings) as agg:
            await until_health(agg.server.address, SERVING)
            async with AsyncGrmClient(agg.server.address, timeout=10, retry=NO_RETRY) as c:
                first = await c.score("q", RESPONSES, k=4)
        drawn = sampler.backend.finished
        assert first.status is ScoreStatus.COMPLETE and drawn == 4

        # A new aggregator process (nothing in memory): its very first request is the repeat.
        async with serving(settings) as agg:
            await until_health(agg.server.address, SERVING)
            async with AsyncGrmClient(agg.server.address, timeout=10, retry=NO_RETRY) as c:
                again = await c.score("q", RESPONSES, k=4)
        assert sampler.backend.finished == drawn  # 0 engine calls
        assert again.rewards == first.rewards and again.model == first.model
    finally:
        await sampler.stop(0)


async def started(model_id: str) -> RunningService:
    return await start_sampler(TrackingBackend(model_id=model_id))


async def test_samplers_that_disagree_are_reported_and_never_mixed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    majority = [await started("model-a"), await started("model-a")]
    other = await started("model-b")
    try:
        with caplog.at_level(logging.WARNING, logger="grm.services.aggregator.pool"):
            async with serving(settings_for(*(s.address for s in [*majority, other]))) as agg:
                await until_health(agg.server.address, SERVING)
                assert agg.pool.info.model_id == "model-a"
                assert agg.pool.mismatched_count == 1 and agg.pool.ready_count == 2
                async with AsyncGrmClient(agg.server.address, timeout=10) as c:
                    result = await c.score("q", RESPONSES, k=8, include_samples=True)
        assert result.model is not None and result.model.model_id == "model-a"
        assert result.k_used == 8
        assert {s.sampler for s in result.samples} == {s.address for s in majority}
        assert other.backend.finished == 0
        warned = [r.getMessage() for r in caplog.records if "disagree" in r.getMessage()]
        assert len(warned) == 1 and other.address in warned[0] and "model-b" in warned[0]
    finally:
        for s in [*majority, other]:
            await s.stop(0)


async def test_a_sampler_that_changes_model_mid_flight_is_never_voted() -> None:
    sampler = await started("model-a")
    try:
        settings = replace(settings_for(sampler.address), readiness_interval_s=3600.0)
        async with serving(settings) as agg:
            await until_health(agg.server.address, SERVING)
            assert agg.pool.info.model_id == "model-a"
            # The sampler now serves another model; the aggregator has not probed it again.
            sampler.backend.info = ModelInfo("model-b", "r1", "scripted")
            async with AsyncGrmClient(agg.server.address, timeout=10, retry=NO_RETRY) as c:
                with pytest.raises(UnavailableError, match=MODEL_MISMATCH_REASON):
                    await c.score("q", RESPONSES, k=2)
                # The reply taught the pool the new model: the next request is pinned to it.
                assert agg.pool.info.model_id == "model-b"
                result = await c.score("q", RESPONSES, k=2)
        assert result.model is not None and result.model.model_id == "model-b"
    finally:
        await sampler.stop(0)
