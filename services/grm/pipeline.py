"""Scores one item: k samples → parse → re-sample invalid ones → (meta RM) → votes.

Transport-free: the sample source is an in-process CritiqueSampler or the aggregator's
remote sampler pool; the same code votes either way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from grm import deadlines, telemetry
from grm.core.errors import GrmError, InvalidArgumentError, UnavailableError
from grm.core.planner import budget_margin_ms
from grm.core.sampling import sample_spec
from grm.core.types import (
    Aggregation,
    Context,
    ModelInfo,
    PrincipleMode,
    Sample,
    SampleSpec,
    SamplingParams,
    ScoreItem,
    ScoreResult,
    ScoreStatus,
    Timings,
)
from grm.core.voting import select_top, vote
from grm.metarm.base import MetaRM


class SampleSource(Protocol):
    info: ModelInfo

    async def sample(
        self,
        context: Context,
        responses: Sequence[str],
        specs: Sequence[SampleSpec],
        params: SamplingParams,
    ) -> list[Sample]: ...


class PrincipleSource(Protocol):
    async def generate(
        self, context: Context, responses: Sequence[str], n: int, seed: int, params: SamplingParams
    ) -> Sequence[object]: ...


@dataclass(frozen=True)
class PipelineSettings:
    max_attempts: int = 3  # tries per sample index: the first draw plus re-samples with new seeds
    # Anytime voting: with a latency budget, vote at budget - margin (see budget_margin_ms).
    budget_margin_fraction: float = 0.1
    budget_margin_min_ms: float = 20.0
    budget_margin_max_ms: float = 250.0

    def budget_cutoff_ms(self, budget_ms: float) -> float:
        return budget_ms - budget_margin_ms(
            budget_ms,
            fraction=self.budget_margin_fraction,
            min_ms=self.budget_margin_min_ms,
            max_ms=self.budget_margin_max_ms,
        )


class ScoringPipeline:
    """The GRM method over any sample source."""

    def __init__(
        self,
        sampler: SampleSource,
        *,
        principles: PrincipleSource | None = None,
        meta_rm: MetaRM | None = None,
        settings: PipelineSettings = PipelineSettings(),
    ) -> None:
        self.sampler = sampler
        self.principles = principles
        self.meta_rm = meta_rm
        self.settings = settings

    async def _principles_for(self, item: ScoreItem) -> list[str]:
        """One principle text per sample index ("" in joint mode)."""
        if item.principles:
            return [item.principles] * item.k
        if item.principle_mode is not PrincipleMode.SEPARATE:
            return [""] * item.k
        if self.principles is None:
            raise InvalidArgumentError(
                "separate mode needs a principle generator", field="principle_mode"
            )
        with telemetry.stage("principles", **{"grm.principle_sets": item.k}):
            sets = await self.principles.generate(
                item.context, (), item.k, item.seed, item.sampling
            )
        return [s.text for s in sets]  # type: ignore[attr-defined]

    async def score(self, item: ScoreItem, *, k_planned: int | None = None) -> ScoreResult:
        """Score one validated item; raises UnavailableError when no valid sample remains.

        `k_planned` (≤ item.k, from the aggregator's k planner) is how many samples to draw.
        With `item.latency_budget_ms` the vote is anytime: at budget - margin the valid samples
        finished so far are voted over and the rest are cancelled (the cancellation reaches
        the sampler and its backend). If none is valid by then, the first valid sample is
        awaited until the deadline (a late reward beats none; the result says the budget was
        missed). Without a budget all samples are awaited within the deadline.
        """
        if item.aggregation is Aggregation.META_VOTE and self.meta_rm is None:
            raise InvalidArgumentError(
                "no meta RM is configured on this server", field="aggregation"
            )
        started = time.perf_counter()
        k = max(1, min(item.k, k_planned or item.k))
        n = len(item.responses)
        shuffle = item.aggregation is not Aggregation.GREEDY and item.k > 1

        t0 = time.perf_counter()
        principles = await self._principles_for(item)
        principles_ms = (
            (time.perf_counter() - t0) * 1000 if principles[0] and not item.principles else 0.0
        )

        t0 = time.perf_counter()
        pending = [
            sample_spec(item.seed, j, n, shuffle=shuffle, principles=principles[j])
            for j in range(k)
        ]
        budget_ms = item.latency_budget_ms or 0
        cancelled = 0
        if budget_ms:
            cutoff_s = (self.settings.budget_cutoff_ms(budget_ms) / 1000) - (t0 - started)
            with telemetry.stage("sampling", **{"grm.samples": k, "grm.anytime": True}) as span:
                drawn, cancelled = await self._draw_anytime(item, pending, shuffle, cutoff_s)
                span.set_attribute("grm.samples_cancelled", cancelled)
        else:
            drawn = await self._draw_all(item, pending, shuffle)
        sampling_ms = (time.perf_counter() - t0) * 1000

        valid = sorted((s for s in drawn if s.valid), key=lambda s: s.spec.index)
        invalid = [s for s in drawn if not s.valid]
        if not valid:
            reasons = sorted(
                {s.invalid_reason for s in invalid} | ({"cancelled"} if cancelled else set())
            )
            raise UnavailableError(
                f"no valid sample out of {len(drawn)} drawn ({'; '.join(reasons)[:500]})"
            )

        status = ScoreStatus.COMPLETE if len(valid) == item.k else ScoreStatus.PARTIAL
        detail = (
            ""
            if status is ScoreStatus.COMPLETE
            else (
                f"{len(valid)} of {item.k} samples valid after {self.settings.max_attempts} tries"
            )
        )
        budget_met: bool | None = None
        if budget_ms:
            budget_met = (time.perf_counter() - started) * 1000 <= budget_ms
            if cancelled or k < item.k or not budget_met:
                detail = (
                    f"budget {budget_ms} ms {'met' if budget_met else 'missed'}: "
                    f"{len(valid)} valid of {item.k} requested, {k} planned, {cancelled} cancelled"
                )
        return await self._finish(
            item, k, valid, invalid, status, detail, budget_met, started, principles_ms, sampling_ms
        )

    async def _draw_anytime(
        self, item: ScoreItem, specs: Sequence[SampleSpec], shuffle: bool, cutoff_s: float
    ) -> tuple[list[Sample], int]:
        """Draw each index as its own call; at `cutoff_s` keep what is done, cancel the rest.

        Returns the drawn samples and how many sample indices were cancelled.
        """
        # The tasks carry the vote time to the samplers (earliest vote is served first).
        with deadlines.vote_scope(cutoff_s):
            tasks = [asyncio.ensure_future(self._draw_index(item, spec, shuffle)) for spec in specs]
        try:
            done, pending = await asyncio.wait(
                tasks, timeout=max(0.0, cutoff_s), return_when=asyncio.FIRST_EXCEPTION
            )
            # Past the budget with nothing valid: wait for the first valid sample (or for
            # every index to give up, which the pool makes happen by the deadline).
            while pending and not any(_usable(t) for t in done) and not _failed(done):
                more, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                done |= more
        finally:
            for task in tasks:
                task.cancel()  # no-op for finished ones; cancels the sampler call otherwise
            await asyncio.gather(*tasks, return_exceptions=True)
        drawn: list[Sample] = []
        cancelled = 0
        for task in tasks:
            if task.cancelled():
                cancelled += 1
            elif (exc := task.exception()) is not None:
                raise exc
            else:
                drawn.extend(task.result())
        return drawn, cancelled

    async def _draw_index(self, item: ScoreItem, spec: SampleSpec, shuffle: bool) -> list[Sample]:
        """One sample index: the first draw plus re-samples with new seeds until valid."""
        got: list[Sample] = []
        n = len(item.responses)
        for attempt in range(self.settings.max_attempts):
            if attempt:
                spec = sample_spec(
                    item.seed,
                    spec.index,
                    n,
                    attempt=attempt,
                    shuffle=shuffle,
                    principles=spec.principles,
                )
            got.extend(
                await self.sampler.sample(item.context, item.responses, [spec], item.sampling)
            )
            if got[-1].valid or (item.sampling.temperature == 0 and not shuffle):
                break
        return got

    async def _draw_all(
        self, item: ScoreItem, pending: list[SampleSpec], shuffle: bool
    ) -> list[Sample]:
        """All specs in batches (one per attempt), re-sampling the invalid ones."""
        n = len(item.responses)
        drawn: list[Sample] = []
        for attempt in range(self.settings.max_attempts):
            with telemetry.stage(
                "sampling", **{"grm.attempt": attempt, "grm.samples": len(pending)}
            ) as span:
                got = await self.sampler.sample(
                    item.context, item.responses, pending, item.sampling
                )
                span.set_attribute("grm.samples_invalid", sum(not s.valid for s in got))
            drawn.extend(got)
            failed = [s.spec for s in got if not s.valid]
            if not failed or (item.sampling.temperature == 0 and not shuffle):
                break  # at T=0 in a fixed order a new seed would draw the same text again
            pending = [
                sample_spec(
                    item.seed,
                    s.index,
                    n,
                    attempt=attempt + 1,
                    shuffle=shuffle,
                    principles=s.principles,
                )
                for s in failed
            ]
        return drawn

    async def _finish(
        self,
        item: ScoreItem,
        k: int,
        valid: list[Sample],
        invalid: list[Sample],
        status: ScoreStatus,
        detail: str,
        budget_met: bool | None,
        started: float,
        principles_ms: float,
        sampling_ms: float,
    ) -> ScoreResult:
        """Meta RM (if asked) and the vote over the valid samples."""
        n = len(item.responses)
        used = [True] * len(valid)
        meta_scores: list[float | None] = [None] * len(valid)
        meta_ms = 0.0
        if item.aggregation is Aggregation.META_VOTE:
            t0 = time.perf_counter()
            try:
                assert self.meta_rm is not None
                with telemetry.stage("meta_rm", **{"grm.samples": len(valid)}):
                    scores = await self.meta_rm.score(item.context, item.responses, valid)
                meta_scores = list(scores)
                used = list(select_top(scores, min(item.k_meta, len(valid))))
            except (TimeoutError, GrmError) as exc:
                status, detail = ScoreStatus.DEGRADED, f"meta RM failed ({exc}); plain vote"
            meta_ms = (time.perf_counter() - t0) * 1000

        with telemetry.stage("vote", **{"grm.k_valid": len(valid)}) as span:
            outcome = vote(
                [s.scores for s, u in zip(valid, used, strict=True) if u and s.scores], n
            )
            span.set_attribute("grm.k_used", outcome.k_used)
        return ScoreResult(
            rewards=outcome.rewards,
            votes=outcome.votes,
            k_requested=item.k,
            k_used=outcome.k_used,
            k_valid=len(valid),
            invalid_samples=len(invalid),
            status=status,
            best=outcome.best,
            aggregation=item.aggregation,
            samples=(*valid, *invalid),
            used=(*used, *[False] * len(invalid)),
            meta_scores=(*meta_scores, *[None] * len(invalid)),
            status_detail=detail,
            timings=Timings(
                total_ms=(time.perf_counter() - started) * 1000,
                principles_ms=principles_ms,
                sampling_ms=sampling_ms,
                meta_ms=meta_ms,
            ),
            model=self.sampler.info,
            request_id=item.request_id,
            k_planned=k,
            budget_met=budget_met,
        )


def _usable(task: asyncio.Future[list[Sample]]) -> bool:
    """A finished index task that drew a valid sample."""
    return (
        task.done()
        and not task.cancelled()
        and task.exception() is None
        and any(s.valid for s in task.result())
    )


def _failed(done: set[asyncio.Future[list[Sample]]]) -> bool:
    return any(not t.cancelled() and t.exception() is not None for t in done)
