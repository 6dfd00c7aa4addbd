"""Voting over samples.

votes_i = Σ_j S_ij over the voted samples; the reward is the mean on the 1-10 scale. Ties are
reported, not broken: the caller decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class VoteOutcome:
    votes: tuple[int, ...]
    rewards: tuple[float, ...]
    best: tuple[int, ...]  # all indices that share the highest vote
    k_used: int


def vote(score_vectors: Sequence[Sequence[int]], n: int) -> VoteOutcome:
    """Sum voting over valid samples' scores (each in caller order)."""
    if not score_vectors:
        raise ValueError("no valid samples to vote over")
    votes = [0] * n
    for scores in score_vectors:
        if len(scores) != n:
            raise ValueError(f"sample has {len(scores)} scores, expected {n}")
        for i, s in enumerate(scores):
            votes[i] += s
    k = len(score_vectors)
    top = max(votes)
    return VoteOutcome(
        votes=tuple(votes),
        rewards=tuple(v / k for v in votes),
        best=tuple(i for i, v in enumerate(votes) if v == top),
        k_used=k,
    )


def select_top(meta_scores: Sequence[float], k_meta: int) -> tuple[bool, ...]:
    """Mark the k_meta samples with the highest meta score (earlier index wins a tie)."""
    if k_meta < 1:
        raise ValueError("k_meta must be at least 1")
    ranked = sorted(range(len(meta_scores)), key=lambda j: (-meta_scores[j], j))
    keep = set(ranked[:k_meta])
    return tuple(j in keep for j in range(len(meta_scores)))


def agreement_scores(score_vectors: Sequence[Sequence[int]]) -> tuple[float, ...]:
    """Heuristic meta score: how close each sample is to the leave-one-out consensus.

    Not the paper's trained meta RM: a model-free stand-in that down-weights outlier samples.
    The score is minus the mean absolute gap between a sample's (centred) scores and the mean
    of the other samples' (centred) scores; centring makes it about the ranking, not the level.
    """
    k = len(score_vectors)
    if k == 0:
        return ()
    if k == 1:
        return (0.0,)
    n = len(score_vectors[0])
    centred = [[s - sum(v) / n for s in v] for v in score_vectors]
    totals = [sum(c[i] for c in centred) for i in range(n)]
    out = []
    for c in centred:
        others = [(totals[i] - c[i]) / (k - 1) for i in range(n)]
        out.append(-sum(abs(c[i] - others[i]) for i in range(n)) / n)
    return tuple(out)
