"""Deterministic seeds and per-sample response orders.

Seeds derive from (request seed, sample index, attempt) so the same request always draws the
same samples — which is what makes individual samples cacheable and k incremental.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from grm.core.types import Sample, SampleSpec

SEED_BITS = 31  # llama.cpp takes a signed 32-bit seed; TGI a u64: the common range


def derive_seed(request_seed: int, index: int, attempt: int = 0, *, purpose: str = "sample") -> int:
    """A well-mixed seed for one sample; distinct for distinct (index, attempt, purpose)."""
    digest = hashlib.blake2b(
        f"{purpose}:{request_seed}:{index}:{attempt}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") & ((1 << SEED_BITS) - 1)


def permutation(n: int, seed: int) -> tuple[int, ...]:
    """A fresh order of n responses for one sample: order[p] = caller index shown at p."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return tuple(order)


def to_caller_order(shown_scores: Sequence[int], order: Sequence[int]) -> tuple[int, ...]:
    """Map scores given in display order back to the caller's order."""
    if len(shown_scores) != len(order):
        raise ValueError("scores and order differ in length")
    out = [0] * len(order)
    for position, caller_index in enumerate(order):
        out[caller_index] = shown_scores[position]
    return tuple(out)


def apply_order(items: Sequence[str], order: Sequence[int]) -> list[str]:
    """The responses as one sample sees them."""
    return [items[i] for i in order]


def sample_spec(
    request_seed: int,
    index: int,
    n: int,
    *,
    attempt: int = 0,
    shuffle: bool = True,
    principles: str = "",
) -> SampleSpec:
    """The spec of sample `index` (try `attempt`) of a request."""
    seed = derive_seed(request_seed, index, attempt)
    order = permutation(n, seed) if shuffle else tuple(range(n))
    return SampleSpec(index=index, attempt=attempt, seed=seed, order=order, principles=principles)


DEADLINE_REASON = "deadline exceeded before the sample finished"


def unfinished(
    spec: SampleSpec, reason: str, *, finish_reason: str = "deadline", latency_ms: float = 0.0
) -> Sample:
    """An invalid sample standing in for one that was not drawn (deadline, lost sampler,
    backend error)."""
    return Sample(
        spec=spec,
        text="",
        principles=spec.principles,
        critique="",
        scores=None,
        invalid_reason=reason,
        latency_ms=latency_ms,
        finish_reason=finish_reason,
    )
