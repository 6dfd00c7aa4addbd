"""The aggregator's scoring logic: one item or a batch under one deadline (no gRPC here).

A failed item is an error, never a reward: the batch keeps going and reports it in place.
With a ResultCache, a repeated request is answered from the cache (identical concurrent ones
are computed once); each item reports what it got from the cache (grm.cache.CacheUsage).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grm import deadlines, telemetry
from grm.aggregator.pool import MIN_CALL_S
from grm.cache import CacheUsage, ResultCache, track_usage
from grm.cache.keys import model_known
from grm.core.errors import DeadlineExceededError, GrmError
from grm.core.planner import KPlanner
from grm.core.types import ModelInfo, ScoreItem, ScoreResult
from grm.pipeline import ScoringPipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """One scored item and what it got from the cache."""

    result: ScoreResult
    cache: CacheUsage


ItemOutcome = Scored | GrmError


class RewardScorer:
    """Runs the pipeline under the caller's deadline and the item's latency budget."""

    def __init__(
        self,
        pipeline: ScoringPipeline,
        *,
        batch_concurrency: int = 8,
        results: ResultCache | None = None,
        principles_model: Callable[[], ModelInfo] | None = None,
        planner: KPlanner | None = None,
        free_capacity: Callable[[], int] | None = None,
        pool_load: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.pipeline = pipeline
        # k planner (requests with a latency budget): measured latency + free sampler slots,
        # or better the pool's (capacity, in flight + queued): work queued ahead counts.
        self.planner = planner
        self.free_capacity = free_capacity
        self.pool_load = pool_load
        self.batch_concurrency = max(1, batch_concurrency)
        self.results = results
        self.principles_model = principles_model  # the principle generator's model, when known

    def plan_k(self, item: ScoreItem) -> int:
        """The k to draw: the planner's pick under the item's budget, else item.k."""
        if self.planner is None or not item.latency_budget_ms:
            return item.k
        if self.pool_load is not None:
            capacity, busy = self.pool_load()
            plan = self.planner.plan(
                item.k, item.latency_budget_ms, capacity - busy, capacity=capacity
            )
        else:
            free = self.free_capacity() if self.free_capacity is not None else 1
            plan = self.planner.plan(item.k, item.latency_budget_ms, free)
        if plan.deficit:
            telemetry.metrics().k_deficit.add(plan.deficit)
        return plan.k_planned

    async def score(self, item: ScoreItem) -> Scored:
        """Score one item; a deadline that ran out with nothing to vote on is DEADLINE_EXCEEDED.

        The latency budget does not shorten the deadline: the pipeline votes at the budget
        over what finished (anytime) and waits past it only while no sample is valid yet.
        """
        with telemetry.score_request(item) as rec, track_usage() as usage:
            # Sampling ends a reserve before the caller's deadline: voting and the reply
            # (with whatever samples finished) must still reach the caller in time.
            with deadlines.scope(deadlines.downstream_timeout(deadlines.remaining())):
                result = rec.done(await self._score(item), usage)
        return Scored(result, usage)

    async def _compute(self, item: ScoreItem) -> ScoreResult:
        k_planned = self.plan_k(item)
        if self.results is None:
            return await self.pipeline.score(item, k_planned=k_planned)
        if self.principles_model is not None:
            model = self.principles_model()  # learned from the generator's replies
            self.results.principles_model = model if model_known(model) else None
        return await self.results.get_or_compute(
            item, self.pipeline.sampler.info, lambda: self.pipeline.score(item, k_planned=k_planned)
        )

    async def _score(self, item: ScoreItem) -> ScoreResult:
        try:
            return await self._compute(item)
        except GrmError as exc:
            # The pool stops calling samplers MIN_CALL_S before the deadline.
            if deadlines.expired(MIN_CALL_S) and not isinstance(exc, DeadlineExceededError):
                raise DeadlineExceededError(f"no valid sample before the deadline ({exc})") from exc
            raise

    async def score_batch(self, items: Sequence[ScoreItem | GrmError]) -> list[ItemOutcome]:
        """Score items concurrently; an item given as an error (invalid) stays that error.

        Items still running shortly before the overall deadline are cancelled and reported
        as DEADLINE_EXCEEDED, so the reply (with every finished item) still arrives in time.
        """
        limit = asyncio.Semaphore(self.batch_concurrency)

        async def one(item: ScoreItem) -> ItemOutcome:
            async with limit:
                try:
                    return await self.score(item)
                except GrmError as exc:
                    return exc
                except Exception as exc:  # one broken item must not fail the batch
                    log.exception("batch item failed")
                    err = GrmError(f"internal error ({type(exc).__name__})")
                    return err

        tasks: dict[int, asyncio.Task[ItemOutcome]] = {
            i: asyncio.ensure_future(one(item))
            for i, item in enumerate(items)
            if isinstance(item, ScoreItem)
        }
        if tasks:
            timeout = deadlines.downstream_timeout(
                deadlines.remaining(), reserve_fraction=0.05, max_reserve_s=0.25
            )
            try:
                await asyncio.wait(tasks.values(), timeout=timeout)
            finally:
                for task in tasks.values():
                    task.cancel()  # no-op for finished ones
                await asyncio.gather(*tasks.values(), return_exceptions=True)
        out: list[ItemOutcome] = []
        for i, item in enumerate(items):
            if isinstance(item, GrmError):
                out.append(item)
                continue
            task = tasks[i]
            if task.cancelled():
                out.append(DeadlineExceededError("item not finished before the batch deadline"))
            else:
                out.append(task.result())
        return out
