"""PrincipleService messages: PrincipleRequest ⇄ generator arguments, principle sets."""

from __future__ import annotations

from collections.abc import Sequence

from grm.core.errors import (
    InvalidArgumentError,
)
from grm.core.types import (
    Context,
    SamplingParams,
)
from grm.core.validation import Defaults, Limits, build_context, check_reference, check_responses
from grm.rpc.convert.messages import context_to_pb, sampling_from_pb, sampling_to_pb, turns_from_pb
from grm.scoring.principles import PrincipleSet
from grm.v1 import principle_pb2


def principle_request(
    context: Context,
    responses: Sequence[str],
    n: int,
    seed: int,
    params: SamplingParams,
    reference: str = "",
) -> principle_pb2.PrincipleRequest:
    query, turns = context_to_pb(context)
    return principle_pb2.PrincipleRequest(
        query=query,
        turns=turns,
        responses=list(responses),
        n=n,
        seed=seed,
        sampling=sampling_to_pb(params),
        reference=reference,
    )


def principle_call(
    request: principle_pb2.PrincipleRequest, limits: Limits, defaults: Defaults
) -> tuple[Context, tuple[str, ...], int, int, SamplingParams, str]:
    """Validate a PrincipleRequest into PrincipleGenerator.generate arguments (the last: the
    reference answer, "" for none)."""
    context = build_context(request.query, turns_from_pb(request.turns), limits)
    responses = tuple(request.responses)
    check_responses(responses, limits, required=False)
    n = request.n or 1
    if n > limits.max_k:
        raise InvalidArgumentError(f"must be at most {limits.max_k}, got {n}", field="n")
    if request.seed >= 2**63:
        raise InvalidArgumentError("must be in [0, 2^63)", field="seed")
    params = sampling_from_pb(request.sampling, limits, defaults)
    return context, responses, n, request.seed, params, check_reference(request.reference, limits)


def principle_sets_to_pb(sets: Sequence[PrincipleSet]) -> list[principle_pb2.PrincipleSet]:
    return [
        principle_pb2.PrincipleSet(
            text=s.text, seed=s.seed, tokens_generated=s.tokens_generated, latency_ms=s.latency_ms
        )
        for s in sets
    ]


def principle_sets_from_pb(msgs: Sequence[principle_pb2.PrincipleSet]) -> list[PrincipleSet]:
    return [PrincipleSet(m.text, m.seed, m.tokens_generated, m.latency_ms) for m in msgs]
