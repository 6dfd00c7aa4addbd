"""Critique sampling: render each sample's prompt, generate, parse, map back to caller order.

Used in-process by the pipeline and behind CritiqueService by the sampler pods: one place for
turning a SampleSpec into a Sample. `sample_within` is how a sampler never works past its
caller's deadline: what is done in time is returned, the rest is cancelled (the embedded
backend stops at its next token) and reported as invalid, so the aggregator can vote over
the samples that did finish (anytime voting).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

from grm import telemetry
from grm.backends.base import (
    GenerationBackend,
    GenerationRequest,
    GenerationResult,
    Message,
)
from grm.core.errors import GrmError, InvalidArgumentError
from grm.core.parsing import extract_scores
from grm.core.plan import SamplingJob
from grm.core.sampling import DEADLINE_REASON, apply_order, to_caller_order, unfinished
from grm.core.templates import TemplateSet
from grm.core.types import Context, ModelInfo, Sample, SampleSpec
from grm.scoring.slots import SampleSlots

log = logging.getLogger(__name__)

PROMPTS_KEPT = 64  # rendered prompts a sampler keeps (see CritiqueSampler._prompt)


class CritiqueSampler:
    """Draws samples on one backend, at most `concurrency` at once, and reports its load."""

    def __init__(
        self, backend: GenerationBackend, templates: TemplateSet, *, concurrency: int | None = None
    ) -> None:
        self.backend = backend
        self.templates = templates
        self.concurrency = concurrency
        # A request's samples show its responses in a few orders, and an RL group scores one
        # prompt many times: each distinct prompt is rendered once (the backends read it only).
        self._prompt = functools.lru_cache(maxsize=PROMPTS_KEPT)(self._render)
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

    def _render(
        self,
        context: Context,
        responses: tuple[str, ...],
        order: tuple[int, ...],
        principles: str,
        reference: str,
    ) -> tuple[Message, ...]:
        shown = apply_order(responses, order)
        return tuple(self.templates.sample_prompt(context, shown, principles, reference))

    def request_for(self, job: SamplingJob, spec: SampleSpec) -> GenerationRequest:
        """The generation request of one sample (its order, seed and principles)."""
        params = job.params
        return GenerationRequest(
            messages=self._prompt(
                job.context, job.responses, spec.order, spec.principles, job.reference
            ),
            seed=spec.seed,
            temperature=params.temperature,
            top_p=params.top_p,
            max_new_tokens=params.max_new_tokens,
            score_count=len(job.responses),
            grammar=params.grammar,
            force_scores=params.force_scores,
            deadline=job.deadline,
            prefix_key=prefix_key(job.context),
        )

    async def sample(self, job: SamplingJob, specs: Sequence[SampleSpec]) -> list[Sample]:
        """Draw all specs concurrently; a failed generation becomes an invalid sample, except
        InvalidArgumentError (a request no seed can fix), which is raised."""
        return list(await asyncio.gather(*(self.draw(job, s) for s in specs)))

    def stream(self, job: SamplingJob, specs: Sequence[SampleSpec]) -> AsyncIterator[list[Sample]]:
        """The specs' samples as they finish, never past `job.deadline` (`stream_within`)."""
        return stream_within(self, job, specs)

    async def draw(self, job: SamplingJob, spec: SampleSpec) -> Sample:
        """One sample (InvalidArgumentError raised; other failures are invalid samples).

        Telemetry is one event per sample on the caller's span (`telemetry.sample_batch` on a
        sampler: one span per call), not spans of its own.
        """
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
        self.in_flight += 1
        started = time.perf_counter()
        queued_s = started - waiting
        try:
            result = await self.backend.generate_safe(request)
        finally:
            self.in_flight -= 1
            self._slots.release()
        generate_s = time.perf_counter() - started
        if isinstance(result, BaseException):
            telemetry.backend_error(None, result)
        sample = self._sample(job, spec, result, generate_s)
        telemetry.sample_done(sample, queued_s=queued_s, generate_s=generate_s)
        return sample

    def _sample(
        self,
        job: SamplingJob,
        spec: SampleSpec,
        result: GenerationResult | GrmError,
        generate_s: float,
    ) -> Sample:
        if isinstance(result, InvalidArgumentError):
            # The request itself is wrong (e.g. the prompt exceeds the server's input limit):
            # a new seed cannot fix it, so it is the caller's error, not an invalid sample.
            raise result
        if isinstance(result, GrmError):
            reason = f"backend error: {result}"
            return unfinished(spec, reason, finish_reason="error", latency_ms=generate_s * 1000)
        return to_sample(spec, result, len(job.responses))


@functools.lru_cache(maxsize=1024)
def prefix_key(context: Context) -> str:
    """What one item's prompts share: the template's text, then the conversation, before the
    responses (shown in a different order per sample). A stable digest of the conversation,
    the same in every sampler process, so the HTTP pools of all samplers place one item's
    samples (and items on the same conversation) on the same engine endpoint."""
    digest = hashlib.blake2b(digest_size=12)
    for turn in context.turns:
        digest.update(turn.role.encode())
        digest.update(b"\0")
        digest.update(turn.content.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


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


async def stream_within(
    sampler: CritiqueSampler, job: SamplingJob, specs: Sequence[SampleSpec]
) -> AsyncIterator[list[Sample]]:
    """Draw all specs concurrently (bounded by the sampler) and yield them as they finish:
    each yield is every sample that finished since the previous one. At `job.deadline` the
    samples still running are cancelled and yielded as invalid (deadline).

    A failed sample becomes an invalid one, except InvalidArgumentError (the request itself is
    wrong, e.g. a prompt over the model's input limit): that is raised, the rest cancelled.
    Closing the iterator early (the caller voted or went away) cancels the samples still
    running, down to the backend's HTTP request.
    """
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    tasks: dict[asyncio.Future[Sample], SampleSpec] = {}
    for spec in specs:
        task = asyncio.ensure_future(sampler.draw(job, spec))
        task.add_done_callback(lambda _: wake.set())
        tasks[task] = spec
    remaining = dict(tasks)  # not yielded yet
    time_limit = job.time_left(time.monotonic())
    timer = None if time_limit is None else loop.call_later(max(0.0, time_limit), wake.set)
    try:
        while remaining:
            done = [t for t in remaining if t.done()]
            if done:
                for task in done:
                    del remaining[task]
                yield _finished(done, tasks)
                continue
            left = job.time_left(time.monotonic())
            if left is not None and left <= 0:
                break
            await wake.wait()
            wake.clear()
        if remaining:
            late = list(remaining.values())
            await _cancel(tasks)
            yield [unfinished(spec, DEADLINE_REASON) for spec in late]
    finally:
        if timer is not None:
            timer.cancel()
        # Also on our own cancellation or an early close (the caller went away, voted, or
        # a sample raised): stop the backend work.
        await _cancel(tasks)


def _finished(
    done: Sequence[asyncio.Future[Sample]], specs: dict[asyncio.Future[Sample], SampleSpec]
) -> list[Sample]:
    """The samples of finished draws; InvalidArgumentError is raised."""
    batch: list[Sample] = []
    for task in done:
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, InvalidArgumentError):
            raise exc
        if task.cancelled():
            batch.append(unfinished(specs[task], DEADLINE_REASON))
        elif exc is not None:
            reason = f"sampler error: {exc}"
            batch.append(unfinished(specs[task], reason, finish_reason="error"))
        else:
            batch.append(task.result())
    return batch


async def _cancel(tasks: dict[asyncio.Future[Sample], SampleSpec]) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


async def sample_within(
    sampler: CritiqueSampler, job: SamplingJob, specs: Sequence[SampleSpec]
) -> list[Sample]:
    """Draw all specs concurrently (bounded by the sampler); stop at `job.deadline`. The
    samples in `specs` order (see `stream_within`)."""
    got: dict[SampleSpec, Sample] = {}
    stream = stream_within(sampler, job, specs)
    try:
        async for batch in stream:
            for sample in batch:
                got[sample.spec] = sample
    finally:
        await stream.aclose()
    return [got.get(spec) or unfinished(spec, DEADLINE_REASON) for spec in specs]
