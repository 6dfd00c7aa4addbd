"""RewardService messages: ScoreRequest → build_item fields, ScoreResult ⇄ ScoreResponse."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grm.core.types import (
    Aggregation,
    PrincipleMode,
    ScoreItem,
    ScoreResult,
    ScoreStatus,
    Timings,
)
from grm.core.validation import check_encodable
from grm.rpc.convert.messages import (
    AGG_FROM_PB,
    AGG_TO_PB,
    MODE_TO_PB,
    STATUS_FROM_PB,
    STATUS_TO_PB,
    aggregation_from_pb,
    context_to_pb,
    model_from_pb,
    model_to_pb,
    principle_mode_from_pb,
    sample_from_pb,
    sample_to_pb,
    sampling_fields,
    sampling_to_pb,
    turns_from_pb,
)
from grm.v1 import reward_pb2


def score_request_fields(request: reward_pb2.ScoreRequest) -> dict[str, Any]:
    """The build_item keyword arguments of a ScoreRequest (unset fields left to defaults)."""
    fields: dict[str, Any] = {
        "query": request.query,
        "turns": turns_from_pb(request.turns),
        "responses": list(request.responses),
        "k": request.k if request.HasField("k") else None,
        "k_meta": request.k_meta if request.HasField("k_meta") else None,
        "aggregation": aggregation_from_pb(request.aggregation),
        "principles": request.principles,
        "principle_mode": principle_mode_from_pb(request.principle_mode),
        "seed": request.seed if request.HasField("seed") else None,
        "latency_budget_ms": request.latency_budget_ms,
        "request_id": request.request_id,
        "reference": request.reference,
    }
    fields.update(sampling_fields(request.sampling))
    return fields


def score_request(
    query: str | Sequence[Mapping[str, str] | tuple[str, str]] = "",
    responses: Sequence[str] = (),
    *,
    k: int | None = None,
    k_meta: int | None = None,
    aggregation: Aggregation | str | None = None,
    principles: str = "",
    principle_mode: PrincipleMode | str | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_new_tokens: int | None = None,
    grammar: bool | None = None,
    force_scores: bool | None = None,
    seed: int | None = None,
    latency_budget_ms: int = 0,
    include_samples: bool = False,
    request_id: str = "",
    reference: str = "",
) -> reward_pb2.ScoreRequest:
    """A ScoreRequest from Python values; `query` may be a string or chat turns; `reference`
    is an optional reference answer the judge is shown.

    Text that cannot be encoded (a lone surrogate) is an InvalidArgumentError naming its
    field, as the server would answer, never a raw UnicodeEncodeError from protobuf.
    """
    texts: list[tuple[str, Any]] = [(f"responses[{i}]", r) for i, r in enumerate(responses)]
    texts += [("principles", principles), ("request_id", request_id), ("reference", reference)]
    if isinstance(query, str):
        texts.append(("query", query))
    else:
        for i, turn in enumerate(query):
            content = turn["content"] if isinstance(turn, Mapping) else turn[1]
            texts.append((f"turns[{i}].content", content))
    for field, text in texts:
        if isinstance(text, str):
            check_encodable(text, field)
    msg = reward_pb2.ScoreRequest(
        responses=list(responses),
        principles=principles,
        latency_budget_ms=latency_budget_ms,
        include_samples=include_samples,
        request_id=request_id,
        reference=reference or "",
    )
    if isinstance(query, str):
        msg.query = query
    else:
        for turn in query:
            role, content = (turn["role"], turn["content"]) if isinstance(turn, Mapping) else turn
            msg.turns.add(role=role, content=content)
    if k is not None:
        msg.k = k
    if k_meta is not None:
        msg.k_meta = k_meta
    if aggregation is not None:
        msg.aggregation = AGG_TO_PB[Aggregation(aggregation)]
    if principle_mode is not None:
        msg.principle_mode = MODE_TO_PB[PrincipleMode(principle_mode)]
    if seed is not None:
        msg.seed = seed
    for name, value in (
        ("temperature", temperature),
        ("top_p", top_p),
        ("max_new_tokens", max_new_tokens),
        ("grammar", grammar),
        ("force_scores", force_scores),
    ):
        if value is not None:
            setattr(msg.sampling, name, value)
    return msg


def item_to_request(item: ScoreItem, *, include_samples: bool = False) -> reward_pb2.ScoreRequest:
    """A ScoreRequest that reproduces a validated item exactly (every default made explicit)."""
    query, turns = context_to_pb(item.context)
    msg = reward_pb2.ScoreRequest(
        query=query,
        turns=turns,
        responses=list(item.responses),
        k=item.k,
        aggregation=AGG_TO_PB[item.aggregation],
        latency_budget_ms=item.latency_budget_ms,
        principles=item.principles,
        principle_mode=MODE_TO_PB[item.principle_mode],
        sampling=sampling_to_pb(item.sampling),
        seed=item.seed,
        include_samples=include_samples,
        request_id=item.request_id,
        reference=item.reference,
    )
    if item.aggregation is Aggregation.META_VOTE:
        msg.k_meta = item.k_meta  # only meaningful (and only accepted) with meta-vote
    return msg


def result_to_response(
    result: ScoreResult, *, include_samples: bool = False
) -> reward_pb2.ScoreResponse:
    msg = reward_pb2.ScoreResponse(
        rewards=list(result.rewards),
        votes=list(result.votes),
        k_requested=result.k_requested,
        k_used=result.k_used,
        k_valid=result.k_valid,
        invalid_samples=result.invalid_samples,
        status=STATUS_TO_PB[result.status],
        status_detail=result.status_detail,
        best=list(result.best),
        tie=result.tie,
        aggregation=AGG_TO_PB[result.aggregation],
        timings=reward_pb2.Timings(
            total_ms=result.timings.total_ms,
            principles_ms=result.timings.principles_ms,
            sampling_ms=result.timings.sampling_ms,
            meta_ms=result.timings.meta_ms,
        ),
        request_id=result.request_id,
        k_planned=result.k_planned,
        budget_met=result.budget_met,
    )
    model = model_to_pb(result.model)
    if model is not None:
        msg.model.CopyFrom(model)
    if include_samples:
        used = result.used or (False,) * len(result.samples)
        metas = result.meta_scores or (None,) * len(result.samples)
        msg.samples.extend(
            sample_to_pb(s, used=u, meta_score=m)
            for s, u, m in zip(result.samples, used, metas, strict=True)
        )
    return msg


def cache_usage_to_pb(usage: Any) -> reward_pb2.CacheUsage:
    """A grm.cache.CacheUsage (what one request got from the cache) as its message."""
    return reward_pb2.CacheUsage(
        result_hit=bool(usage.result_hit),
        samples_reused=int(usage.samples_reused),
        samples_generated=int(usage.samples_generated),
        principles_reused=int(usage.principles_reused),
        principles_generated=int(usage.principles_generated),
    )


def response_to_result(msg: reward_pb2.ScoreResponse) -> ScoreResult:
    """The core ScoreResult of a ScoreResponse (what local scoring would have returned)."""
    n = len(msg.rewards)
    samples = tuple(sample_from_pb(s, n) for s in msg.samples)
    return ScoreResult(
        rewards=tuple(msg.rewards),
        votes=tuple(msg.votes),
        k_requested=msg.k_requested,
        k_used=msg.k_used,
        k_valid=msg.k_valid,
        invalid_samples=msg.invalid_samples,
        status=STATUS_FROM_PB.get(msg.status, ScoreStatus.COMPLETE),
        best=tuple(msg.best),
        aggregation=AGG_FROM_PB.get(msg.aggregation, Aggregation.VOTE),
        samples=samples,
        used=tuple(s.used_in_vote for s in msg.samples),
        meta_scores=tuple(s.meta_score if s.HasField("meta_score") else None for s in msg.samples),
        status_detail=msg.status_detail,
        timings=Timings(
            total_ms=msg.timings.total_ms,
            principles_ms=msg.timings.principles_ms,
            sampling_ms=msg.timings.sampling_ms,
            meta_ms=msg.timings.meta_ms,
        ),
        model=model_from_pb(msg.model),
        request_id=msg.request_id,
        k_planned=msg.k_planned,
        budget_met=msg.budget_met if msg.HasField("budget_met") else None,
    )
