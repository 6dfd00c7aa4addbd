"""Request validation: each bad field gets an InvalidArgumentError that names it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grm.core.errors import InvalidArgumentError
from grm.core.types import Aggregation
from grm.core.validation import Defaults, Limits, build_item


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"query": "q", "responses": []}, "responses"),
        ({"query": "q", "responses": ["a"] * 17}, "responses"),
        ({"query": "q", "responses": ["a", ""]}, "responses[1]"),
        ({"query": "q", "responses": ["a", "   "]}, "responses[1]"),
        ({"query": "q", "responses": ["x" * 32_001]}, "responses[0]"),
        ({"query": "q", "responses": ["a\x00b"]}, "responses[0]"),
        ({"query": "", "responses": ["a"]}, "query"),
        ({"query": "q", "turns": [("user", "q")], "responses": ["a"]}, "query"),
        ({"turns": [("robot", "hi")], "responses": ["a"]}, "turns[0].role"),
        ({"turns": [("assistant", "hi")], "responses": ["a"]}, "turns"),
        ({"query": "q", "responses": ["a"], "k": 0}, "k"),
        ({"query": "q", "responses": ["a"], "k": 65}, "k"),
        (
            {
                "query": "q",
                "responses": ["a"],
                "k": 4,
                "k_meta": 5,
                "aggregation": Aggregation.META_VOTE,
            },
            "k_meta",
        ),
        (
            {
                "query": "q",
                "responses": ["a"],
                "k": 4,
                "k_meta": 0,
                "aggregation": Aggregation.META_VOTE,
            },
            "k_meta",
        ),
        ({"query": "q", "responses": ["a"], "k": 4, "k_meta": 2}, "k_meta"),
        ({"query": "q", "responses": ["a"], "k": 4, "aggregation": Aggregation.GREEDY}, "k"),
        ({"query": "q", "responses": ["a"], "temperature": -0.1}, "sampling.temperature"),
        ({"query": "q", "responses": ["a"], "top_p": 0.0}, "sampling.top_p"),
        ({"query": "q", "responses": ["a"], "max_new_tokens": 4}, "sampling.max_new_tokens"),
        ({"query": "q", "responses": ["a"], "seed": -1}, "seed"),
        ({"query": "q", "responses": ["a"], "latency_budget_ms": -5}, "latency_budget_ms"),
    ],
)
def test_bad_fields_are_named(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        build_item(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_defaults() -> None:
    item = build_item(query="q", responses=["a", "b"])
    assert item.k == 4 and item.k_meta is None  # meta-vote keeps half of the valid samples
    assert item.aggregation is Aggregation.VOTE
    # The paper's decoding for a served engine (grm.core.decoding): no grammar, 1024 tokens,
    # no forced score line; the embedded model's profile keeps grammar and forcing on.
    assert item.sampling.temperature == 0.5 and not item.sampling.grammar
    assert item.sampling.max_new_tokens == 1024 and not item.sampling.force_scores
    embedded = build_item(query="q", responses=["a"], defaults=Defaults.for_profile("embedded"))
    assert embedded.sampling.grammar and embedded.sampling.force_scores
    assert embedded.sampling.max_new_tokens == 256
    assert (
        item.reference == ""
        and build_item(query="q", responses=["a"], reference="  42 \n").reference == "42"
    )
    greedy = build_item(query="q", responses=["a"], aggregation=Aggregation.GREEDY)
    assert greedy.k == 1 and greedy.sampling.temperature == 0.0


def test_chat_turns_become_context() -> None:
    item = build_item(
        turns=[("user", "hi"), ("assistant", "hello"), ("user", "help")], responses=["a"]
    )
    assert [t.role for t in item.context.turns] == ["user", "assistant", "user"]


def test_limits_are_configurable() -> None:
    with pytest.raises(InvalidArgumentError, match="limit is 2"):
        build_item(query="q", responses=["a", "b", "c"], limits=Limits(max_responses=2))


@given(
    k=st.integers(-5, 100),
    k_meta=st.one_of(st.none(), st.integers(-5, 100)),
    n=st.integers(0, 20),
)
def test_validation_accepts_exactly_the_valid_space(k: int, k_meta: int | None, n: int) -> None:
    valid = 1 <= k <= 64 and 1 <= n <= 16 and (k_meta is None or 1 <= k_meta <= k)
    try:
        item = build_item(
            query="q", responses=["r"] * n, k=k, k_meta=k_meta, aggregation=Aggregation.META_VOTE
        )
    except InvalidArgumentError as exc:
        assert not valid, exc
        assert exc.field in {"k", "k_meta", "responses"}
    else:
        assert valid
        assert item.k_meta == k_meta and (k_meta is None or 1 <= k_meta <= item.k)
