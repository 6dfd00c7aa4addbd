"""Scores one item: k samples → parse → re-sample invalid ones → (meta RM) → votes.

Transport-free: the sample source is an in-process CritiqueSampler or the aggregator's
remote sampler pool; the same code votes either way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from grm import telemetry
from grm.core.errors import GrmError, InvalidArgumentError, UnavailableError
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

    async def score(self, item: ScoreItem) -> ScoreResult:
        """Score one validated item; raises UnavailableError when no valid sample remains."""
        if item.aggregation is Aggregation.META_VOTE and self.meta_rm is None:
            raise InvalidArgumentError(
                "no meta RM is configured on this server", field="aggregation"
            )
        started = time.perf_counter()
        n = len(item.responses)
        shuffle = item.aggregation is not Aggregation.GREEDY and item.k > 1

        t0 = time.perf_counter()
        principles = await self._principles_for(item)
        principles_ms = (
            (time.perf_counter() - t0) * 1000 if principles[0] and not item.principles else 0.0
        )

        t0 = time.perf_counter()
        drawn: list[Sample] = []
        pending = [
            sample_spec(item.seed, j, n, shuffle=shuffle, principles=principles[j])
            for j in range(item.k)
        ]
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
        sampling_ms = (time.perf_counter() - t0) * 1000

        valid = sorted((s for s in drawn if s.valid), key=lambda s: s.spec.index)
        invalid = [s for s in drawn if not s.valid]
        if not valid:
            reasons = sorted({s.invalid_reason for s in invalid})
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
            k_planned=item.k,
        )
