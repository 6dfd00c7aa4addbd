"""The one place that converts between grm.v1 messages and the core dataclasses.

Servicers, the remote sampler pool and the client all go through here, so a field added to
the API is mapped once, and the JSON written by `grm score --target` is built from the same
core ScoreResult as local scoring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from grm.core.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    GrmError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)
from grm.core.types import (
    Aggregation,
    Context,
    ModelInfo,
    PrincipleMode,
    Sample,
    SampleSpec,
    SamplingParams,
    ScoreItem,
    ScoreResult,
    ScoreStatus,
    Timings,
)
from grm.core.validation import Defaults, Limits, build_context, check_responses
from grm.principles.logic import PrincipleSet
from grm.v1 import common_pb2, critique_pb2, principle_pb2, reward_pb2

# --- errors -------------------------------------------------------------------------------

FIELD_METADATA_KEY = "grm-error-field"  # trailing metadata naming the request field at fault

_ERROR_CLASSES: dict[str, type[GrmError]] = {
    "INVALID_ARGUMENT": InvalidArgumentError,
    "UNAVAILABLE": UnavailableError,
    "RESOURCE_EXHAUSTED": ResourceExhaustedError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "FAILED_PRECONDITION": FailedPreconditionError,
}


def status_code(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status for an exception: a GrmError's `code`, anything else INTERNAL."""
    name = exc.code if isinstance(exc, GrmError) else "INTERNAL"
    return getattr(grpc.StatusCode, name, grpc.StatusCode.INTERNAL)


def error_from_status(
    code: grpc.StatusCode | int, message: str, field: str | None = None
) -> GrmError:
    """The GrmError a caller sees for a status (the inverse of `status_code`)."""
    if isinstance(code, int):
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    if field and message.startswith(f"{field}: "):
        message = message[len(field) + 2 :]  # GrmError puts the field back in front
    cls = _ERROR_CLASSES.get(code.name)
    if cls is not None:
        return cls(message, field=field or None)
    exc = GrmError(message, field=field or None)
    exc.code = code.name  # e.g. INTERNAL, CANCELLED, UNKNOWN
    return exc


def item_error(exc: BaseException) -> reward_pb2.ItemError:
    """A per-item error of ScoreBatch."""
    field = exc.field if isinstance(exc, GrmError) else None
    message = str(exc) if isinstance(exc, GrmError) else f"internal error ({type(exc).__name__})"
    return reward_pb2.ItemError(code=status_code(exc).value[0], message=message, field=field or "")


def with_field_prefix(exc: GrmError, prefix: str) -> GrmError:
    """The same error, its field named inside a container (e.g. `items[2].k`)."""
    if not exc.field:
        return exc
    args = str(exc)[len(exc.field) + 2 :]
    return error_from_status(status_code(exc), args, f"{prefix}.{exc.field}")


# --- small messages -------------------------------------------------------------------------

_AGG_TO_PB = {
    Aggregation.GREEDY: common_pb2.AGGREGATION_GREEDY,
    Aggregation.VOTE: common_pb2.AGGREGATION_VOTE,
    Aggregation.META_VOTE: common_pb2.AGGREGATION_META_VOTE,
}
_AGG_FROM_PB = {v: k for k, v in _AGG_TO_PB.items()}
_MODE_TO_PB = {
    PrincipleMode.JOINT: common_pb2.PRINCIPLE_MODE_JOINT,
    PrincipleMode.SEPARATE: common_pb2.PRINCIPLE_MODE_SEPARATE,
}
_MODE_FROM_PB = {v: k for k, v in _MODE_TO_PB.items()}
_STATUS_TO_PB = {
    ScoreStatus.COMPLETE: reward_pb2.SCORE_STATUS_COMPLETE,
    ScoreStatus.PARTIAL: reward_pb2.SCORE_STATUS_PARTIAL,
    ScoreStatus.DEGRADED: reward_pb2.SCORE_STATUS_DEGRADED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}


def aggregation_from_pb(value: int) -> Aggregation | None:
    """None for UNSPECIFIED (the server default applies)."""
    if value == common_pb2.AGGREGATION_UNSPECIFIED:
        return None
    try:
        return _AGG_FROM_PB[value]
    except KeyError:
        raise InvalidArgumentError(f"unknown value {value}", field="aggregation") from None


def principle_mode_from_pb(value: int) -> PrincipleMode | None:
    if value == common_pb2.PRINCIPLE_MODE_UNSPECIFIED:
        return None
    try:
        return _MODE_FROM_PB[value]
    except KeyError:
        raise InvalidArgumentError(f"unknown value {value}", field="principle_mode") from None


def turns_from_pb(turns: Sequence[common_pb2.ChatTurn]) -> list[tuple[str, str]]:
    return [(t.role, t.content) for t in turns]


def context_to_pb(context: Context) -> tuple[str, list[common_pb2.ChatTurn]]:
    """(query, turns): a single user turn travels as `query`, anything else as `turns`."""
    if len(context.turns) == 1 and context.turns[0].role == "user":
        return context.turns[0].content, []
    return "", [common_pb2.ChatTurn(role=t.role, content=t.content) for t in context.turns]


def _f32(value: float) -> float:
    """Undo float32 noise (0.7 arrives as 0.699999988) so parameters print as sent."""
    return round(value, 6)


def sampling_to_pb(params: SamplingParams) -> common_pb2.SamplingParams:
    return common_pb2.SamplingParams(
        temperature=params.temperature,
        top_p=params.top_p,
        max_new_tokens=params.max_new_tokens,
        grammar=params.grammar,
    )


def sampling_fields(msg: common_pb2.SamplingParams) -> dict[str, Any]:
    """The set fields of a SamplingParams message as build_item keyword arguments."""
    out: dict[str, Any] = {}
    if msg.HasField("temperature"):
        out["temperature"] = _f32(msg.temperature)
    if msg.HasField("top_p"):
        out["top_p"] = _f32(msg.top_p)
    if msg.HasField("max_new_tokens"):
        out["max_new_tokens"] = msg.max_new_tokens
    if msg.HasField("grammar"):
        out["grammar"] = msg.grammar
    return out


def model_to_pb(info: ModelInfo | None) -> common_pb2.ModelInfo | None:
    if info is None:
        return None
    return common_pb2.ModelInfo(
        model_id=info.model_id,
        revision=info.revision,
        backend=info.backend,
        template_version=info.template_version,
    )


def model_from_pb(msg: common_pb2.ModelInfo) -> ModelInfo | None:
    if not msg.model_id:
        return None
    return ModelInfo(msg.model_id, msg.revision, msg.backend, msg.template_version)


def spec_to_pb(spec: SampleSpec) -> common_pb2.SampleSpec:
    return common_pb2.SampleSpec(
        index=spec.index,
        attempt=spec.attempt,
        seed=spec.seed,
        order=list(spec.order),
        principles=spec.principles,
    )


def spec_from_pb(msg: common_pb2.SampleSpec, n: int) -> SampleSpec:
    """A spec; an empty order means the identity order."""
    order = tuple(msg.order) if msg.order else tuple(range(n))
    return SampleSpec(
        index=msg.index, attempt=msg.attempt, seed=msg.seed, order=order, principles=msg.principles
    )


def sample_to_pb(
    sample: Sample, *, used: bool = False, meta_score: float | None = None
) -> common_pb2.Sample:
    msg = common_pb2.Sample(
        spec=spec_to_pb(sample.spec),
        text=sample.text,
        principles=sample.principles,
        critique=sample.critique,
        scores=list(sample.scores or ()),
        valid=sample.valid,
        invalid_reason=sample.invalid_reason,
        used_in_vote=used,
        tokens_generated=sample.tokens_generated,
        latency_ms=sample.latency_ms,
        finish_reason=sample.finish_reason,
        backend_seed=sample.backend_seed or 0,
        sampler=sample.sampler,
    )
    if meta_score is not None:
        msg.meta_score = meta_score
    return msg


def sample_from_pb(msg: common_pb2.Sample, n: int, *, sampler: str = "") -> Sample:
    """A core Sample; `sampler` names the endpoint when the message does not."""
    scores = tuple(msg.scores) if msg.valid else None
    if scores is not None and len(scores) != n:
        scores = None  # a malformed reply from a peer is an invalid sample, never a score
        reason = f"sampler returned {len(msg.scores)} scores for {n} responses"
    else:
        reason = msg.invalid_reason
    return Sample(
        spec=spec_from_pb(msg.spec, n),
        text=msg.text,
        principles=msg.principles,
        critique=msg.critique,
        scores=scores,
        invalid_reason=reason,
        tokens_generated=msg.tokens_generated,
        latency_ms=msg.latency_ms,
        finish_reason=msg.finish_reason,
        backend_seed=msg.backend_seed or None,
        sampler=msg.sampler or sampler,
    )


# --- RewardService ------------------------------------------------------------------------


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
    seed: int | None = None,
    latency_budget_ms: int = 0,
    include_samples: bool = False,
    request_id: str = "",
) -> reward_pb2.ScoreRequest:
    """A ScoreRequest from Python values; `query` may be a string or chat turns."""
    msg = reward_pb2.ScoreRequest(
        responses=list(responses),
        principles=principles,
        latency_budget_ms=latency_budget_ms,
        include_samples=include_samples,
        request_id=request_id,
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
        msg.aggregation = _AGG_TO_PB[Aggregation(aggregation)]
    if principle_mode is not None:
        msg.principle_mode = _MODE_TO_PB[PrincipleMode(principle_mode)]
    if seed is not None:
        msg.seed = seed
    for name, value in (
        ("temperature", temperature),
        ("top_p", top_p),
        ("max_new_tokens", max_new_tokens),
        ("grammar", grammar),
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
        aggregation=_AGG_TO_PB[item.aggregation],
        latency_budget_ms=item.latency_budget_ms,
        principles=item.principles,
        principle_mode=_MODE_TO_PB[item.principle_mode],
        sampling=sampling_to_pb(item.sampling),
        seed=item.seed,
        include_samples=include_samples,
        request_id=item.request_id,
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
        status=_STATUS_TO_PB[result.status],
        status_detail=result.status_detail,
        best=list(result.best),
        tie=result.tie,
        aggregation=_AGG_TO_PB[result.aggregation],
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
        status=_STATUS_FROM_PB.get(msg.status, ScoreStatus.COMPLETE),
        best=tuple(msg.best),
        aggregation=_AGG_FROM_PB.get(msg.aggregation, Aggregation.VOTE),
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


# --- CritiqueService ----------------------------------------------------------------------


def critique_request(
    context: Context,
    responses: Sequence[str],
    specs: Sequence[SampleSpec],
    params: SamplingParams,
    *,
    request_id: str = "",
) -> critique_pb2.CritiqueRequest:
    query, turns = context_to_pb(context)
    return critique_pb2.CritiqueRequest(
        query=query,
        turns=turns,
        responses=list(responses),
        specs=[spec_to_pb(s) for s in specs],
        sampling=sampling_to_pb(params),
        request_id=request_id,
    )


def _sampling_from_pb(
    msg: common_pb2.SamplingParams, limits: Limits, defaults: Defaults
) -> SamplingParams:
    base = defaults.sampling
    got = sampling_fields(msg)
    params = SamplingParams(
        temperature=got.get("temperature", base.temperature),
        top_p=got.get("top_p", base.top_p),
        max_new_tokens=got.get("max_new_tokens", base.max_new_tokens),
        grammar=got.get("grammar", base.grammar),
    )
    if not 0.0 <= params.temperature <= 2.0:
        raise InvalidArgumentError(
            f"must be in [0, 2], got {params.temperature}", field="sampling.temperature"
        )
    if not 0.0 < params.top_p <= 1.0:
        raise InvalidArgumentError(f"must be in (0, 1], got {params.top_p}", field="sampling.top_p")
    if not 1 <= params.max_new_tokens <= limits.max_new_tokens:
        raise InvalidArgumentError(
            f"must be between 1 and {limits.max_new_tokens}, got {params.max_new_tokens}",
            field="sampling.max_new_tokens",
        )
    return params


def critique_call(
    request: critique_pb2.CritiqueRequest, limits: Limits, defaults: Defaults
) -> tuple[Context, tuple[str, ...], list[SampleSpec], SamplingParams]:
    """Validate a CritiqueRequest into CritiqueSampler.sample arguments."""
    context = build_context(request.query, turns_from_pb(request.turns), limits)
    responses = tuple(request.responses)
    check_responses(responses, limits, required=True)
    n = len(responses)
    if not request.specs:
        raise InvalidArgumentError("at least one sample spec is required", field="specs")
    if len(request.specs) > limits.max_k:
        raise InvalidArgumentError(
            f"has {len(request.specs)} specs, the limit is {limits.max_k}", field="specs"
        )
    specs = []
    for i, msg in enumerate(request.specs):
        spec = spec_from_pb(msg, n)
        if sorted(spec.order) != list(range(n)):
            raise InvalidArgumentError(
                f"must be a permutation of 0..{n - 1}, got {list(spec.order)}",
                field=f"specs[{i}].order",
            )
        if len(spec.principles) > limits.max_principles_chars:
            raise InvalidArgumentError(
                f"is {len(spec.principles)} characters, the limit is {limits.max_principles_chars}",
                field=f"specs[{i}].principles",
            )
        specs.append(spec)
    return context, responses, specs, _sampling_from_pb(request.sampling, limits, defaults)


def load_to_pb(in_flight: int, queued: int, capacity: int) -> common_pb2.SamplerLoad:
    return common_pb2.SamplerLoad(in_flight=in_flight, queued=queued, capacity=capacity)


# --- PrincipleService ---------------------------------------------------------------------


def principle_request(
    context: Context, responses: Sequence[str], n: int, seed: int, params: SamplingParams
) -> principle_pb2.PrincipleRequest:
    query, turns = context_to_pb(context)
    return principle_pb2.PrincipleRequest(
        query=query,
        turns=turns,
        responses=list(responses),
        n=n,
        seed=seed,
        sampling=sampling_to_pb(params),
    )


def principle_call(
    request: principle_pb2.PrincipleRequest, limits: Limits, defaults: Defaults
) -> tuple[Context, tuple[str, ...], int, int, SamplingParams]:
    """Validate a PrincipleRequest into PrincipleGenerator.generate arguments."""
    context = build_context(request.query, turns_from_pb(request.turns), limits)
    responses = tuple(request.responses)
    check_responses(responses, limits, required=False)
    n = request.n or 1
    if n > limits.max_k:
        raise InvalidArgumentError(f"must be at most {limits.max_k}, got {n}", field="n")
    if request.seed >= 2**63:
        raise InvalidArgumentError("must be in [0, 2^63)", field="seed")
    params = _sampling_from_pb(request.sampling, limits, defaults)
    return context, responses, n, request.seed, params


def principle_sets_to_pb(sets: Sequence[PrincipleSet]) -> list[principle_pb2.PrincipleSet]:
    return [
        principle_pb2.PrincipleSet(
            text=s.text, seed=s.seed, tokens_generated=s.tokens_generated, latency_ms=s.latency_ms
        )
        for s in sets
    ]


def principle_sets_from_pb(msgs: Sequence[principle_pb2.PrincipleSet]) -> list[PrincipleSet]:
    return [PrincipleSet(m.text, m.seed, m.tokens_generated, m.latency_ms) for m in msgs]
