"""Drawing samples within a deadline: what is done in time is returned, the rest is cancelled.

A sampler never works past its caller's deadline: a generation still running then is
cancelled (the embedded backend stops at its next token) and reported as an invalid sample,
so the aggregator can vote over the samples that did finish (anytime voting).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from grm.core.errors import InvalidArgumentError
from grm.core.types import Context, Sample, SampleSpec, SamplingParams
from grm.sampler.logic import CritiqueSampler

DEADLINE_REASON = "deadline exceeded before the sample finished"


def unfinished(spec: SampleSpec, reason: str, *, finish_reason: str = "deadline") -> Sample:
    """An invalid sample standing in for one that was not drawn."""
    return Sample(
        spec=spec,
        text="",
        principles=spec.principles,
        critique="",
        scores=None,
        invalid_reason=reason,
        finish_reason=finish_reason,
    )


async def sample_within(
    sampler: CritiqueSampler,
    context: Context,
    responses: Sequence[str],
    specs: Sequence[SampleSpec],
    params: SamplingParams,
    time_limit: float | None,
) -> list[Sample]:
    """Draw all specs concurrently (bounded by the sampler); stop after `time_limit` s.

    A failed sample becomes an invalid one, except InvalidArgumentError (the request itself is
    wrong, e.g. a prompt over the model's input limit): that is raised, the rest cancelled.
    """
    tasks = [
        asyncio.ensure_future(sampler.sample(context, responses, [spec], params)) for spec in specs
    ]
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
