"""Small messages shared by the three services: enums, context, sampling, model, specs, samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grm.core.errors import (
    InvalidArgumentError,
)
from grm.core.types import (
    Aggregation,
    Context,
    ModelInfo,
    PrincipleMode,
    Sample,
    SampleSpec,
    SamplingParams,
    ScoreStatus,
)
from grm.core.validation import Defaults, Limits, check_sampling
from grm.v1 import common_pb2, reward_pb2

AGG_TO_PB = {
    Aggregation.GREEDY: common_pb2.AGGREGATION_GREEDY,
    Aggregation.VOTE: common_pb2.AGGREGATION_VOTE,
    Aggregation.META_VOTE: common_pb2.AGGREGATION_META_VOTE,
}
AGG_FROM_PB = {v: k for k, v in AGG_TO_PB.items()}
MODE_TO_PB = {
    PrincipleMode.JOINT: common_pb2.PRINCIPLE_MODE_JOINT,
    PrincipleMode.SEPARATE: common_pb2.PRINCIPLE_MODE_SEPARATE,
    PrincipleMode.SEPARATE_QUERY: common_pb2.PRINCIPLE_MODE_SEPARATE_QUERY,
}
MODE_FROM_PB = {v: k for k, v in MODE_TO_PB.items()}
STATUS_TO_PB = {
    ScoreStatus.COMPLETE: reward_pb2.SCORE_STATUS_COMPLETE,
    ScoreStatus.PARTIAL: reward_pb2.SCORE_STATUS_PARTIAL,
    ScoreStatus.DEGRADED: reward_pb2.SCORE_STATUS_DEGRADED,
}
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}


def aggregation_from_pb(value: int) -> Aggregation | None:
    """None for UNSPECIFIED (the server default applies)."""
    if value == common_pb2.AGGREGATION_UNSPECIFIED:
        return None
    try:
        return AGG_FROM_PB[value]
    except KeyError:
        raise InvalidArgumentError(f"unknown value {value}", field="aggregation") from None


def principle_mode_from_pb(value: int) -> PrincipleMode | None:
    if value == common_pb2.PRINCIPLE_MODE_UNSPECIFIED:
        return None
    try:
        return MODE_FROM_PB[value]
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
        force_scores=params.force_scores,
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
    if msg.HasField("force_scores"):
        out["force_scores"] = msg.force_scores
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


def sampling_from_pb(
    msg: common_pb2.SamplingParams, limits: Limits, defaults: Defaults
) -> SamplingParams:
    """Validated sampling parameters of a service request (unset fields take the defaults)."""
    return check_sampling(**sampling_fields(msg), limits=limits, defaults=defaults)
