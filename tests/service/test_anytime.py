"""Latency budget end to end: k planner + anytime voting over real servers on loopback.

Two scripted samplers, 4 slots each (8 free in all), 1 s per sample. k = 32 takes four
waves (~4 s); a 1 s budget fits at most one. The time bounds sit between the budget and the
four waves, far from both, so a loaded machine cannot move a result across them.
"""

from __future__ import annotations

import asyncio
import time

from grm.client import NO_RETRY, AsyncGrmClient
from grm.core.types import ScoreStatus
from tests.support.servers import running_suite

RESPONSES = ["a good answer", "a poor answer"]
DELAY = 1.0
FULL_S = 4 * DELAY  # all 32 samples, four waves
SLACK_S = 1.5  # scheduling noise on a loaded 2-core machine; still well below FULL_S


async def _timed(client: AsyncGrmClient, **fields: object) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = await client.score("q", RESPONSES, **fields)
    return time.perf_counter() - t0, result


async def test_budget_cuts_k_and_a_large_budget_gets_all() -> None:
    async with (
        running_suite(delay=DELAY, capacity=4) as suite,
        AsyncGrmClient(suite.address, timeout=20, retry=NO_RETRY) as client,
    ):
        # First request: nothing measured yet, so k_planned = 32 and anytime voting cuts it.
        took, r = await _timed(client, k=32, latency_budget_ms=1000)
        assert took < 1.0 + SLACK_S < FULL_S, took
        assert 1 <= r.k_used < 32 and r.k_requested == 32
        assert r.status is ScoreStatus.PARTIAL and "budget" in r.status_detail
        assert r.best == (0,)
        await asyncio.sleep(0.1)  # cancelled generations reach the backends
        assert sum(s.backend.cancelled for s in suite.samplers) > 0

        # Later requests: the planner may plan k down once it has measured the samplers
        # (its choices are unit-tested in test_planner.py); either way the budget holds.
        took, r = await _timed(client, k=32, latency_budget_ms=1000)
        assert took < 1.0 + SLACK_S < FULL_S, took
        assert 1 <= r.k_used <= r.k_planned <= 32 and r.k_used < 32, r
        assert "budget" in r.status_detail

        took, r = await _timed(client, k=32, latency_budget_ms=9000, seed=7)
        assert FULL_S * 0.9 <= took < 9.0, took
        assert r.k_used == 32 and r.k_planned == 32 and r.status is ScoreStatus.COMPLETE


async def test_no_valid_sample_by_the_budget_waits_for_the_first_one() -> None:
    async with (
        running_suite(delay=DELAY, capacity=4) as suite,
        AsyncGrmClient(suite.address, timeout=10, retry=NO_RETRY) as client,
    ):
        took, r = await _timed(client, k=4, latency_budget_ms=50)
        assert DELAY * 0.9 <= took < DELAY + SLACK_S, took
        # the first valid samples arrive together: all of them are used, and the miss is said
        assert r.k_used >= 1
        assert r.status is (ScoreStatus.COMPLETE if r.k_used == 4 else ScoreStatus.PARTIAL)
        assert "budget 50 ms missed" in r.status_detail


async def test_without_a_budget_all_k_are_awaited() -> None:
    async with (
        running_suite(delay=0.05, capacity=4) as suite,
        AsyncGrmClient(suite.address, timeout=10, retry=NO_RETRY) as client,
    ):
        r = await client.score("q", RESPONSES, k=16)
        assert r.k_used == 16 and r.k_planned == 16 and r.status is ScoreStatus.COMPLETE
