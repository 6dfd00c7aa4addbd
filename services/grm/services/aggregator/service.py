"""RewardService: the front door, a thin servicer over RewardScorer (validate, convert, call)."""

from __future__ import annotations

import grpc

from grm.core.errors import GrmError, InvalidArgumentError, ResourceExhaustedError
from grm.core.types import ScoreItem
from grm.core.validation import Defaults, Limits, build_item
from grm.rpc import convert
from grm.services.aggregator.admission import Admission
from grm.services.aggregator.scorer import RewardScorer, Scored
from grm.v1 import reward_pb2, reward_pb2_grpc


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    """Score and ScoreBatch; errors leave as status codes through the server's interceptor."""

    def __init__(
        self,
        scorer: RewardScorer,
        *,
        limits: Limits | None = None,
        defaults: Defaults | None = None,
        max_batch_items: int = 256,
        admission: Admission | None = None,
    ) -> None:
        self.scorer = scorer
        self.limits = limits or Limits()
        self.defaults = defaults or Defaults()
        self.max_batch_items = max_batch_items
        self.admission = admission or Admission()

    def _item(self, request: reward_pb2.ScoreRequest) -> ScoreItem:
        return build_item(
            **convert.score_request_fields(request), limits=self.limits, defaults=self.defaults
        )

    async def Score(
        self, request: reward_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> reward_pb2.ScoreResponse:
        item = self._item(request)
        with self.admission.admit(1, item.k):
            scored = await self.scorer.score(item, time_left_s=context.time_remaining())
        return _response(scored, include_samples=request.include_samples)

    async def ScoreBatch(
        self, request: reward_pb2.ScoreBatchRequest, context: grpc.aio.ServicerContext
    ) -> reward_pb2.ScoreBatchResponse:
        if not request.items:
            raise InvalidArgumentError("at least one item is required", field="items")
        if len(request.items) > self.max_batch_items:
            raise InvalidArgumentError(
                f"has {len(request.items)} items, the limit is {self.max_batch_items}",
                field="items",
            )
        items: list[ScoreItem | GrmError] = []
        for i, req in enumerate(request.items):
            try:
                items.append(self._item(req))
            except GrmError as exc:
                items.append(convert.with_field_prefix(exc, f"items[{i}]"))
        # Each valid item is admitted on its own: those beyond the limits are reported in
        # place as RESOURCE_EXHAUSTED; if none fits, the whole call is (the client retries).
        taken = [0, 0]
        for i, item in enumerate(items):
            if isinstance(item, GrmError):
                continue
            try:
                self.admission.reserve(1, item.k)
            except ResourceExhaustedError as exc:
                items[i] = exc
                continue
            taken[0] += 1
            taken[1] += item.k
        if not taken[0] and any(isinstance(it, ResourceExhaustedError) for it in items):
            raise ResourceExhaustedError(
                "overloaded: no item of the batch could be admitted; retry with backoff"
            )
        try:
            outcomes = await self.scorer.score_batch(items, time_left_s=context.time_remaining())
        finally:
            self.admission.release(*taken)
        reply = reward_pb2.ScoreBatchResponse()
        for req, outcome in zip(request.items, outcomes, strict=True):
            if isinstance(outcome, GrmError):
                reply.items.add(error=convert.item_error(outcome))
            else:
                reply.items.add(result=_response(outcome, include_samples=req.include_samples))
        return reply


def _response(scored: Scored, *, include_samples: bool) -> reward_pb2.ScoreResponse:
    msg = convert.result_to_response(scored.result, include_samples=include_samples)
    msg.cache.CopyFrom(convert.cache_usage_to_pb(scored.cache))
    return msg
