"""CritiqueService: a thin servicer over CritiqueSampler (validate, convert, call)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from grm import telemetry
from grm.core.plan import SamplingJob
from grm.core.types import SampleSpec
from grm.core.validation import Defaults, Limits
from grm.rpc import convert
from grm.scoring.critique import CritiqueSampler, sample_within, stream_within
from grm.services.sampler.channel import DEFAULT_WRITE_INTERVAL_S, ChannelSession
from grm.v1 import common_pb2, critique_pb2, critique_pb2_grpc


class CritiqueServicer(critique_pb2_grpc.CritiqueServiceServicer):
    """Draws the samples of one request concurrently, never past the caller's deadline."""

    def __init__(
        self,
        sampler: CritiqueSampler,
        *,
        limits: Limits | None = None,
        defaults: Defaults | None = None,
        channel_write_interval_s: float = DEFAULT_WRITE_INTERVAL_S,
    ) -> None:
        self.sampler = sampler
        self.channel_write_interval_s = channel_write_interval_s
        telemetry.watch_sampler(sampler)  # grm_sampler_* gauges (the HPA's input)
        self.limits = limits or Limits()
        self.defaults = defaults or Defaults()
        self._channels: set[ChannelSession] = set()
        self._draining = False

    def drain(self) -> None:
        """Stopping (SIGTERM): open SampleChannel calls refuse new jobs and end once their
        running jobs are done, within the server's grace period."""
        self._draining = True
        for session in self._channels:
            session.drain()

    def _load(self) -> common_pb2.SamplerLoad:
        s = self.sampler
        return convert.load_to_pb(s.in_flight, s.queued, s.capacity)

    def _job(
        self, request: critique_pb2.CritiqueRequest, time_left_s: float | None
    ) -> tuple[SamplingJob, list[SampleSpec]]:
        ctx, responses, specs, params, reference = convert.critique_call(
            request, self.limits, self.defaults
        )
        # Work ends a reply reserve before the caller's deadline, so the partial answer still
        # reaches it; the backend bounds each generation by the same time (job.deadline).
        job = SamplingJob.from_relative(
            ctx,
            responses,
            params,
            now=time.monotonic(),
            time_left_s=time_left_s,
            vote_in_s=request.vote_in_ms / 1000 if request.vote_in_ms else None,
            reference=reference,
        )
        return job, specs

    async def Sample(
        self, request: critique_pb2.CritiqueRequest, context: grpc.aio.ServicerContext
    ) -> critique_pb2.CritiqueResponse:
        job, specs = self._job(request, context.time_remaining())
        with telemetry.sample_batch(len(specs)):
            samples = await sample_within(self.sampler, job, specs)
        return critique_pb2.CritiqueResponse(
            samples=[convert.sample_to_pb(s) for s in samples],
            load=self._load(),
            model=convert.model_to_pb(self.sampler.info),
        )

    async def SampleStream(
        self, request: critique_pb2.CritiqueRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[critique_pb2.CritiqueUpdate]:
        """The samples as they finish; the caller cancelling the call cancels the rest."""
        job, specs = self._job(request, context.time_remaining())
        model = convert.model_to_pb(self.sampler.info)
        with telemetry.sample_batch(len(specs)):
            stream = stream_within(self.sampler, job, specs)
            try:
                async for batch in stream:
                    yield critique_pb2.CritiqueUpdate(
                        samples=[convert.sample_to_pb(s) for s in batch],
                        load=self._load(),
                        model=model,
                    )
                    model = None  # the first update names the model
            finally:
                await stream.aclose()

    async def SampleChannel(
        self,
        request_iterator: AsyncIterator[critique_pb2.ChannelRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[critique_pb2.ChannelUpdate]:
        """Many requests' samples over one call (see `grm.services.sampler.channel`)."""
        session = ChannelSession(
            self.sampler, self._job, self._load, write_interval_s=self.channel_write_interval_s
        )
        if self._draining:
            session.drain()
        self._channels.add(session)
        try:
            async for update in session.serve(request_iterator):
                yield update
        finally:
            self._channels.discard(session)

    async def GetLoad(
        self, request: critique_pb2.LoadRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.SamplerLoad:
        return self._load()

    async def Describe(
        self, request: common_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ServiceInfo:
        """The model served (the aggregator keys its cache by it before the first request)."""
        return common_pb2.ServiceInfo(
            model=convert.model_to_pb(self.sampler.info), load=self._load()
        )
