"""Plain data types shared by the core, the backends and the services (no I/O, no gRPC)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field


class Aggregation(enum.StrEnum):
    GREEDY = "greedy"
    VOTE = "vote"
    META_VOTE = "meta-vote"


class PrincipleMode(enum.StrEnum):
    """Where principles come from: written with the critique in one generation (the paper),
    generated first from the query and the responses (the paper's conditioning), or generated
    first from the query alone (reusable across response sets and epochs)."""

    JOINT = "joint"
    SEPARATE = "separate"
    SEPARATE_QUERY = "separate-query"

    @property
    def separate(self) -> bool:
        """Whether a principle generator writes the principles before the critique."""
        return self is not PrincipleMode.JOINT


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True)
class Context:
    """The conversation whose last user turn is the query being answered."""

    turns: tuple[Turn, ...]

    @classmethod
    def from_query(cls, query: str) -> Context:
        return cls((Turn("user", query),))

    @classmethod
    def from_turns(cls, turns: Sequence[tuple[str, str]] | Sequence[Turn]) -> Context:
        return cls(tuple(t if isinstance(t, Turn) else Turn(t[0], t[1]) for t in turns))


@dataclass(frozen=True)
class SamplingParams:
    """How one sample is decoded. The defaults are the paper's, for a served engine; the
    embedded model's profile (grm.core.decoding) differs."""

    temperature: float = 0.5
    top_p: float = 1.0
    max_new_tokens: int = 1024  # the paper's judgements run ~260-380 tokens, with a long tail
    grammar: bool = False  # constrain the output to end in a score line (the paper uses none)
    force_scores: bool = False  # a sample cut at max_new_tokens gets a forced score line


@dataclass(frozen=True)
class SampleSpec:
    """Everything that decides one sample besides the item and the sampling params."""

    index: int
    attempt: int
    seed: int
    order: tuple[int, ...]  # order[p] = caller index of the response shown at position p
    principles: str = ""  # empty = joint mode


@dataclass(frozen=True)
class Sample:
    spec: SampleSpec
    text: str
    principles: str
    critique: str
    scores: tuple[int, ...] | None  # caller order; None when invalid
    invalid_reason: str = ""
    tokens_generated: int = 0
    latency_ms: float = 0.0
    finish_reason: str = ""
    backend_seed: int | None = None
    sampler: str = ""  # the sampler endpoint that drew it (remote pool only)

    @property
    def valid(self) -> bool:
        return self.scores is not None


@dataclass(frozen=True)
class ScoreItem:
    """One scoring request after validation and defaults."""

    context: Context
    responses: tuple[str, ...]
    k: int
    k_meta: int | None  # None: half of the valid samples drawn (RequestPlan.k_meta)
    aggregation: Aggregation
    sampling: SamplingParams
    seed: int = 0
    principles: str = ""  # caller-given
    principle_mode: PrincipleMode = PrincipleMode.JOINT
    latency_budget_ms: int = 0
    request_id: str = ""
    reference: str = ""  # a reference answer the prompt shows (reference-guided scoring)


class ScoreStatus(enum.StrEnum):
    COMPLETE = "complete"
    PARTIAL = "partial"
    DEGRADED = "degraded"


@dataclass(frozen=True)
class Timings:
    total_ms: float = 0.0
    principles_ms: float = 0.0
    sampling_ms: float = 0.0
    meta_ms: float = 0.0


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    revision: str = ""
    backend: str = ""
    template_version: str = ""


@dataclass(frozen=True)
class ScoreResult:
    rewards: tuple[float, ...]
    votes: tuple[int, ...]
    k_requested: int
    k_used: int
    k_valid: int
    invalid_samples: int
    status: ScoreStatus
    best: tuple[int, ...]
    aggregation: Aggregation
    samples: tuple[Sample, ...] = ()
    used: tuple[bool, ...] = ()  # per sample in `samples`: was it voted over
    meta_scores: tuple[float | None, ...] = ()
    status_detail: str = ""
    timings: Timings = field(default_factory=Timings)
    model: ModelInfo | None = None
    request_id: str = ""
    k_planned: int = 0
    budget_met: bool | None = None  # None: the request had no latency budget

    @property
    def tie(self) -> bool:
        return len(self.best) > 1
