"""The aggregator with its cache on a real `redis-server`: results, samples (incremental k), outage.

Real servers on loopback port 0: redis-server, two scripted samplers, a principle generator and
the aggregator; requests go through a real channel and the ScoreResponse reports cache usage.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import grpc

from grm.cache import CacheSettings
from grm.services.aggregator.main import add_arguments, build_settings
from grm.v1 import reward_pb2, reward_pb2_grpc
from tests.support.redis_server import RedisServer
from tests.support.servers import Suite, running_suite

RESPONSES = ["a good answer", "a bad answer"]


def generated(suite: Suite) -> int:
    """Generations the samplers' backends finished so far."""
    return sum(s.backend.finished for s in suite.samplers)


async def score(
    suite: Suite, k: int, *, query: str = "Which answer is right?", responses: Sequence[str] = ()
) -> reward_pb2.ScoreResponse:
    async with grpc.aio.insecure_channel(suite.address) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        request = reward_pb2.ScoreRequest(query=query, responses=responses or RESPONSES, k=k)
        return await stub.Score(request, timeout=10)


def cache_settings(server: RedisServer) -> CacheSettings:
    return CacheSettings(redis_url=server.url, prefix="wiring-test", retry_after_s=0.2)


async def test_a_repeated_score_is_served_from_redis(own_redis: RedisServer) -> None:
    async with running_suite(cache=cache_settings(own_redis)) as suite:
        first = await score(suite, 4)
        assert first.status == reward_pb2.SCORE_STATUS_COMPLETE
        assert not first.cache.result_hit and first.cache.samples_generated == 4
        assert generated(suite) == 4
        second = await score(suite, 4)  # every sample is in Redis: no generation
        assert second.cache.samples_reused == 4 and second.cache.samples_generated == 0
        third = await score(suite, 4)  # and now the whole result is
        assert third.cache.result_hit
        assert generated(suite) == 4
        for later in (second, third):
            assert list(later.rewards) == list(first.rewards)
            assert list(later.votes) == list(first.votes)
    keys = own_redis.client().keys("wiring-test:*")
    assert any(b":sample:" in k for k in keys) and any(b":result:" in k for k in keys)


async def test_k8_after_k4_draws_only_four_new_samples(own_redis: RedisServer) -> None:
    async with running_suite(cache=cache_settings(own_redis)) as suite:
        await score(suite, 4)
        assert generated(suite) == 4
        more = await score(suite, 8)
        assert more.k_used == 8 and more.status == reward_pb2.SCORE_STATUS_COMPLETE
        assert more.cache.samples_reused == 4 and more.cache.samples_generated == 4
        assert generated(suite) == 8


async def test_scoring_goes_on_when_redis_is_killed(own_redis: RedisServer) -> None:
    async with running_suite(cache=cache_settings(own_redis)) as suite:
        await score(suite, 2)
        own_redis.kill()
        for i in range(3):  # a new query each time: all generated, none an error
            reply = await score(suite, 2, query=f"question {i}")
            assert reply.status == reward_pb2.SCORE_STATUS_COMPLETE and reply.k_used == 2
            assert reply.cache.samples_generated == 2
        assert suite.aggregator.cache is not None
        assert suite.aggregator.cache.stats.outages >= 1


def test_redis_url_flag_and_environment(own_redis: RedisServer) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = build_settings(
        parser.parse_args(["--samplers", "h:1", "--redis-url", own_redis.url]),
        {"GRM_CACHE_PREFIX": "tenant-a", "GRM_REDIS_PASSWORD": "s3cret"},
    )
    assert flags.cache is not None and flags.cache.redis_url == own_redis.url
    assert flags.cache.prefix == "tenant-a" and flags.cache.redis_password == "s3cret"
    env = build_settings(
        parser.parse_args(["--samplers", "h:1"]), {"GRM_REDIS_URL": "redis://r:6379/0"}
    )
    assert env.cache is not None and env.cache.redis_url == "redis://r:6379/0"
    memory = build_settings(parser.parse_args(["--samplers", "h:1"]), {})
    assert memory.cache is not None and not memory.cache.redis_url  # in-memory LRU
    off = build_settings(parser.parse_args(["--samplers", "h:1", "--cache", "false"]), {})
    assert off.cache is None
