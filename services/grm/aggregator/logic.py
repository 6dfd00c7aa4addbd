"""The aggregator's scoring logic: one item or a batch under one deadline (no gRPC here).

A failed item is an error, never a reward: the batch keeps going and reports it in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from grm import deadlines
from grm.aggregator.pool import MIN_CALL_S
from grm.core.errors import DeadlineExceededError, GrmError
from grm.core.types import ScoreItem, ScoreResult
from grm.pipeline import ScoringPipeline

log = logging.getLogger(__name__)

ItemOutcome = ScoreResult | GrmError


class RewardScorer:
    """Runs the pipeline under the caller's deadline and the item's latency budget."""

    def __init__(self, pipeline: ScoringPipeline, *, batch_concurrency: int = 8) -> None:
        self.pipeline = pipeline
        self.batch_concurrency = max(1, batch_concurrency)

    async def score(self, item: ScoreItem) -> ScoreResult:
        """Score one item; a deadline that ran out with nothing to vote on is DEADLINE_EXCEEDED."""
        budget = item.latency_budget_ms / 1000 if item.latency_budget_ms else None
        with deadlines.scope(budget):
            # Sampling ends a reserve before the caller's deadline: voting and the reply
            # (with whatever samples finished) must still reach the caller in time.
            with deadlines.scope(deadlines.downstream_timeout(deadlines.remaining())):
                return await self._score(item)

    async def _score(self, item: ScoreItem) -> ScoreResult:
        try:
            return await self.pipeline.score(item)
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
