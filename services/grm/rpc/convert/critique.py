"""CritiqueService messages: CritiqueRequest ⇄ sampler arguments, load reports."""

from __future__ import annotations

from collections.abc import Sequence

from grm.core.errors import (
    InvalidArgumentError,
)
from grm.core.types import (
    Context,
    SampleSpec,
    SamplingParams,
)
from grm.core.validation import Defaults, Limits, build_context, check_reference, check_responses
from grm.rpc.convert.messages import (
    context_to_pb,
    sampling_from_pb,
    sampling_to_pb,
    spec_from_pb,
    spec_to_pb,
    turns_from_pb,
)
from grm.v1 import common_pb2, critique_pb2


def critique_request(
    context: Context,
    responses: Sequence[str],
    specs: Sequence[SampleSpec],
    params: SamplingParams,
    *,
    request_id: str = "",
    reference: str = "",
) -> critique_pb2.CritiqueRequest:
    query, turns = context_to_pb(context)
    return critique_pb2.CritiqueRequest(
        query=query,
        turns=turns,
        responses=list(responses),
        specs=[spec_to_pb(s) for s in specs],
        sampling=sampling_to_pb(params),
        request_id=request_id,
        reference=reference,
    )


def critique_call(
    request: critique_pb2.CritiqueRequest, limits: Limits, defaults: Defaults
) -> tuple[Context, tuple[str, ...], list[SampleSpec], SamplingParams, str]:
    """Validate a CritiqueRequest into CritiqueSampler.sample arguments (the last: the
    reference answer, "" for none)."""
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
    reference = check_reference(request.reference, limits)
    return (
        context,
        responses,
        specs,
        sampling_from_pb(request.sampling, limits, defaults),
        reference,
    )


def load_to_pb(in_flight: int, queued: int, capacity: int) -> common_pb2.SamplerLoad:
    return common_pb2.SamplerLoad(in_flight=in_flight, queued=queued, capacity=capacity)
