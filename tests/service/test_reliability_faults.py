"""Faults end to end: the scripted TGI server injecting 429/500 bursts, garbage, wrong score
counts, dropped connections and hangs, under a real sampler server and the aggregator.

Expected: re-samples with new seeds inside the deadline, PARTIAL marked as such, UNAVAILABLE
(or DEADLINE_EXCEEDED) when nothing valid remains, never a made-up reward, every call bounded
by its deadline, and no asyncio tasks left behind afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from grm.client import NO_RETRY, AsyncGrmClient
from grm.core.errors import DeadlineExceededError, GrmError, UnavailableError
from grm.core.types import ScoreStatus
from grm_dev.devtgi import FaultSettings
from tests.support.servers import running_suite, start_sampler
from tests.support.tgi_support import dev_tgi, generate_bodies, tgi_backend

RESPONSES = ["bad one", "good one"]


@contextlib.asynccontextmanager
async def tgi_suite(faults: FaultSettings, **settings: Any) -> AsyncIterator[Any]:
    """Dev TGI server → TgiBackend → sampler server → aggregator, all on loopback."""
    async with (
        dev_tgi(faults=faults) as tgi,
        tgi_backend(tgi.url, request_timeout_s=1.0) as backend,
    ):
        sampler = await start_sampler(backend)  # type: ignore[arg-type]
        try:
            async with running_suite(
                samplers=0, sampler_addresses=[sampler.address], **settings
            ) as suite:
                yield tgi, suite
        finally:
            await sampler.stop(0)


def live_tasks() -> int:
    return len([t for t in asyncio.all_tasks() if not t.done()])


async def settle(baseline: int) -> int:
    for _ in range(40):
        if live_tasks() <= baseline:
            break
        await asyncio.sleep(0.05)
    return live_tasks()


async def test_mixed_fault_storm_gives_rewards_or_clear_errors_within_the_deadline() -> None:
    faults = FaultSettings(
        rate_429=0.1, rate_500=0.1, rate_garbage=0.1, rate_wrong_count=0.1,
        rate_disconnect=0.05, seed=7,
    )  # fmt: skip
    baseline = live_tasks()
    async with tgi_suite(faults) as (tgi, suite):
        async with AsyncGrmClient(suite.address, timeout=8, retry=NO_RETRY) as client:

            async def one(i: int) -> tuple[Any, float]:
                start = time.monotonic()
                try:
                    return await client.score(f"q{i}", RESPONSES, k=4), time.monotonic() - start
                except GrmError as exc:
                    return exc, time.monotonic() - start

            outcomes = await asyncio.gather(*(one(i) for i in range(6)))
        ok = 0
        for outcome, took in outcomes:
            assert took < 8.5
            if isinstance(outcome, GrmError):
                assert isinstance(outcome, UnavailableError | DeadlineExceededError), outcome
                continue
            ok += 1
            assert outcome.rewards == (2.0, 9.0)  # faults never change a reward
            assert outcome.status in (ScoreStatus.COMPLETE, ScoreStatus.PARTIAL)
            if outcome.status is ScoreStatus.PARTIAL:
                assert outcome.k_used < 4
        assert ok >= 4
        # Every request derives its seeds from seed 0: 4 distinct seeds without faults; more
        # here because invalid samples were re-drawn with new seeds (retried 429/500 reuse).
        seeds = [b["parameters"]["seed"] for b in generate_bodies(tgi)]
        assert len(seeds) > 24 and len(set(seeds)) > 4
    assert await settle(baseline) <= baseline


async def test_invalid_samples_without_retries_are_partial_and_marked() -> None:
    faults = FaultSettings(sequence=("garbage", "wrong-count"))
    async with tgi_suite(faults, max_attempts=1) as (_, suite):
        async with AsyncGrmClient(suite.address, timeout=8, retry=NO_RETRY) as client:
            result = await client.score("q", RESPONSES, k=4)
    assert result.status is ScoreStatus.PARTIAL
    assert result.k_valid == 2 and result.invalid_samples == 2
    assert result.rewards == (2.0, 9.0)


async def test_nothing_valid_is_unavailable_never_a_reward() -> None:
    baseline = live_tasks()
    async with tgi_suite(FaultSettings(rate_garbage=1.0)) as (tgi, suite):
        async with AsyncGrmClient(suite.address, timeout=8, retry=NO_RETRY) as client:
            # UNAVAILABLE (not DEADLINE_EXCEEDED): it gave up before the 8 s deadline.
            with pytest.raises(UnavailableError):
                await client.score("q", RESPONSES, k=2)
        assert len(generate_bodies(tgi)) == 2 * 3  # k samples x --max-attempts, new seeds
        assert len({b["parameters"]["seed"] for b in generate_bodies(tgi)}) == 6
    assert await settle(baseline) <= baseline


async def test_a_hung_model_ends_at_the_deadline() -> None:
    baseline = live_tasks()
    async with tgi_suite(FaultSettings(rate_timeout=1.0, hang_s=60)) as (_, suite):
        async with AsyncGrmClient(suite.address, timeout=2, retry=NO_RETRY) as client:
            start = time.monotonic()
            with pytest.raises((DeadlineExceededError, UnavailableError)):
                await client.score("q", RESPONSES, k=2)
            # At the 2 s deadline, not the 60 s hang (3 s of slack for a loaded machine).
            assert time.monotonic() - start < 2 + 3
    assert await settle(baseline) <= baseline


async def test_a_429_and_500_burst_is_absorbed() -> None:
    faults = FaultSettings(sequence=("429", "429", "500", "429", "500", "500"))
    async with tgi_suite(faults) as (tgi, suite):
        async with AsyncGrmClient(suite.address, timeout=8, retry=NO_RETRY) as client:
            result = await client.score("q", RESPONSES, k=4)
    assert result.status is ScoreStatus.COMPLETE and result.rewards == (2.0, 9.0)
    assert len(generate_bodies(tgi)) >= 4 + 6
