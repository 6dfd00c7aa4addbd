"""Scores one planned item: k samples → parse → re-sample invalid ones → (meta RM) → votes.

Transport-free: the sample source is an in-process CritiqueSampler or the aggregator's
remote sampler pool; the same code votes either way. It reads the request's RequestPlan
(grm.core.plan) and never re-derives k or a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from grm import telemetry
from grm.core.errors import GrmError, InvalidArgumentError, UnavailableError
from grm.core.plan import RequestPlan, SamplingJob, plan_request
from grm.core.sampling import sample_spec
from grm.core.types import (
    Aggregation,
    ModelInfo,
    Sample,
    SampleSpec,
    ScoreItem,
    ScoreResult,
    ScoreStatus,
    Timings,
)
from grm.core.voting import select_top, vote
from grm.metarm.base import MetaRM


class SampleSource(Protocol):
    """Draws samples: an in-process CritiqueSampler, the remote pool, or a cache around them."""

    info: ModelInfo

    async def sample(self, job: SamplingJob, specs: Sequence[SampleSpec]) -> list[Sample]: ...


def stream_of(
    source: SampleSource, job: SamplingJob, specs: Sequence[SampleSpec]
) -> AsyncIterator[list[Sample]]:
    """The specs' samples as they finish: the source's own `stream` (one call per sampler
    for all of them) when it has one, else one `sample` call per spec."""
    stream = getattr(source, "stream", None)
    if stream is not None:
        return stream(job, specs)  # type: ignore[no-any-return]
    return _per_spec(source, job, specs)


async def _per_spec(
    source: SampleSource, job: SamplingJob, specs: Sequence[SampleSpec]
) -> AsyncIterator[list[Sample]]:
    tasks = [asyncio.ensure_future(source.sample(job, [spec])) for spec in specs]
    pending: set[asyncio.Future[list[Sample]]] = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            yield [s for task in done for s in task.result()]
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class PrincipleSource(Protocol):
    async def generate(self, job: SamplingJob, n: int, seed: int) -> Sequence[object]: ...


@dataclass(frozen=True)
class PipelineSettings:
    max_attempts: int = 3  # tries per sample index: the first draw plus re-samples with new seeds


class ScoringPipeline:
    """The GRM method over any sample source; every request arrives as a RequestPlan."""

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

    def plan(self, item: ScoreItem, *, deadline_s: float | None = None) -> RequestPlan:
        """A plan drawing all of item.k (in-process scoring has no k planner)."""
        now = time.monotonic()
        deadline = None if deadline_s is None else now + deadline_s
        return plan_request(item, now=now, caller_deadline=deadline)

    async def score(self, item: ScoreItem) -> ScoreResult:
        """Score a validated item with a plan of all its k samples (local scoring)."""
        return await self.run(self.plan(item))

    async def _principles_for(self, plan: RequestPlan) -> list[str]:
        """One principle text per planned sample index ("" in joint mode)."""
        item, k = plan.item, plan.k_planned
        if item.principles:
            return [item.principles] * k
        if not item.principle_mode.separate:
            return [""] * k
        if self.principles is None:
            raise InvalidArgumentError(
                "separate mode needs a principle generator", field="principle_mode"
            )
        with telemetry.stage("principles", **{"grm.principle_sets": k}):
            sets = await self.principles.generate(plan.principles_job(), k, item.seed)
        return [s.text for s in sets]  # type: ignore[attr-defined]

    async def run(self, plan: RequestPlan) -> ScoreResult:
        """Score one planned item; raises UnavailableError when no valid sample remains.

        `plan.k_planned` samples are drawn. With a latency budget the vote is anytime: at
        `plan.vote_at` the valid samples finished so far are voted over and the rest are
        cancelled (the cancellation reaches the sampler and its backend). If none is valid by
        then, the first valid sample is awaited until the deadline (a late reward beats none;
        the result says the budget was missed). Without a budget all samples are awaited.
        """
        item = plan.item
        if item.aggregation is Aggregation.META_VOTE and self.meta_rm is None:
            raise InvalidArgumentError(
                "no meta RM is configured on this server", field="aggregation"
            )
        n = len(item.responses)
        t0 = time.perf_counter()
        principles = await self._principles_for(plan)
        principles_ms = (
            (time.perf_counter() - t0) * 1000 if principles[0] and not item.principles else 0.0
        )

        t0 = time.perf_counter()
        specs = [
            sample_spec(item.seed, j, n, shuffle=plan.shuffle, principles=principles[j])
            for j in range(plan.k_planned)
        ]
        cancelled = 0
        if plan.vote_at is not None:
            with telemetry.stage(
                "sampling", **{"grm.samples": len(specs), "grm.anytime": True}
            ) as span:
                drawn, cancelled = await self._draw_anytime(plan, specs)
                span.set_attribute("grm.samples_cancelled", cancelled)
        else:
            drawn = await self._draw_all(plan, specs)
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

        k_req = plan.k_requested
        status = ScoreStatus.COMPLETE if len(valid) >= k_req else ScoreStatus.PARTIAL
        detail = (
            ""
            if status is ScoreStatus.COMPLETE
            else f"{len(valid)} of {k_req} samples valid after {self.settings.max_attempts} tries"
        )
        budget_met: bool | None = None
        if item.latency_budget_ms:
            elapsed_ms = (time.monotonic() - plan.started) * 1000
            budget_met = elapsed_ms <= item.latency_budget_ms
            if cancelled or plan.k_planned < k_req or not budget_met:
                detail = (
                    f"budget {item.latency_budget_ms} ms {'met' if budget_met else 'missed'}: "
                    f"{len(valid)} valid of {k_req} requested, {plan.k_planned} planned, "
                    f"{cancelled} cancelled"
                )
        return await self._finish(
            plan, valid, invalid, status, detail, budget_met, principles_ms, sampling_ms
        )

    async def _draw_anytime(
        self, plan: RequestPlan, specs: Sequence[SampleSpec]
    ) -> tuple[list[Sample], int]:
        """Draw all indices in one stream (one call per sampler), re-sampling invalid ones as
        they arrive; at the vote keep what is done and close the streams, which cancels the
        rest down to the engines.

        Past the vote with nothing valid, it waits for the first valid sample (or for every
        index to give up, which the pool makes happen by the deadline). Returns the drawn
        samples and how many sample indices were cancelled.
        """
        job = plan.job()
        n = len(job.responses)
        assert plan.vote_at is not None
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue[list[Sample] | BaseException | None] = asyncio.Queue()
        streams: list[asyncio.Task[None]] = []

        def draw(batch: list[SampleSpec]) -> None:
            task = asyncio.ensure_future(_pump(stream_of(self.sampler, job, batch), arrived))
            streams.append(task)

        drawn: list[Sample] = []
        open_indices = {spec.index for spec in specs}
        valid = 0
        vote = loop.call_later(max(0.0, plan.vote_at - time.monotonic()), arrived.put_nowait, None)
        voted = False
        running = 1
        draw(list(specs))
        try:
            while open_indices and running:
                item = await arrived.get()
                if item is None:  # the vote time
                    voted = True
                elif isinstance(item, BaseException):
                    raise item
                elif not item:
                    running -= 1  # a stream ended
                else:
                    retry = []
                    for sample in item:
                        drawn.append(sample)
                        index = sample.spec.index
                        if index not in open_indices:
                            continue
                        attempt = sample.spec.attempt + 1
                        if sample.valid:
                            valid += 1
                            open_indices.discard(index)
                        elif plan.resample_invalid and attempt < self.settings.max_attempts:
                            retry.append(_retry_spec(plan, sample.spec, n, attempt))
                        else:
                            open_indices.discard(index)
                    if retry:
                        running += 1
                        draw(retry)
                if voted and valid:
                    break
        finally:
            vote.cancel()
            for task in streams:
                task.cancel()  # no-op for finished ones; closes the sampler calls otherwise
            await asyncio.gather(*streams, return_exceptions=True)
        return drawn, len(open_indices)

    async def _draw_all(self, plan: RequestPlan, pending: list[SampleSpec]) -> list[Sample]:
        """All specs in batches (one per attempt), re-sampling the invalid ones."""
        job = plan.job()
        n = len(job.responses)
        drawn: list[Sample] = []
        for attempt in range(self.settings.max_attempts):
            with telemetry.stage(
                "sampling", **{"grm.attempt": attempt, "grm.samples": len(pending)}
            ) as span:
                got = await self.sampler.sample(job, pending)
                span.set_attribute("grm.samples_invalid", sum(not s.valid for s in got))
            drawn.extend(got)
            failed = [s.spec for s in got if not s.valid]
            if not failed or not plan.resample_invalid:
                break  # at T=0 in a fixed order a new seed would draw the same text again
            pending = [_retry_spec(plan, s, n, attempt + 1) for s in failed]
        return drawn

    async def _finish(
        self,
        plan: RequestPlan,
        valid: list[Sample],
        invalid: list[Sample],
        status: ScoreStatus,
        detail: str,
        budget_met: bool | None,
        principles_ms: float,
        sampling_ms: float,
    ) -> ScoreResult:
        """Meta RM (if asked) and the vote over the valid samples."""
        item = plan.item
        n = len(item.responses)
        used = [True] * len(valid)
        meta_scores: list[float | None] = [None] * len(valid)
        meta_ms = 0.0
        if item.aggregation is Aggregation.META_VOTE:
            t0 = time.perf_counter()
            try:
                assert self.meta_rm is not None
                with telemetry.stage("meta_rm", **{"grm.samples": len(valid)}):
                    scores = await self.meta_rm.score(
                        item.context, item.responses, valid, reference=item.reference
                    )
                meta_scores = list(scores)
                used = list(select_top(scores, plan.k_meta(len(valid))))
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
            k_requested=plan.k_requested,
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
                total_ms=(time.monotonic() - plan.started) * 1000,
                principles_ms=principles_ms,
                sampling_ms=sampling_ms,
                meta_ms=meta_ms,
            ),
            model=plan.model or self.sampler.info,
            request_id=item.request_id,
            k_planned=plan.k_planned,
            budget_met=budget_met,
        )


def _retry_spec(plan: RequestPlan, spec: SampleSpec, n: int, attempt: int) -> SampleSpec:
    """The spec of a re-sample: same index and principles, a new seed (and order)."""
    return sample_spec(
        plan.item.seed,
        spec.index,
        n,
        attempt=attempt,
        shuffle=plan.shuffle,
        principles=spec.principles,
    )


async def _pump(
    stream: AsyncIterator[list[Sample]],
    into: asyncio.Queue[list[Sample] | BaseException | None],
) -> None:
    """Copy a stream's batches into `into`, then an empty batch (or the stream's error)."""
    try:
        async for batch in stream:
            if batch:
                into.put_nowait(batch)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        into.put_nowait(exc)
        return
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    into.put_nowait([])
