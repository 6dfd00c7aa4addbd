"""PrincipleService: a thin servicer over PrincipleGenerator (validate, convert, call)."""

from __future__ import annotations

import asyncio

import grpc

from grm import convert, deadlines
from grm.core.errors import DeadlineExceededError
from grm.core.types import ModelInfo
from grm.core.validation import Defaults, Limits
from grm.deadlines import downstream_timeout
from grm.principles.logic import PrincipleGenerator
from grm.v1 import principle_pb2, principle_pb2_grpc


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
        ctx, responses, n, seed, params = convert.principle_call(
            request, self.limits, self.defaults
        )
        time_limit = downstream_timeout(
            context.time_remaining(), reserve_fraction=0.05, max_reserve_s=0.25
        )
        try:
            # The backend (TGI) bounds each HTTP call by the same deadline (grm.deadlines).
            with deadlines.scope(time_limit):
                async with asyncio.timeout(time_limit):
                    sets = await self.generator.generate(ctx, responses, n, seed, params)
        except TimeoutError:
            raise DeadlineExceededError(
                f"{n} principle set(s) not finished before the deadline"
            ) from None
        b = self.generator.backend.info
        model = ModelInfo(b.model_id, b.revision, b.backend, self.generator.templates.version)
        return principle_pb2.PrincipleResponse(
            sets=convert.principle_sets_to_pb(sets), model=convert.model_to_pb(model)
        )
