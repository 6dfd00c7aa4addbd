"""Seeds, permutations and voting: the invariants the method depends on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grm.core.plan import plan_request
from grm.core.sampling import (
    apply_order,
    derive_seed,
    permutation,
    sample_spec,
    to_caller_order,
)
from grm.core.types import Aggregation
from grm.core.validation import build_item
from grm.core.voting import agreement_scores, select_top, vote


@given(st.integers(1, 16), st.integers(0, 2**31 - 1))
def test_permutation_roundtrip(n: int, seed: int) -> None:
    order = permutation(n, seed)
    assert sorted(order) == list(range(n))
    caller_scores = tuple((i * 7) % 10 + 1 for i in range(n))
    shown = [caller_scores[i] for i in order]  # what the model scores, position by position
    assert to_caller_order(shown, order) == caller_scores
    responses = [f"r{i}" for i in range(n)]
    assert [responses.index(r) for r in apply_order(responses, order)] == list(order)


def test_seeds_are_deterministic_and_distinct() -> None:
    seeds = {derive_seed(42, j, a) for j in range(64) for a in range(3)}
    assert len(seeds) == 64 * 3
    assert derive_seed(42, 5, 1) == derive_seed(42, 5, 1)
    assert derive_seed(42, 5) != derive_seed(43, 5)
    assert derive_seed(1, 0, purpose="principles") != derive_seed(1, 0)
    assert all(0 <= s < 2**31 for s in seeds)


def test_sample_specs_shuffle_per_sample() -> None:
    specs = [sample_spec(7, j, 4) for j in range(32)]
    assert len({s.order for s in specs}) > 1  # fresh order per sample
    assert sample_spec(7, 0, 4, shuffle=False).order == (0, 1, 2, 3)
    assert sample_spec(7, 3, 4) == specs[3]  # same request, same spec


@given(st.lists(st.lists(st.integers(1, 10), min_size=3, max_size=3), min_size=1, max_size=32))
def test_vote_invariants(samples: list[list[int]]) -> None:
    k = len(samples)
    out = vote(samples, 3)
    assert out.k_used == k
    assert all(k <= v <= 10 * k for v in out.votes)  # range k..10k
    assert all(1.0 <= r <= 10.0 for r in out.rewards)
    assert out.votes == tuple(sum(s[i] for s in samples) for i in range(3))
    top = max(out.votes)
    assert out.best == tuple(i for i in range(3) if out.votes[i] == top)


@given(st.lists(st.lists(st.integers(1, 10), min_size=2, max_size=2), min_size=2, max_size=16))
def test_vote_is_order_independent(samples: list[list[int]]) -> None:
    assert vote(samples, 2).votes == vote(list(reversed(samples)), 2).votes


def test_ties_are_reported_not_broken() -> None:
    out = vote([[8, 6], [6, 8]], 2)
    assert out.best == (0, 1)
    assert out.votes == (14, 14)


def test_vote_rejects_empty_and_wrong_length() -> None:
    with pytest.raises(ValueError):
        vote([], 2)
    with pytest.raises(ValueError):
        vote([[1, 2, 3]], 2)


def test_meta_selection_keeps_top_k_meta() -> None:
    assert select_top([0.1, 0.9, 0.5, 0.7], 2) == (False, True, False, True)
    assert select_top([0.5, 0.5, 0.5], 2) == (True, True, False)  # ties: earlier sample first


def test_k_meta_defaults_to_half_of_the_valid_samples_drawn() -> None:
    item = build_item(query="q", responses=["a", "b"], k=32, aggregation=Aggregation.META_VOTE)
    plan = plan_request(item, now=0.0, caller_deadline=None, k_planned=8)
    assert item.k_meta is None
    assert [plan.k_meta(v) for v in (32, 8, 7, 2, 1)] == [16, 4, 3, 1, 1]
    given = build_item(
        query="q", responses=["a", "b"], k=32, k_meta=10, aggregation=Aggregation.META_VOTE
    )
    kept = plan_request(given, now=0.0, caller_deadline=None)
    assert [kept.k_meta(v) for v in (32, 8)] == [10, 8]  # never more than the valid ones


def test_meta_guided_vote_changes_outcome() -> None:
    samples = [[9, 2], [8, 3], [2, 9]]  # the third is the outlier
    plain = vote(samples, 2)
    keep = select_top(list(agreement_scores(samples)), 2)
    guided = vote([s for s, k in zip(samples, keep, strict=True) if k], 2)
    assert keep == (True, True, False)
    assert plain.votes == (19, 14) and guided.votes == (17, 5)


@given(st.lists(st.lists(st.integers(1, 10), min_size=2, max_size=4), min_size=2, max_size=8))
def test_agreement_ignores_level_shifts(samples: list[list[int]]) -> None:
    n = min(len(s) for s in samples)
    samples = [s[:n] for s in samples]
    a = agreement_scores(samples)
    assert len(a) == len(samples) and all(x <= 0 for x in a)
