"""Critique sampling: render each sample's prompt, generate, parse, map back to caller order.

Used in-process by the pipeline and behind CritiqueService by the sampler pods: one place for
turning a SampleSpec into a Sample.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from grm import deadlines, telemetry
from grm.backends.base import GenerationBackend, GenerationRequest, GenerationResult
from grm.core.errors import GrmError, InvalidArgumentError
from grm.core.parsing import extract_scores
from grm.core.sampling import apply_order, to_caller_order
from grm.core.templates import TemplateSet
from grm.core.types import Context, ModelInfo, Sample, SampleSpec, SamplingParams
from grm.sampler.slots import DeadlineSlots

log = logging.getLogger(__name__)


class CritiqueSampler:
    """Draws samples on one backend, at most `concurrency` at once, and reports its load."""

    def __init__(
        self, backend: GenerationBackend, templates: TemplateSet, *, concurrency: int | None = None
    ) -> None:
        self.backend = backend
        self.templates = templates
        self.capacity = max(1, concurrency or backend.capacity)
        # Earliest vote (latency budget) first, then earliest deadline: see sampler.slots.
        self._slots = DeadlineSlots(self.capacity)
        self.in_flight = 0
        self.queued = 0

    @property
    def info(self) -> ModelInfo:
        b = self.backend.info
        return ModelInfo(b.model_id, b.revision, b.backend, self.templates.version)

    def request_for(
        self, context: Context, responses: Sequence[str], spec: SampleSpec, params: SamplingParams
    ) -> GenerationRequest:
        """The generation request of one sample (its order, seed and principles)."""
        shown = apply_order(responses, spec.order)
        if spec.principles:
            messages = self.templates.critique(context, shown, spec.principles)
        else:
            messages = self.templates.joint(context, shown)
        return GenerationRequest(
            messages=tuple(messages),
            seed=spec.seed,
            temperature=params.temperature,
            top_p=params.top_p,
            max_new_tokens=params.max_new_tokens,
            score_count=len(responses),
            grammar=params.grammar,
        )

    async def sample(
        self,
        context: Context,
        responses: Sequence[str],
        specs: Sequence[SampleSpec],
        params: SamplingParams,
    ) -> list[Sample]:
        """Draw all specs concurrently; a failed generation becomes an invalid sample, except
        InvalidArgumentError (a request no seed can fix), which is raised."""
        return list(
            await asyncio.gather(*(self._one(context, responses, s, params) for s in specs))
        )

    async def _one(
        self, context: Context, responses: Sequence[str], spec: SampleSpec, params: SamplingParams
    ) -> Sample:
        with telemetry.sample_span(spec) as span:
            sample = await self._draw(context, responses, spec, params)
            telemetry.sample_done(span, sample)
            return sample

    async def _draw(
        self, context: Context, responses: Sequence[str], spec: SampleSpec, params: SamplingParams
    ) -> Sample:
        request = self.request_for(context, responses, spec, params)
        telemetry.log_content(log, "prompt", request.messages)
        self.queued += 1
        waiting = time.perf_counter()
        try:
            await self._slots.acquire(deadlines.urgency())
        finally:
            self.queued -= 1
        telemetry.record_duration("queue", time.perf_counter() - waiting)
        self.in_flight += 1
        started = time.perf_counter()
        try:
            with telemetry.stage("generate", **{"grm.backend": self.backend.info.backend}) as gen:
                [result] = await self.backend.generate([request])
                if isinstance(result, BaseException):
                    telemetry.backend_error(gen, result)
        finally:
            self.in_flight -= 1
            self._slots.release()
        if isinstance(result, InvalidArgumentError):
            # The request itself is wrong (e.g. the prompt exceeds the server's input limit):
            # a new seed cannot fix it, so it is the caller's error, not an invalid sample.
            raise result
        if isinstance(result, GrmError):
            return Sample(
                spec=spec,
                text="",
                principles=spec.principles,
                critique="",
                scores=None,
                invalid_reason=f"backend error: {result}",
                latency_ms=(time.perf_counter() - started) * 1000,
                finish_reason="error",
            )
        return to_sample(spec, result, len(responses))


def to_sample(spec: SampleSpec, result: GenerationResult, n: int) -> Sample:
    """Parse one generation into a Sample with scores in the caller's order."""
    parsed = extract_scores(result.text, n)
    scores = to_caller_order(parsed.scores, spec.order) if parsed.scores is not None else None
    return Sample(
        spec=spec,
        text=result.text,
        principles=spec.principles or parsed.principles,
        critique=parsed.critique,
        scores=scores,
        invalid_reason=parsed.reason,
        tokens_generated=result.tokens_generated,
        latency_ms=result.latency_ms,
        finish_reason=result.finish_reason,
        backend_seed=result.seed,
    )
