"""Critique sampling: render each sample's prompt, generate, parse, map back to caller order.

Used in-process by the pipeline and behind CritiqueService by the sampler pods: one place for
turning a SampleSpec into a Sample. `sample_within` is how a sampler never works past its
caller's deadline: what is done in time is returned, the rest is cancelled (the embedded
backend stops at its next token) and reported as invalid, so the aggregator can vote over
the samples that did finish (anytime voting).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from grm import telemetry
from grm.backends.base import GenerationBackend, GenerationRequest, GenerationResult
from grm.core.errors import GrmError, InvalidArgumentError
from grm.core.parsing import extract_scores
from grm.core.plan import SamplingJob
from grm.core.sampling import DEADLINE_REASON, apply_order, to_caller_order, unfinished
from grm.core.templates import TemplateSet
from grm.core.types import ModelInfo, Sample, SampleSpec
from grm.scoring.slots import SampleSlots

log = logging.getLogger(__name__)


class CritiqueSampler:
    """Draws samples on one backend, at most `concurrency` at once, and reports its load."""

    def __init__(
        self, backend: GenerationBackend, templates: TemplateSet, *, concurrency: int | None = None
    ) -> None:
        self.backend = backend
        self.templates = templates
        self.concurrency = concurrency
        # Earliest vote (latency budget) first, the rest round robin per request: see slots.
        self._slots = SampleSlots(self.capacity)
        self.in_flight = 0
        self.queued = 0

    @property
    def capacity(self) -> int:
        """Samples generated at once: `concurrency`, else what the backend can run now (an
        engine's capacity follows its load, which the HPA gauges and the aggregator see)."""
        return max(1, self.concurrency or self.backend.capacity)

    @property
    def info(self) -> ModelInfo:
        b = self.backend.info
        return ModelInfo(b.model_id, b.revision, b.backend, self.templates.version)

    def request_for(self, job: SamplingJob, spec: SampleSpec) -> GenerationRequest:
        """The generation request of one sample (its order, seed and principles)."""
        shown = apply_order(job.responses, spec.order)
        messages = self.templates.sample_prompt(job.context, shown, spec.principles, job.reference)
        params = job.params
        return GenerationRequest(
            messages=tuple(messages),
            seed=spec.seed,
            temperature=params.temperature,
            top_p=params.top_p,
            max_new_tokens=params.max_new_tokens,
            score_count=len(job.responses),
            grammar=params.grammar,
            force_scores=params.force_scores,
            deadline=job.deadline,
        )

    async def sample(self, job: SamplingJob, specs: Sequence[SampleSpec]) -> list[Sample]:
        """Draw all specs concurrently; a failed generation becomes an invalid sample, except
        InvalidArgumentError (a request no seed can fix), which is raised."""
        return list(await asyncio.gather(*(self._one(job, s) for s in specs)))

    async def _one(self, job: SamplingJob, spec: SampleSpec) -> Sample:
        with telemetry.sample_span(spec) as span:
            sample = await self._draw(job, spec)
            telemetry.sample_done(span, sample)
            return sample

    async def _draw(self, job: SamplingJob, spec: SampleSpec) -> Sample:
        request = self.request_for(job, spec)
        telemetry.log_content(log, "prompt", request.messages)
        self.queued += 1
        waiting = time.perf_counter()
        self._slots.resize(self.capacity)
        try:
            # One job is one request here (its specs share it): the fair-share flow.
            await self._slots.acquire(job.urgency if job.budgeted else None, flow=id(job))
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
        return to_sample(spec, result, len(job.responses))


TRUNCATED_REASON = "truncated at max_new_tokens (finish reason length)"


def to_sample(spec: SampleSpec, result: GenerationResult, n: int) -> Sample:
    """Parse one generation into a Sample with scores in the caller's order.

    A generation cut at max_new_tokens (finish reason `length`) is invalid whatever it holds:
    its analysis is unfinished, so any list in it is not the judgement's final score (the
    pipeline re-draws it with a new seed). `forced_scores` — a score line forced after a cut,
    when the request asked for it — is parsed as usual.
    """
    parsed = extract_scores(result.text, n)
    truncated = result.finish_reason == "length"
    scores = (
        to_caller_order(parsed.scores, spec.order)
        if parsed.scores is not None and not truncated
        else None
    )
    return Sample(
        spec=spec,
        text=result.text,
        principles=spec.principles or parsed.principles,
        critique=parsed.critique,
        scores=scores,
        invalid_reason=TRUNCATED_REASON if truncated else parsed.reason,
        tokens_generated=result.tokens_generated,
        latency_ms=result.latency_ms,
        finish_reason=result.finish_reason,
        backend_seed=result.seed,
    )


async def sample_within(
    sampler: CritiqueSampler, job: SamplingJob, specs: Sequence[SampleSpec]
) -> list[Sample]:
    """Draw all specs concurrently (bounded by the sampler); stop at `job.deadline`.

    A failed sample becomes an invalid one, except InvalidArgumentError (the request itself is
    wrong, e.g. a prompt over the model's input limit): that is raised, the rest cancelled.
    """
    tasks = [asyncio.ensure_future(sampler.sample(job, [spec])) for spec in specs]
    time_limit = job.time_left(time.monotonic())
    try:
        if time_limit is None or time_limit > 0:
            await _wait(tasks, time_limit)
    finally:
        # Also on our own cancellation (the caller went away): stop the backend work.
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    out = []
    for spec, task in zip(specs, tasks, strict=True):
        if task.cancelled():
            out.append(unfinished(spec, DEADLINE_REASON))
        elif isinstance(exc := task.exception(), InvalidArgumentError):
            raise exc
        elif task.exception() is not None:
            reason = f"sampler error: {task.exception()}"
            out.append(unfinished(spec, reason, finish_reason="error"))
        else:
            out.append(task.result()[0])
    return out


def _invalid_argument(task: asyncio.Future[list[Sample]]) -> bool:
    return not task.cancelled() and isinstance(task.exception(), InvalidArgumentError)


async def _wait(tasks: Sequence[asyncio.Future[list[Sample]]], time_limit: float | None) -> None:
    """Until all tasks are done, `time_limit` passes, or one fails with InvalidArgumentError."""
    loop = asyncio.get_running_loop()
    end = None if time_limit is None else loop.time() + time_limit
    pending = set(tasks)
    while pending:
        timeout = None if end is None else end - loop.time()
        if timeout is not None and timeout <= 0:
            return
        done, pending = await asyncio.wait(
            pending, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION
        )
        if not done or any(_invalid_argument(t) for t in done):
            return
