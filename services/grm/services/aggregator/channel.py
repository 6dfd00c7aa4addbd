"""The aggregator's side of SampleChannel: one long-lived call per sampler carries many jobs.

`SamplerChannel.start` sends one request's samples as a `ChannelJob` on the endpoint's open
call (opening one when there is none) and returns a `Ticket` whose updates the caller reads.
Jobs started in the same loop iteration go in one write, and writes on a call are paced
(grm.core.pacing): at least `write_interval_s` apart, so under load the jobs started meanwhile
share the next one, while a job on a quiet call goes at once, and so does one with a latency
budget (it races its vote). The call's reader hands each `JobUpdate` to its job. A call older
than `max_age_s` takes no new jobs: the next job opens a fresh call (so a rotated bearer token
and a re-balanced connection take effect) and the old one is closed once its jobs are done.
When a call fails or ends, each of its open jobs gets the error (or `CallEnded`) and the pool
treats it as it treats a lost SampleStream call.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from grm.core.pacing import SAMPLE_CHANNEL_INTERVAL_S, Pacer
from grm.v1 import common_pb2, critique_pb2, critique_pb2_grpc

# A call this old takes no new jobs. A sampler closes a connection 30 s after its maximum age
# (`grpc.max_connection_age_grace_ms`, rpc.server); a call opened just before that takes jobs
# for 20 s only, so every job still has 10 s or more to finish before the connection ends.
DEFAULT_MAX_AGE_S = 20.0
DEFAULT_WRITE_INTERVAL_S = SAMPLE_CHANNEL_INTERVAL_S


class CallEnded(Exception):
    """The sampler ended the call with the job still open (it was stopping)."""


class Expired:
    """The caller's deadline for the job passed."""


EXPIRED = Expired()
JobEvent = critique_pb2.JobUpdate | grpc.aio.AioRpcError | CallEnded | Expired


class Ticket:
    """One job on a call: its updates, in order, and the call's model."""

    __slots__ = ("_call", "_events", "_wake", "id")

    def __init__(self, call: _Call, jid: int) -> None:
        self._call = call
        self.id = jid
        self._events: list[JobEvent] = []
        self._wake: asyncio.Future[None] | None = None

    @property
    def model(self) -> common_pb2.ModelInfo | None:
        """The model the sampler named on this call (None before its first update)."""
        return self._call.model

    def _put(self, event: JobEvent) -> None:
        self._events.append(event)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def expire(self) -> None:
        """The job's deadline passed (the caller's timer): `next` returns `EXPIRED`."""
        self._put(EXPIRED)

    async def next(self) -> list[JobEvent]:
        """The events since the last read (waits for at least one)."""
        while not self._events:
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None
        events, self._events = self._events, []
        return events


@dataclass(eq=False)
class _Call:
    call: grpc.aio.StreamStreamCall
    opened: float
    jobs: dict[int, Ticket] = field(default_factory=dict)
    starts: deque[tuple[critique_pb2.ChannelJob, int]] = field(default_factory=deque)
    cancels: list[int] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    model: common_pb2.ModelInfo | None = None
    closing: bool = False  # rotated out: no new jobs, stop writing once the jobs are done
    ended: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    pacer: Pacer = field(default_factory=lambda: Pacer(DEFAULT_WRITE_INTERVAL_S))


class SamplerChannel:
    """The SampleChannel calls to one sampler."""

    def __init__(
        self,
        stub: critique_pb2_grpc.CritiqueServiceStub,
        *,
        metadata: Callable[[], Sequence[tuple[str, str]]] = tuple,
        observe: Callable[[critique_pb2.ChannelUpdate], None] = lambda _: None,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        max_batch_bytes: int = 4 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
        write_interval_s: float = DEFAULT_WRITE_INTERVAL_S,
    ) -> None:
        self.stub = stub
        self.metadata = metadata  # per call: the bearer token as it is now
        self.observe = observe  # every update (the sampler's load)
        self.max_age_s = max_age_s
        # Jobs started together share a write up to about this size (one job alone may be
        # larger, up to the channel's message limit), so no write nears that limit.
        self.max_batch_bytes = max_batch_bytes
        self.clock = clock
        self.write_interval_s = write_interval_s
        self._current: _Call | None = None
        self._calls: set[_Call] = set()
        self._next_id = 0
        self.calls_opened = 0
        self.writes = 0  # messages written, over all calls (jobs started together share one)
        self.reads = 0  # messages read, over all calls (updates ready together share one)

    @property
    def open_calls(self) -> int:
        """Calls not ended yet (the current one and rotated ones still finishing jobs)."""
        return len(self._calls)

    def start(
        self,
        request: critique_pb2.CritiqueRequest,
        *,
        timeout_s: float | None,
        trace: Sequence[tuple[str, str]] = (),
        whole: bool = False,
        size: int = 0,
    ) -> Ticket:
        """Send one job (`size`: about its encoded bytes); read its updates from the ticket."""
        call = self._open()
        self._next_id += 1
        ticket = Ticket(call, self._next_id)
        call.jobs[ticket.id] = ticket
        timeout_ms = 0 if timeout_s is None else max(1, round(timeout_s * 1000))
        job = critique_pb2.ChannelJob(
            id=ticket.id, request=request, timeout_ms=timeout_ms, trace=dict(trace), whole=whole
        )
        call.starts.append((job, size))
        call.wake.set()
        if request.vote_in_ms:
            call.pacer.hurry()  # it races its vote: no waiting for others to share the write
        return ticket

    def finish(self, ticket: Ticket, *, cancel: bool) -> None:
        """The caller is done with a job; `cancel` tells the sampler to stop it."""
        call = ticket._call
        if call.jobs.pop(ticket.id, None) is not None and cancel and not call.ended:
            call.cancels.append(ticket.id)
        call.wake.set()  # also lets a closing call stop writing once it is empty

    def _open(self) -> _Call:
        current = self._current
        if current is not None and not current.ended:
            if self.clock() - current.opened < self.max_age_s:
                return current
            current.closing = True
            current.wake.set()
        grpc_call = self.stub.SampleChannel(metadata=list(self.metadata()) or None)
        call = _Call(grpc_call, self.clock(), pacer=Pacer(self.write_interval_s))
        call.tasks = [
            asyncio.ensure_future(self._write(call)),
            asyncio.ensure_future(self._read(call)),
        ]
        self._current = call
        self._calls.add(call)
        self.calls_opened += 1
        return call

    async def _write(self, call: _Call) -> None:
        try:
            while not call.ended:
                await call.wake.wait()
                call.wake.clear()
                while call.starts or call.cancels:
                    # What starts meanwhile shares this write (a budgeted job: no waiting).
                    await call.pacer.turn(urgent=any(j.request.vote_in_ms for j, _ in call.starts))
                    await call.call.write(self._next_message(call))
                    self.writes += 1
                if call.closing and not call.jobs:
                    await call.call.done_writing()
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            # The call cannot take writes (it ended, or failed): end it, so its reader hands
            # every open job the call's status and none waits for a reply that cannot come.
            call.call.cancel()

    def _next_message(self, call: _Call) -> critique_pb2.ChannelRequest:
        """The cancels and the waiting jobs that fit one write."""
        jobs: list[critique_pb2.ChannelJob] = []
        size = 0
        while call.starts and (not jobs or size + call.starts[0][1] <= self.max_batch_bytes):
            job, n = call.starts.popleft()
            jobs.append(job)
            size += n
        message = critique_pb2.ChannelRequest(jobs=jobs, cancel=call.cancels)
        call.cancels = []
        return message

    async def _read(self, call: _Call) -> None:
        ended: JobEvent = CallEnded("the call was closed")
        try:
            async for update in call.call:
                self.reads += 1
                if update.HasField("model"):
                    call.model = update.model
                self.observe(update)
                for job in update.jobs:
                    ticket = call.jobs.get(job.id)
                    if ticket is not None:
                        if job.done or job.error_code:
                            del call.jobs[job.id]
                        ticket._put(job)
            ended = CallEnded("the sampler ended the call")
        except grpc.aio.AioRpcError as exc:
            ended = exc
        finally:
            call.ended = True
            call.wake.set()
            if self._current is call:
                self._current = None
            self._calls.discard(call)
            for ticket in call.jobs.values():
                ticket._put(ended)
            call.jobs.clear()

    async def close(self) -> None:
        """Cancel the open calls (their jobs get `CallEnded`)."""
        calls = list(self._calls)
        for call in calls:
            call.call.cancel()
        tasks = [t for call in calls for t in call.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._current = None
