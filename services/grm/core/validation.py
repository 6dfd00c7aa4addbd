"""Request validation: the one place that turns raw request fields into core values.

Every door (the RewardService, the sampler's and principle generator's services, `grm score`,
the SDK) goes through here, so a bad request gets the same error with the same bounds, naming
the field by its path in the request message (`k`, `responses[2]`, `sampling.temperature`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from grm.core.decoding import sampling_defaults
from grm.core.errors import InvalidArgumentError
from grm.core.types import (
    Aggregation,
    Context,
    PrincipleMode,
    SamplingParams,
    ScoreItem,
    Turn,
)

ROLES = ("system", "user", "assistant")
MIN_NEW_TOKENS = 16  # fewer cannot hold a critique and a score line


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; set per deployment."""

    max_responses: int = field(default=16, metadata={"help": "most responses per request"})
    max_response_chars: int = field(default=32_000, metadata={"help": "longest response"})
    max_query_chars: int = field(default=64_000, metadata={"help": "longest query / conversation"})
    max_turns: int = field(default=64, metadata={"help": "most chat turns in a query"})
    max_k: int = field(default=64, metadata={"help": "largest k a request may ask for"})
    max_new_tokens: int = field(default=2048, metadata={"help": "largest max_new_tokens"})
    max_principles_chars: int = field(
        default=16_000, metadata={"help": "longest caller-given principles"}
    )
    max_reference_chars: int = field(default=32_000, metadata={"help": "longest reference answer"})


@dataclass(frozen=True)
class Defaults:
    """Values used when a request leaves a field unset (sampling: grm.core.decoding)."""

    k: int = 4
    aggregation: Aggregation = Aggregation.VOTE
    principle_mode: PrincipleMode = PrincipleMode.JOINT
    sampling: SamplingParams = field(default_factory=SamplingParams)
    seed: int = 0

    @classmethod
    def for_profile(cls, profile: str, **overrides: Any) -> Defaults:
        """Defaults with the sampling of a decoding profile (`served` or `embedded`);
        `overrides` replace sampling fields (None: keep the profile's)."""
        sampling = sampling_defaults(profile)
        changed = {k: v for k, v in overrides.items() if v is not None}
        return cls(sampling=replace(sampling, **changed))


def check_encodable(text: str, field: str) -> None:
    """Text UTF-8 cannot encode (a lone surrogate such as "\\udcff", which valid JSON can carry
    as an escape) is the caller's error, named by its field: protobuf messages, JSON output and
    every engine need UTF-8, and would otherwise fail deep inside with a raw traceback."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"cannot be encoded as UTF-8: a lone surrogate {text[exc.start]!r} at character "
            f"{exc.start}",
            field=field,
        ) from None


def _check_text(text: str, field: str, max_chars: int, *, allow_empty: bool = False) -> None:
    if not isinstance(text, str):
        raise InvalidArgumentError(f"must be a string, got {type(text).__name__}", field=field)
    check_encodable(text, field)
    if not allow_empty and not text.strip():
        raise InvalidArgumentError("must not be empty", field=field)
    if len(text) > max_chars:
        raise InvalidArgumentError(
            f"is {len(text)} characters, the limit is {max_chars}", field=field
        )
    if "\x00" in text:
        raise InvalidArgumentError("contains a NUL character", field=field)


def build_context(query: str, turns: Sequence[tuple[str, str]], limits: Limits) -> Context:
    """A context from either a query string or chat turns (exactly one of them)."""
    if query and turns:
        raise InvalidArgumentError("give either query or turns, not both", field="query")
    if turns:
        if len(turns) > limits.max_turns:
            raise InvalidArgumentError(
                f"has {len(turns)} turns, the limit is {limits.max_turns}", field="turns"
            )
        out = []
        total = 0
        for i, (role, content) in enumerate(turns):
            if role not in ROLES:
                raise InvalidArgumentError(
                    f"role {role!r} is not one of {ROLES}", field=f"turns[{i}].role"
                )
            _check_text(content, f"turns[{i}].content", limits.max_query_chars)
            total += len(content)
            out.append(Turn(role, content))
        if total > limits.max_query_chars:
            raise InvalidArgumentError(
                f"are {total} characters in all, the limit is {limits.max_query_chars}",
                field="turns",
            )
        if not any(t.role == "user" for t in out):
            raise InvalidArgumentError("must contain a user turn", field="turns")
        return Context(tuple(out))
    _check_text(query, "query", limits.max_query_chars)
    return Context.from_query(query)


def check_responses(responses: Sequence[str], limits: Limits, *, required: bool = True) -> None:
    """The responses' count and each one's size, naming the field at fault."""
    if required and not responses:
        raise InvalidArgumentError("at least one response is required", field="responses")
    if len(responses) > limits.max_responses:
        raise InvalidArgumentError(
            f"has {len(responses)} responses, the limit is {limits.max_responses}",
            field="responses",
        )
    for i, response in enumerate(responses):
        _check_text(response, f"responses[{i}]", limits.max_response_chars)


def check_reference(reference: str, limits: Limits) -> str:
    """A reference answer within the limits, stripped ("" = none)."""
    if reference:
        _check_text(reference, "reference", limits.max_reference_chars, allow_empty=True)
    return reference.strip()


def check_sampling(
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    max_new_tokens: int | None = None,
    grammar: bool | None = None,
    force_scores: bool | None = None,
    limits: Limits = Limits(),
    defaults: Defaults = Defaults(),
) -> SamplingParams:
    """Sampling parameters with defaults filled in; the one set of bounds for every service."""
    base = defaults.sampling
    temperature = base.temperature if temperature is None else temperature
    if not 0.0 <= temperature <= 2.0:
        raise InvalidArgumentError(
            f"must be in [0, 2], got {temperature}", field="sampling.temperature"
        )
    top_p = base.top_p if top_p is None else top_p
    if not 0.0 < top_p <= 1.0:
        raise InvalidArgumentError(f"must be in (0, 1], got {top_p}", field="sampling.top_p")
    max_new_tokens = base.max_new_tokens if max_new_tokens is None else max_new_tokens
    if not MIN_NEW_TOKENS <= max_new_tokens <= limits.max_new_tokens:
        raise InvalidArgumentError(
            f"must be between {MIN_NEW_TOKENS} and {limits.max_new_tokens}, got {max_new_tokens}",
            field="sampling.max_new_tokens",
        )
    return SamplingParams(
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        grammar=base.grammar if grammar is None else grammar,
        force_scores=base.force_scores if force_scores is None else force_scores,
    )


def build_item(
    *,
    query: str = "",
    turns: Sequence[tuple[str, str]] = (),
    responses: Sequence[str],
    k: int | None = None,
    k_meta: int | None = None,
    aggregation: Aggregation | None = None,
    principles: str = "",
    principle_mode: PrincipleMode | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_new_tokens: int | None = None,
    grammar: bool | None = None,
    force_scores: bool | None = None,
    seed: int | None = None,
    latency_budget_ms: int = 0,
    request_id: str = "",
    reference: str = "",
    limits: Limits = Limits(),
    defaults: Defaults = Defaults(),
) -> ScoreItem:
    """Validate a request and fill in defaults; raises InvalidArgumentError naming the field."""
    context = build_context(query, turns, limits)
    responses = list(responses)
    check_responses(responses, limits)

    aggregation = aggregation or defaults.aggregation
    if aggregation is Aggregation.GREEDY:
        if k not in (None, 1):
            raise InvalidArgumentError(f"greedy aggregation draws one sample, got k={k}", field="k")
        k = 1
    k = defaults.k if k is None else k
    if not 1 <= k <= limits.max_k:
        raise InvalidArgumentError(f"must be between 1 and {limits.max_k}, got {k}", field="k")
    if k_meta is not None and aggregation is not Aggregation.META_VOTE:
        raise InvalidArgumentError("is only used with meta-vote aggregation", field="k_meta")
    if k_meta is not None and not 1 <= k_meta <= k:
        raise InvalidArgumentError(f"must be between 1 and k={k}, got {k_meta}", field="k_meta")

    if principles:
        _check_text(principles, "principles", limits.max_principles_chars)
    mode = principle_mode or defaults.principle_mode
    reference = check_reference(reference, limits)

    sampling = check_sampling(
        temperature=0.0 if aggregation is Aggregation.GREEDY else temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        grammar=grammar,
        force_scores=force_scores,
        limits=limits,
        defaults=defaults,
    )
    seed = defaults.seed if seed is None else seed
    if not 0 <= seed < 2**63:
        raise InvalidArgumentError(f"must be in [0, 2^63), got {seed}", field="seed")
    if latency_budget_ms < 0:
        raise InvalidArgumentError("must not be negative", field="latency_budget_ms")
    check_encodable(request_id, "request_id")

    return ScoreItem(
        context=context,
        responses=tuple(responses),
        k=k,
        k_meta=k_meta,
        aggregation=aggregation,
        sampling=sampling,
        seed=seed,
        principles=principles,
        principle_mode=mode,
        latency_budget_ms=latency_budget_ms,
        request_id=request_id,
        reference=reference,
    )
