"""The aggregator's view of the sampler pool and the principle generator, over gRPC.

`RemoteSamplerPool` is a SampleSource for the ScoringPipeline: it spreads one request's k
samples over all sampler endpoints (one channel each, least loaded first, round-robin among
equals), gives each call the caller's remaining deadline minus a reserve, and turns a lost
endpoint into invalid "sampler unavailable" samples — which the pipeline re-samples, and this
pool then sends to the endpoints that are still up. A sampler's INVALID_ARGUMENT (e.g. the
prompt is over its model's input limit) is the caller's error: it is raised, not re-sampled.
`sample` makes one unary `Sample` call per endpoint and returns when all are back; `stream`
(anytime voting) makes one `SampleStream` call per endpoint and yields the samples as they
arrive, and closing it cancels the calls still open.

The address set can change at run time (`update_addresses`, fed by sampler discovery): new
endpoints join, gone ones stop getting work and their channels close once their in-flight
calls end. An empty pool is allowed (discovery may find no ready sampler yet): sampling then
yields "sampler unavailable" samples (UNAVAILABLE) and the free capacity is 0.

Readiness and model identity (`probe`, run by the aggregator's readiness watcher before it
reports SERVING and every interval after): each endpoint's gRPC health is checked and, when
SERVING, `Describe` says which model it serves. The pool's model (`info`, part of every cache
key) is the one most healthy samplers serve, so an aggregator that just restarted keys its
first request like the others did. A request is pinned to that model (`SamplingJob.model`):
its samples go only to samplers serving it (or not identified yet), and a reply from another
model is turned into invalid samples, never voted. Samplers that disagree are logged and
counted (`grm_samplers_model_mismatch`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grm import telemetry
from grm.core.errors import DeadlineExceededError, UnavailableError
from grm.core.plan import MARGINS, SamplingJob
from grm.core.planner import LatencyWindow
from grm.core.sampling import DEADLINE_REASON, unfinished
from grm.core.types import ModelInfo, Sample, SampleSpec
from grm.rpc import convert
from grm.rpc.security import PLAINTEXT, ClientSecurity, aio_channel, bearer_header
from grm.rpc.server import channel_options
from grm.scoring.principles import PrincipleSet
from grm.services.aggregator.channel import (
    DEFAULT_MAX_AGE_S,
    DEFAULT_WRITE_INTERVAL_S,
    CallEnded,
    Expired,
    JobEvent,
    SamplerChannel,
)
from grm.telemetry import ClientTraceInterceptor
from grm.v1 import common_pb2, critique_pb2, critique_pb2_grpc, principle_pb2_grpc

log = logging.getLogger(__name__)

UNAVAILABLE_REASON = "sampler unavailable"
MODEL_MISMATCH_REASON = "sampler serves another model"
# Codes that mean "this endpoint is gone or going" (connection lost, server stopping).
_LOST = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
_CHANNEL_METHOD = "/grm.v1.CritiqueService/SampleChannel"
_STREAM_METHOD = "/grm.v1.CritiqueService/SampleStream"


@dataclass
class Endpoint:
    """One sampler address, its channel and what this aggregator knows of its load."""

    address: str
    channel: grpc.aio.Channel | None = None
    stub: critique_pb2_grpc.CritiqueServiceStub | None = None
    capacity: int | None = None  # from the sampler's last load report (None: not heard yet)
    outstanding: int = 0  # samples this aggregator has in flight there
    down_until: float = 0.0
    samples_sent: int = 0
    failures: int = 0
    last_error: str = field(default="", repr=False)
    retired: bool = False  # removed from the pool: close the channel when idle
    healthy: bool | None = None  # its gRPC health at the last probe (None: not probed yet)
    model: ModelInfo | None = None  # what it serves (Describe or its last reply)
    mux: SamplerChannel | None = field(default=None, repr=False)  # its SampleChannel calls
    channel_ok: bool = True  # False: an older sampler without SampleChannel


async def probe_health(
    channel: grpc.aio.Channel,
    describe: Callable[..., Awaitable[common_pb2.ServiceInfo]],
    timeout_s: float,
) -> common_pb2.ServiceInfo | None:
    """Health Check, then `describe` when SERVING: the service's info, or None when it is not
    serving or does not answer (each call bounded by `timeout_s`)."""
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
        )
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return None
        return await describe(common_pb2.DescribeRequest(), timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
            return common_pb2.ServiceInfo()  # an older server: serving, model learnt on use
        return None


def _model_name(model: ModelInfo | None) -> str:
    """A model as log lines and reasons name it."""
    if model is None:
        return "any model"
    revision = f"@{model.revision}" if model.revision else ""
    return f"{model.model_id}{revision} ({model.backend}, {model.template_version or '-'})"


class RemoteSamplerPool:
    """A SampleSource over a set of CritiqueService endpoints (static or discovered)."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        down_for_s: float = 2.0,
        max_message_mb: int = 64,
        clock: Callable[[], float] = time.monotonic,
        security: ClientSecurity | None = None,
        channel_max_age_s: float = DEFAULT_MAX_AGE_S,
        use_channel: bool = True,
        channel_write_interval_s: float = DEFAULT_WRITE_INTERVAL_S,
    ) -> None:
        self.endpoints = [Endpoint(a) for a in dict.fromkeys(addresses)]
        # A SampleChannel call older than this takes no new jobs (rotated tokens, balance).
        self.channel_max_age_s = channel_max_age_s
        self.use_channel = use_channel  # False: SampleStream calls only (a kill switch)
        self.channel_write_interval_s = channel_write_interval_s  # writes at most this often
        self.down_for_s = down_for_s
        self.max_message_mb = max_message_mb
        self.security = security  # TLS and bearer token for the sampler channels
        self.clock = clock
        self._cursor = 0
        self._info = ModelInfo(model_id="unknown", backend="remote")
        # Per-sample service time of calls that did not queue at the sampler (k planner).
        self.latency = LatencyWindow()
        self._retired: list[Endpoint] = []  # removed, channel still open for in-flight calls
        self._closing: set[asyncio.Task[None]] = set()
        self._mismatched: frozenset[str] = frozenset()  # addresses last logged as disagreeing
        telemetry.watch_pool(self)  # grm_samplers_ready, grm_samplers_model_mismatch

    @property
    def addresses(self) -> list[str]:
        """The current members, in pool order."""
        return [ep.address for ep in self.endpoints]

    def update_addresses(self, addresses: Iterable[str]) -> None:
        """Replace the member set at run time (discovery): keep the endpoints that stay (their
        channel and load), add new ones, retire gone ones — a retired endpoint gets no new work
        and its channel closes once its in-flight calls have finished."""
        wanted = list(dict.fromkeys(addresses))
        keep = set(wanted)
        current = {ep.address: ep for ep in self.endpoints}
        for ep in self.endpoints:
            if ep.address not in keep:
                self._retire(ep)
        self.endpoints = [
            *(ep for ep in self.endpoints if ep.address in keep),
            *(Endpoint(a) for a in sorted(keep - current.keys())),
        ]
        if self.endpoints:
            self._cursor %= len(self.endpoints)
        else:
            self._cursor = 0

    def _retire(self, ep: Endpoint) -> None:
        ep.retired = True
        if ep.outstanding:
            self._retired.append(ep)  # _call closes it when the last call returns
        else:
            self._close_later(ep)

    def _close_later(self, ep: Endpoint) -> None:
        # Closing the channel cancels its SampleChannel calls (their tasks then end).
        channel, ep.channel, ep.stub, ep.mux = ep.channel, None, None, None
        if ep in self._retired:
            self._retired.remove(ep)
        if channel is None:
            return
        task = asyncio.get_running_loop().create_task(channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def info(self) -> ModelInfo:
        """The pool's model: what most samplers serve (part of every result and cache key)."""
        return self._info

    @property
    def ready(self) -> bool:
        """Whether a sampler answered the last probe and serves the pool's model."""
        return self.ready_count > 0

    @property
    def ready_count(self) -> int:
        return sum(1 for ep in self.endpoints if ep.healthy and self._serves(ep, self._info))

    @property
    def mismatched_count(self) -> int:
        return len(self._mismatched)

    @staticmethod
    def _serves(ep: Endpoint, model: ModelInfo | None) -> bool:
        """Whether `ep` may draw samples for a request pinned to `model` (an endpoint not
        identified yet may: a reply from another model is rejected in `_call`)."""
        return model is None or ep.model is None or ep.model == model

    async def probe(self, timeout_s: float = 1.0) -> None:
        """Ask every endpoint for its health and model (the readiness watcher's check)."""

        async def one(ep: Endpoint) -> None:
            stub = self._connect(ep)
            assert ep.channel is not None
            info = await probe_health(ep.channel, stub.Describe, timeout_s)
            ep.healthy = info is not None
            if info is None:
                return
            ep.channel_ok = True  # an upgraded sampler may serve SampleChannel now
            model = convert.model_from_pb(info.model)
            if model is not None:
                ep.model = model
            if info.load.capacity:
                ep.capacity = info.load.capacity

        await asyncio.gather(*(one(ep) for ep in list(self.endpoints)))
        self._settle_models()

    def _settle_models(self) -> None:
        """The pool's model: the one most live samplers serve (the current one on a tie);
        log the samplers that serve another when that set changes."""
        counts: dict[ModelInfo, int] = {}
        for ep in self.endpoints:
            if ep.model is not None and ep.healthy is not False:
                counts[ep.model] = counts.get(ep.model, 0) + 1
        if counts:
            top = max(counts.values())
            if counts.get(self._info, 0) < top:
                self._info = next(m for m, c in counts.items() if c == top)
        mismatched = frozenset(
            ep.address
            for ep in self.endpoints
            if ep.model is not None and ep.healthy is not False and ep.model != self._info
        )
        if mismatched != self._mismatched and mismatched:
            log.warning(
                "samplers disagree on the model: the pool serves %s; %s",
                _model_name(self._info),
                ", ".join(
                    f"{ep.address} serves {_model_name(ep.model)}"
                    for ep in self.endpoints
                    if ep.address in mismatched and ep.model is not None
                ),
            )
        elif self._mismatched and not mismatched:
            log.info("samplers agree on the model again: %s", _model_name(self._info))
        self._mismatched = mismatched

    def load(self) -> tuple[int, int]:
        """(capacity, samples in flight or queued) over the endpoints that are up: the k
        planner's view of the pool (work queued ahead delays a new request's samples)."""
        now = self.clock()
        up = [ep for ep in self.endpoints if ep.down_until <= now]
        known = [ep.capacity for ep in self.endpoints if ep.capacity]
        default = max(known, default=1)
        return sum(ep.capacity or default for ep in up), sum(ep.outstanding for ep in up)

    def _connect(self, ep: Endpoint) -> critique_pb2_grpc.CritiqueServiceStub:
        if ep.stub is None:
            # No interceptor: Sample and SampleStream carry the request's trace themselves.
            ep.channel = aio_channel(
                ep.address, self.security, options=channel_options(self.max_message_mb)
            )
            ep.stub = critique_pb2_grpc.CritiqueServiceStub(ep.channel)
        return ep.stub

    def plan(
        self, specs: Sequence[SampleSpec], model: ModelInfo | None = None
    ) -> list[list[SampleSpec]]:
        """Assign specs to endpoints: least loaded relative to capacity, round-robin on ties.

        Only endpoints that may serve `model` take part (none: every spec is left out).
        Endpoints marked down (a lost call, a failed probe) are skipped while any other is
        up; with all down, all are tried (one may have come back).
        """
        now = self.clock()
        n = len(self.endpoints)
        if n == 0:
            return []
        serving = [i for i, ep in enumerate(self.endpoints) if self._serves(ep, model)]
        if not serving:
            return [[] for _ in range(n)]
        up = [
            i
            for i in serving
            if self.endpoints[i].down_until <= now and self.endpoints[i].healthy is not False
        ] or serving
        known = [ep.capacity for ep in self.endpoints if ep.capacity]
        default = max(known, default=1)  # a sampler not heard from yet: like the others
        assigned = [0] * n
        plan: list[list[SampleSpec]] = [[] for _ in range(n)]
        start = self._cursor % n
        self._cursor = (start + 1) % n

        def key(i: int) -> tuple[float, int]:
            ep = self.endpoints[i]
            load = (ep.outstanding + assigned[i]) / (ep.capacity or default)
            return load, (i - start) % n

        for spec in specs:
            best = min(up, key=key)
            assigned[best] += 1
            plan[best].append(spec)
        return plan

    async def sample(self, job: SamplingJob, specs: Sequence[SampleSpec]) -> list[Sample]:
        """Draw the specs across the pool; lost or late samples come back invalid (`stream`,
        gathered in `specs` order)."""
        by_key: dict[tuple[int, int], Sample] = {}
        stream = self._stream(job, specs, whole=True)
        try:
            async for batch in stream:
                for sample in batch:
                    by_key[(sample.spec.index, sample.spec.attempt)] = sample
        finally:
            await stream.aclose()
        return [
            by_key.get((s.index, s.attempt)) or unfinished(s, "sampler returned no sample")
            for s in specs
        ]

    def stream(self, job: SamplingJob, specs: Sequence[SampleSpec]) -> AsyncIterator[list[Sample]]:
        """Draw the specs across the pool, one job per endpoint on its SampleChannel call, and
        yield the samples as they arrive (lost or late ones as invalid samples).

        Each job's deadline is the time left before `job.deadline` (the aggregator's reply
        reserve is already out of it; the sampler keeps its own). Closing the iterator (an
        anytime vote, the caller gone) cancels the jobs still open; the samplers then cancel
        their samples, down to the engine's HTTP request.
        """
        return self._stream(job, specs, whole=False)

    async def _stream(
        self, job: SamplingJob, specs: Sequence[SampleSpec], *, whole: bool
    ) -> AsyncIterator[list[Sample]]:
        """`whole`: each sampler answers once with all its samples (fewer messages)."""
        now = time.monotonic()
        left = job.time_left(now)
        if left is not None and left <= MARGINS.min_call_s:
            yield [unfinished(s, DEADLINE_REASON) for s in specs]
            return
        if not self.endpoints:
            reason = f"{UNAVAILABLE_REASON} (no sampler in the pool)"
            yield [unfinished(s, reason, finish_reason="error") for s in specs]
            return
        vote_in = job.vote_in(now)
        endpoints = list(self.endpoints)
        plan = self.plan(specs, job.model)
        if not any(plan):
            reason = f"{UNAVAILABLE_REASON} (none serves {_model_name(job.model)})"
            yield [unfinished(s, reason, finish_reason="error") for s in specs]
            return
        arrived: asyncio.Queue[list[Sample] | BaseException | None] = asyncio.Queue()

        def ended(task: asyncio.Future[None]) -> None:
            exc = None if task.cancelled() else task.exception()
            arrived.put_nowait(exc)  # None: that call is over

        calls = []
        for ep, batch in zip(endpoints, plan, strict=True):
            if batch:
                call = asyncio.ensure_future(
                    self._draw(ep, job, batch, left, vote_in, arrived.put_nowait, whole)
                )
                call.add_done_callback(ended)
                calls.append(call)
        try:
            open_calls = len(calls)
            while open_calls:
                item = await arrived.get()
                if item is None:
                    open_calls -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)

    async def _draw(
        self,
        ep: Endpoint,
        job: SamplingJob,
        specs: Sequence[SampleSpec],
        time_limit: float | None,
        vote_in: float | None,
        emit: Callable[[list[Sample]], None],
        whole: bool,
    ) -> None:
        """One endpoint's share of a request: a job on its SampleChannel call, or a
        SampleStream call to a sampler that has no SampleChannel (an older version)."""
        request = self._request(job, specs, vote_in)
        share = _Share(self, ep, job, specs, emit)
        try:
            if (
                self.use_channel
                and ep.channel_ok
                and await self._channel_job(share, request, time_limit, whole)
            ):
                return
            await self._stream_call(share, request, time_limit)
        finally:
            share.close()

    def _mux(self, ep: Endpoint) -> SamplerChannel:
        if ep.mux is None:
            token = (self.security or PLAINTEXT).token_source()

            def observe(update: critique_pb2.ChannelUpdate) -> None:
                if update.load.capacity:
                    ep.capacity = update.load.capacity

            ep.mux = SamplerChannel(
                self._connect(ep),
                metadata=(lambda: [bearer_header(token)]) if token is not None else tuple,
                observe=observe,
                max_age_s=self.channel_max_age_s,
                write_interval_s=self.channel_write_interval_s,
            )
        return ep.mux

    async def _channel_job(
        self,
        share: _Share,
        request: critique_pb2.CritiqueRequest,
        time_limit: float | None,
        whole: bool,
    ) -> bool:
        """One job on the endpoint's SampleChannel; False (nothing emitted) when the sampler
        has no SampleChannel."""
        ep = share.ep
        mux = self._mux(ep)
        code = grpc.StatusCode.OK
        done = False
        with telemetry.client_span(_CHANNEL_METHOD) as (span, trace):
            size = _size(share.job, share.waiting.values())
            ticket = mux.start(request, timeout_s=time_limit, trace=trace, whole=whole, size=size)
            timer = None
            if time_limit is not None:
                timer = asyncio.get_running_loop().call_later(time_limit, ticket.expire)
            try:
                while share.waiting and not share.settled and not done:
                    for event in await ticket.next():
                        if isinstance(event, critique_pb2.JobUpdate) and not event.error_code:
                            if share.heard or share.model(convert.model_from_pb(ticket.model)):
                                share.arrived(event.samples)
                                done = event.done
                            continue
                        done = not isinstance(event, Expired)  # expired: still running there
                        code, details, field = _job_failure(event)
                        if code is grpc.StatusCode.UNIMPLEMENTED and not share.heard:
                            ep.channel_ok = False  # an older sampler: SampleStream it is
                            return False
                        share.failed(code, details, field)
                        break
                share.finish()
            finally:
                if timer is not None:
                    timer.cancel()
                mux.finish(ticket, cancel=not done)
                telemetry.end_client_span(span, code)
        return True

    async def _stream_call(
        self, share: _Share, request: critique_pb2.CritiqueRequest, time_limit: float | None
    ) -> None:
        """One SampleStream call: emit each update's samples as it arrives."""
        ep = share.ep
        with telemetry.client_span(_STREAM_METHOD) as (span, metadata):
            call = self._connect(ep).SampleStream(request, timeout=time_limit, metadata=metadata)
            try:
                async for update in call:
                    if update.load.capacity:
                        ep.capacity = update.load.capacity
                    if not share.model(convert.model_from_pb(update.model)):
                        return
                    share.arrived(update.samples)
            except grpc.aio.AioRpcError as exc:
                telemetry.end_client_span(span, exc.code())
                share.failed(exc.code(), exc.details() or "", _field(exc))
                return
            finally:
                call.cancel()  # no-op once it ended; else the sampler stops its samples
            telemetry.end_client_span(span, grpc.StatusCode.OK)
            share.finish()

    def _request(
        self, job: SamplingJob, specs: Sequence[SampleSpec], vote_in: float | None
    ) -> critique_pb2.CritiqueRequest:
        request = convert.critique_request(
            job.context, job.responses, specs, job.params, reference=job.reference
        )
        if vote_in is not None:  # the sampler serves the earliest vote first (0 = no budget)
            request.vote_in_ms = max(1, round(vote_in * 1000))
        return request

    def _failed(
        self,
        ep: Endpoint,
        code: grpc.StatusCode,
        details: str,
        field: str | None,
        specs: Sequence[SampleSpec],
    ) -> list[Sample]:
        """A failed call's or job's specs as invalid samples (the endpoint marked down when
        lost); a sampler's INVALID_ARGUMENT is the caller's error and is raised."""
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            raise convert.error_from_status(code, details, field) from None
        ep.failures += 1
        ep.last_error = f"{code.name}: {details}"
        if code in _LOST:
            ep.down_until = self.clock() + self.down_for_s
            reason = f"{UNAVAILABLE_REASON} ({ep.address}: {ep.last_error})"
            log.warning("sampler %s lost (%s); re-routing", ep.address, ep.last_error)
        elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
            reason = f"{DEADLINE_REASON} (sampler {ep.address})"
        else:
            reason = f"sampler error ({ep.address}: {ep.last_error})"
        return [unfinished(s, reason, finish_reason="error") for s in specs]

    def _check_model(self, ep: Endpoint, job: SamplingJob, model: ModelInfo | None) -> str:
        """Learn the model an endpoint replied with; the reason its samples cannot vote for
        `job` ("" when they can)."""
        if model is not None and model != ep.model:
            ep.model = model
            self._settle_models()
        if job.model is not None and model is not None and model != job.model:
            # Never mixed into one vote: the request is pinned to its model.
            return (
                f"{MODEL_MISMATCH_REASON} ({ep.address}: {_model_name(model)}, "
                f"the request's is {_model_name(job.model)})"
            )
        return ""

    def stats(self) -> dict[str, dict[str, int | str | bool | None]]:
        """Per endpoint: samples sent, failures, capacity, in flight, health and model."""
        return {
            ep.address: {
                "samples_sent": ep.samples_sent,
                "failures": ep.failures,
                "capacity": ep.capacity,
                "outstanding": ep.outstanding,
                "last_error": ep.last_error,
                "healthy": ep.healthy,
                "model": _model_name(ep.model) if ep.model else None,
            }
            for ep in self.endpoints
        }

    async def close(self) -> None:
        for ep in [*self.endpoints, *self._retired]:
            if ep.mux is not None:
                await ep.mux.close()
                ep.mux = None
            if ep.channel is not None:
                await ep.channel.close()
            ep.channel = ep.stub = None
        self._retired.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _size(job: SamplingJob, specs: Iterable[SampleSpec]) -> int:
    """About a job's encoded bytes, from above (UTF-8 takes at most 4 per character)."""
    chars = sum(len(t.content) for t in job.context.turns) + len(job.reference or "")
    chars += sum(len(r) for r in job.responses) + sum(len(s.principles) for s in specs)
    return 4 * chars + 64 * len(specs) + 256


def _job_failure(event: JobEvent) -> tuple[grpc.StatusCode, str, str | None]:
    """The status of a SampleChannel job that ended without all its samples: its own error,
    the call's (lost sampler), the call ended by a stopping sampler, or its deadline."""
    if isinstance(event, critique_pb2.JobUpdate):
        error = convert.error_from_status(event.error_code, event.error_message, event.error_field)
        return convert.status_code(error), str(error), error.field
    if isinstance(event, grpc.aio.AioRpcError):
        return event.code(), event.details() or "", None
    if isinstance(event, CallEnded):
        return grpc.StatusCode.UNAVAILABLE, str(event), None
    return grpc.StatusCode.DEADLINE_EXCEEDED, "the job's deadline passed", None


def _field(exc: grpc.aio.AioRpcError) -> str | None:
    """The request field a failed call's trailing metadata names."""
    field = dict(exc.trailing_metadata() or ()).get(convert.FIELD_METADATA_KEY)
    return str(field) if field else None


class _Share:
    """One endpoint's share of a request while it is drawn (a SampleChannel job or a
    SampleStream call): the specs still owed, and the bookkeeping both paths share — the
    endpoint's in-flight count, the model check, the k planner's service-time sample."""

    def __init__(
        self,
        pool: RemoteSamplerPool,
        ep: Endpoint,
        job: SamplingJob,
        specs: Sequence[SampleSpec],
        emit: Callable[[list[Sample]], None],
    ) -> None:
        self.pool, self.ep, self.job, self.emit = pool, ep, job, emit
        self.waiting = {(s.index, s.attempt): s for s in specs}
        self.heard = False  # a reply came (the sampler knows the call)
        self.settled = False  # every owed spec has been emitted (failed or mismatched)
        self.all_generated = True
        # Only a share that fits the sampler's free slots measures service time, not queueing.
        self.unqueued = ep.outstanding + len(specs) <= (ep.capacity or len(specs))
        ep.outstanding += len(specs)
        ep.samples_sent += len(specs)
        self.called = time.perf_counter()

    def model(self, model: ModelInfo | None) -> bool:
        """Learn the model the sampler named; False (the owed specs emitted as invalid) when
        its samples cannot vote for this request."""
        self.heard = True
        mismatch = self.pool._check_model(self.ep, self.job, model)
        if mismatch:
            left = self.waiting.values()
            self._settle([unfinished(s, mismatch, finish_reason="error") for s in left])
        return not mismatch

    def arrived(self, messages: Iterable[common_pb2.Sample]) -> None:
        n = len(self.job.responses)
        got = [convert.sample_from_pb(m, n, sampler=self.ep.address) for m in messages]
        for sample in got:
            if self.waiting.pop((sample.spec.index, sample.spec.attempt), None):
                self.ep.outstanding -= 1
            self.all_generated = self.all_generated and bool(sample.text)
        if got:
            self.emit(got)

    def failed(self, code: grpc.StatusCode, details: str, field: str | None) -> None:
        """The call or job failed: the owed specs as invalid samples (INVALID_ARGUMENT is
        raised: the request itself is wrong)."""
        self.settled = True  # also when raised: nothing more is owed to the caller
        self.emit(self.pool._failed(self.ep, code, details, field, list(self.waiting.values())))

    def _settle(self, samples: list[Sample]) -> None:
        self.settled = True
        self.emit(samples)

    def close(self) -> None:
        """The share is over (also when cancelled): release the endpoint."""
        ep = self.ep
        ep.outstanding -= len(self.waiting)  # those not arrived (emitted as failed, or missing)
        if ep.retired and not ep.outstanding:
            self.pool._close_later(ep)

    def finish(self) -> None:
        """The sampler has answered all it will: owed specs as missing, else the service
        time for the k planner."""
        if self.settled:
            return
        if self.waiting:
            self.emit([unfinished(s, "sampler returned no sample") for s in self.waiting.values()])
        elif self.unqueued and self.all_generated:
            # every sample generated (none cut by the deadline): the call took one service time
            self.pool.latency.observe((time.perf_counter() - self.called) * 1000)


class RemotePrincipleSource:
    """A PrincipleSource over PrincipleService endpoints (failover in round-robin order)."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        max_message_mb: int = 64,
        security: ClientSecurity | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("the principle source needs at least one address")
        self.addresses = list(addresses)
        self.max_message_mb = max_message_mb
        self.security = security  # TLS and bearer token for the principle channels
        self._stubs: dict[str, principle_pb2_grpc.PrincipleServiceStub] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._cursor = 0
        self._info = ModelInfo(model_id="unknown", backend="remote")
        self.healthy: dict[str, bool] = {}  # per address, at the last probe

    @property
    def ready(self) -> bool:
        """Whether a principle generator answered the last probe."""
        return any(self.healthy.values())

    async def probe(self, timeout_s: float = 1.0) -> None:
        """Ask every endpoint for its health and model (the readiness watcher's check)."""

        async def one(address: str) -> None:
            stub = self._stub(address)
            info = await probe_health(self._channels[address], stub.Describe, timeout_s)
            self.healthy[address] = info is not None
            model = None if info is None else convert.model_from_pb(info.model)
            if model is not None:
                self._info = model

        await asyncio.gather(*(one(a) for a in self.addresses))

    @property
    def info(self) -> ModelInfo:
        """The model the principle generator last reported (part of principle cache keys)."""
        return self._info

    def _stub(self, address: str) -> principle_pb2_grpc.PrincipleServiceStub:
        if address not in self._stubs:
            channel = aio_channel(
                address,
                self.security,
                options=channel_options(self.max_message_mb),
                interceptors=[ClientTraceInterceptor()],  # joins the request's trace
            )
            self._channels[address] = channel
            self._stubs[address] = principle_pb2_grpc.PrincipleServiceStub(channel)
        return self._stubs[address]

    async def generate(self, job: SamplingJob, n: int, seed: int) -> list[PrincipleSet]:
        """n principle sets; an unavailable endpoint is skipped for the next one."""
        request = convert.principle_request(
            job.context, job.responses, n, seed, job.params, job.reference
        )
        start = self._cursor
        self._cursor = (self._cursor + 1) % len(self.addresses)
        last: Exception | None = None
        for step in range(len(self.addresses)):
            address = self.addresses[(start + step) % len(self.addresses)]
            left = job.time_left(time.monotonic())
            if left is not None and left <= 0:
                raise DeadlineExceededError("no time left for principle generation")
            try:
                reply = await self._stub(address).GeneratePrinciples(request, timeout=left)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _LOST:
                    last = exc
                    continue
                raise convert.error_from_status(
                    exc.code(), f"principle generator: {exc.details()}"
                ) from exc
            model = convert.model_from_pb(reply.model)
            if model is not None:
                self._info = model
            return convert.principle_sets_from_pb(reply.sets)
        raise UnavailableError(f"no principle generator reachable ({last})")

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
