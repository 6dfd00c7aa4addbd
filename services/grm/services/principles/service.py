"""PrincipleService: a thin servicer over PrincipleGenerator (validate, convert, call)."""

from __future__ import annotations

import asyncio
import time

import grpc

from grm.core.errors import DeadlineExceededError
from grm.core.plan import SamplingJob
from grm.core.types import ModelInfo
from grm.core.validation import Defaults, Limits
from grm.rpc import convert
from grm.scoring.principles import PrincipleGenerator
from grm.v1 import common_pb2, principle_pb2, principle_pb2_grpc


class PrincipleServicer(principle_pb2_grpc.PrincipleServiceServicer):
    """Writes n principle sets for a query, never past the caller's deadline."""

    def __init__(
        self,
        generator: PrincipleGenerator,
        *,
        limits: Limits | None = None,
        defaults: Defaults | None = None,
    ) -> None:
        self.generator = generator
        self.limits = limits or Limits()
        self.defaults = defaults or Defaults()

    async def GeneratePrinciples(
        self, request: principle_pb2.PrincipleRequest, context: grpc.aio.ServicerContext
    ) -> principle_pb2.PrincipleResponse:
        ctx, responses, n, seed, params, reference = convert.principle_call(
            request, self.limits, self.defaults
        )
        # Work ends a reply reserve before the caller's deadline; the backend bounds each
        # generation by the same time (job.deadline).
        job = SamplingJob.from_relative(
            ctx,
            responses,
            params,
            now=time.monotonic(),
            time_left_s=context.time_remaining(),
            reference=reference,
        )
        try:
            async with asyncio.timeout_at(_loop_time(job.deadline)):
                sets = await self.generator.generate(job, n, seed)
        except TimeoutError:
            raise DeadlineExceededError(
                f"{n} principle set(s) not finished before the deadline"
            ) from None
        return principle_pb2.PrincipleResponse(
            sets=convert.principle_sets_to_pb(sets), model=convert.model_to_pb(self.model)
        )

    @property
    def model(self) -> ModelInfo:
        b = self.generator.backend.info
        return ModelInfo(b.model_id, b.revision, b.backend, self.generator.templates.version)

    async def Describe(
        self, request: common_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ServiceInfo:
        """The model served (part of the aggregator's principle cache keys)."""
        return common_pb2.ServiceInfo(model=convert.model_to_pb(self.model))


def _loop_time(deadline: float | None) -> float | None:
    """A monotonic deadline on the event loop's clock (asyncio.timeout_at)."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())
