"""The sampler's side of SampleChannel: many requests' samples over one long-lived call.

An aggregator keeps one SampleChannel call per sampler. Each `ChannelJob` it writes starts one
request's samples (a task running `stream_within`, as SampleStream does); the samples go back
tagged with the job's id as they finish, and updates that are ready together (of one job or
several) travel in one message. Messages are paced (grm.core.pacing): at least
`write_interval_s` apart, so under load the updates ready meanwhile share one, while an update
on a quiet call goes at once, and so does a streamed job's (its caller may be racing a vote) or
a failure. A cancel stops a job down to the engine. A job that fails as a whole (a request over
the model's input limit, the sampler stopping) gets its own status in a `JobUpdate`; the call
goes on. The call ends when the caller stops writing and its jobs are done, or, once the
sampler drains (SIGTERM), when the jobs already running are done.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from grm import telemetry
from grm.core.errors import GrmError, UnavailableError
from grm.core.pacing import SAMPLE_CHANNEL_INTERVAL_S, Pacer
from grm.core.plan import SamplingJob
from grm.core.types import SampleSpec
from grm.rpc import convert
from grm.scoring.critique import CritiqueSampler, stream_within
from grm.v1 import common_pb2, critique_pb2

log = logging.getLogger(__name__)

METHOD = "/grm.v1.CritiqueService/SampleChannel"
STOPPING = "the sampler is stopping"
# Updates ready together share a message up to about this size (far below gRPC's limit).
MAX_BATCH_BYTES = 4 * 1024 * 1024
DEFAULT_WRITE_INTERVAL_S = SAMPLE_CHANNEL_INTERVAL_S

JobBuilder = Callable[[critique_pb2.CritiqueRequest, float | None], tuple[SamplingJob, list[Any]]]


class ChannelSession:
    """One SampleChannel call: its running jobs and the updates not yet written."""

    def __init__(
        self,
        sampler: CritiqueSampler,
        build: JobBuilder,
        load: Callable[[], common_pb2.SamplerLoad],
        *,
        write_interval_s: float = DEFAULT_WRITE_INTERVAL_S,
    ) -> None:
        self.sampler = sampler
        self.pacer = Pacer(write_interval_s)
        self.build = build
        self.load = load
        self.jobs: dict[int, asyncio.Task[None]] = {}
        # (update, ~bytes, urgent: a streamed job's or a failure, sent without pacing)
        self.outbox: deque[tuple[critique_pb2.JobUpdate, int, bool]] = deque()
        self.wake = asyncio.Event()
        self.reading = True  # the caller may still write jobs
        self.draining = False
        self.failed: BaseException | None = None

    def drain(self) -> None:
        """Refuse new jobs; the call ends when the running ones are done."""
        self.draining = True
        self.wake.set()

    def _post(
        self, update: critique_pb2.JobUpdate, size: int = 256, *, urgent: bool = True
    ) -> None:
        self.outbox.append((update, size, urgent))
        self.wake.set()
        if urgent:
            self.pacer.hurry()

    def _next_updates(self) -> list[critique_pb2.JobUpdate]:
        """The waiting updates that fit one message (one update alone may be larger)."""
        updates: list[critique_pb2.JobUpdate] = []
        size = 0
        while self.outbox and (not updates or size + self.outbox[0][1] <= MAX_BATCH_BYTES):
            update, n, _ = self.outbox.popleft()
            updates.append(update)
            size += n
        return updates

    async def serve(
        self, requests: AsyncIterator[critique_pb2.ChannelRequest]
    ) -> AsyncIterator[critique_pb2.ChannelUpdate]:
        """The call's replies: every update ready since the previous write, in one message."""
        reader = asyncio.ensure_future(self._read(requests))
        model: common_pb2.ModelInfo | None = convert.model_to_pb(self.sampler.info)
        try:
            while True:
                if self.outbox:
                    # Updates ready meanwhile share this message (an urgent one: no waiting).
                    await self.pacer.turn(urgent=any(u for _, _, u in self.outbox))
                    updates = self._next_updates()
                    yield critique_pb2.ChannelUpdate(jobs=updates, load=self.load(), model=model)
                    model = None  # the call's first update names the model
                    continue
                if self.failed is not None:
                    raise self.failed
                if not self.jobs and (not self.reading or self.draining):
                    return
                await self.wake.wait()
                self.wake.clear()
        finally:
            reader.cancel()
            running = list(self.jobs.values())
            for task in running:
                task.cancel()
            await asyncio.gather(reader, *running, return_exceptions=True)

    async def _read(self, requests: AsyncIterator[critique_pb2.ChannelRequest]) -> None:
        try:
            async for message in requests:
                for jid in message.cancel:
                    task = self.jobs.pop(jid, None)
                    if task is not None:
                        task.cancel()  # sends nothing more for this job
                for job in message.jobs:
                    if self.draining:
                        self._post(_failed(job.id, UnavailableError(STOPPING)))
                    elif job.id not in self.jobs:
                        self.jobs[job.id] = asyncio.ensure_future(self._run(job))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an unreadable message: the call fails, not the sampler
            log.warning("SampleChannel: cannot read the caller's messages (%s)", exc)
            self.failed = exc
        finally:
            self.reading = False
            self.wake.set()

    async def _run(self, message: critique_pb2.ChannelJob) -> None:
        jid = message.id
        try:
            timeout = message.timeout_ms / 1000 if message.timeout_ms else None
            job, specs = self.build(message.request, timeout)
            await self._stream(jid, job, specs, message.trace, whole=message.whole)
        except asyncio.CancelledError:
            raise
        except GrmError as exc:
            log.info("SampleChannel job -> %s: %s", exc.code, exc)
            self._post(_failed(jid, exc))
        except Exception as exc:
            log.exception("SampleChannel job failed")
            self._post(_failed(jid, exc))
        finally:
            if self.jobs.get(jid) is asyncio.current_task():
                del self.jobs[jid]
            self.wake.set()

    async def _stream(
        self, jid: int, job: SamplingJob, specs: list[SampleSpec], trace: Any, *, whole: bool
    ) -> None:
        """Post the job's samples as they finish (`whole`: all in one update at the end)."""
        left = len(specs)
        held: list[common_pb2.Sample] = []
        size = 256
        with telemetry.carried_span(METHOD, trace), telemetry.sample_batch(len(specs)):
            stream = stream_within(self.sampler, job, specs)
            try:
                async for batch in stream:
                    left -= len(batch)
                    held.extend(convert.sample_to_pb(s) for s in batch)
                    # text, principles and critique (parts of the text), UTF-8: from above
                    size += sum(12 * len(s.text) + 256 for s in batch)
                    if not whole or left <= 0:
                        update = critique_pb2.JobUpdate(id=jid, samples=held, done=left <= 0)
                        self._post(update, size, urgent=not whole)
                        held, size = [], 256
            finally:
                await stream.aclose()
        if left > 0:  # stream_within yields every spec; never leave the caller waiting
            final = critique_pb2.JobUpdate(id=jid, samples=held, done=True)
            self._post(final, size, urgent=not whole)


def _failed(jid: int, exc: BaseException) -> critique_pb2.JobUpdate:
    """A job's own error status (a GrmError's code; anything else INTERNAL)."""
    error = convert.item_error(exc)
    return critique_pb2.JobUpdate(
        id=jid, error_code=error.code, error_message=error.message, error_field=error.field
    )
