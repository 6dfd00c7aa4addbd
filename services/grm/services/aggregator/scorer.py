"""The aggregator's scoring logic: one item or a batch under one deadline (no gRPC here).

A failed item is an error, never a reward: the batch keeps going and reports it in place.
With a ResultCache, a repeated request is answered from the cache (identical concurrent ones
are computed once); each item reports what it got from the cache (grm.cache.CacheUsage).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grm import telemetry
from grm.cache import CacheUsage, ResultCache, track_usage
from grm.cache.keys import model_known
from grm.core.errors import DeadlineExceededError, GrmError
from grm.core.plan import MARGINS, Margins, RequestPlan, plan_request
from grm.core.planner import KPlanner
from grm.core.types import ModelInfo, ScoreItem, ScoreResult
from grm.scoring.pipeline import ScoringPipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """One scored item and what it got from the cache."""

    result: ScoreResult
    cache: CacheUsage


ItemOutcome = Scored | GrmError


class RewardScorer:
    """Plans each request (k under its latency budget, its deadlines) and runs the pipeline."""

    def __init__(
        self,
        pipeline: ScoringPipeline,
        *,
        batch_concurrency: int = 8,
        results: ResultCache | None = None,
        principles_model: Callable[[], ModelInfo] | None = None,
        planner: KPlanner | None = None,
        pool_load: Callable[[], tuple[int, int]] | None = None,
        margins: Margins = MARGINS,
    ) -> None:
        self.pipeline = pipeline
        # k planner (requests with a latency budget): measured latency and the pool's
        # (capacity, in flight + queued): work queued ahead counts.
        self.planner = planner
        self.pool_load = pool_load
        self.margins = margins
        self.batch_concurrency = max(1, batch_concurrency)
        self.results = results
        self.principles_model = principles_model  # the principle generator's model, when known

    def plan(self, item: ScoreItem, *, time_left_s: float | None) -> RequestPlan:
        """The request's plan: the planner's k under its budget, its vote time and deadline.

        The latency budget does not shorten the deadline: the pipeline votes at the budget
        over what finished (anytime) and waits past it only while no sample is valid yet.
        """
        now = time.monotonic()
        k_planned = item.k
        if self.planner is not None and item.latency_budget_ms:
            capacity, busy = self.pool_load() if self.pool_load is not None else (1, 0)
            kplan = self.planner.plan(
                item.k,
                item.latency_budget_ms,
                capacity - busy,
                capacity=capacity,
                margin_ms=self.margins.vote_margin_ms(item.latency_budget_ms),
            )
            if kplan.deficit:
                telemetry.metrics().k_deficit.add(kplan.deficit)
            k_planned = kplan.k_planned
        deadline = None if time_left_s is None else now + time_left_s
        # The request is pinned to the model the pool serves now: its cache keys and every
        # sample come from that model, even if samplers change models meanwhile.
        model = self.pipeline.sampler.info
        return plan_request(
            item,
            now=now,
            caller_deadline=deadline,
            k_planned=k_planned,
            margins=self.margins,
            model=model if model_known(model) else None,
        )

    async def score(self, item: ScoreItem, *, time_left_s: float | None = None) -> Scored:
        """Score one item within `time_left_s` (the caller's gRPC deadline); a deadline that
        ran out with nothing to vote on is DEADLINE_EXCEEDED."""
        with telemetry.score_request(item) as rec, track_usage() as usage:
            plan = self.plan(item, time_left_s=time_left_s)
            result = rec.done(await self._score(plan), usage)
        return Scored(result, usage)

    async def _compute(self, plan: RequestPlan) -> ScoreResult:
        if self.results is None:
            return await self.pipeline.run(plan)
        if self.principles_model is not None:
            model = self.principles_model()  # learned from the generator's replies
            self.results.principles_model = model if model_known(model) else None
        return await self.results.get_or_compute(
            plan.item, plan.model or self.pipeline.sampler.info, lambda: self.pipeline.run(plan)
        )

    async def _score(self, plan: RequestPlan) -> ScoreResult:
        try:
            return await self._compute(plan)
        except GrmError as exc:
            # The pool stops calling samplers `min_call_s` before the deadline.
            if plan.out_of_time(time.monotonic()) and not isinstance(exc, DeadlineExceededError):
                raise DeadlineExceededError(f"no valid sample before the deadline ({exc})") from exc
            raise

    async def score_batch(
        self, items: Sequence[ScoreItem | GrmError], *, time_left_s: float | None = None
    ) -> list[ItemOutcome]:
        """Score items concurrently; an item given as an error (invalid) stays that error.

        Items still running when the batch's work deadline comes (the caller's deadline minus
        the reply reserve, as for one item) are cancelled and reported as DEADLINE_EXCEEDED,
        so the reply (with every finished item) still arrives in time.
        """
        limit = asyncio.Semaphore(self.batch_concurrency)
        now = time.monotonic()
        # The batch keeps its reply reserve; each item plans against what is left after it
        # (and keeps its own reserve for its vote), so items end before the batch replies.
        cutoff = self.margins.work_deadline(None if time_left_s is None else now + time_left_s, now)

        async def one(item: ScoreItem) -> ItemOutcome:
            async with limit:
                try:
                    left = None if cutoff is None else cutoff - time.monotonic()
                    return await self.score(item, time_left_s=left)
                except GrmError as exc:
                    return exc
                except Exception as exc:  # one broken item must not fail the batch
                    log.exception("batch item failed")
                    return GrmError(f"internal error ({type(exc).__name__})")

        tasks: dict[int, asyncio.Task[ItemOutcome]] = {
            i: asyncio.ensure_future(one(item))
            for i, item in enumerate(items)
            if isinstance(item, ScoreItem)
        }
        if tasks:
            try:
                await asyncio.wait(
                    tasks.values(),
                    timeout=None if cutoff is None else max(0.0, cutoff - time.monotonic()),
                )
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
