"""The in-process pipeline over a scripted backend: re-sampling, caller order, meta-vote, errors."""

from __future__ import annotations

from dataclasses import replace

import pytest

from grm.backends.base import GenerationRequest, GenerationResult
from grm.core.errors import InvalidArgumentError, UnavailableError
from grm.core.planner import KPlan
from grm.core.sampling import derive_seed
from grm.core.templates import load_templates
from grm.core.types import Aggregation, PrincipleMode, ScoreStatus
from grm.core.validation import build_item
from grm.metarm.agreement import AgreementMetaRM
from grm.scoring.critique import CritiqueSampler
from grm.scoring.pipeline import PipelineSettings, ScoringPipeline
from grm.scoring.principles import PrincipleGenerator
from tests.support.scripted import ScriptedBackend, keyword_judge, shown_responses


def make(backend: ScriptedBackend, **kw: object) -> ScoringPipeline:
    templates = load_templates()
    return ScoringPipeline(
        CritiqueSampler(backend, templates),
        principles=PrincipleGenerator(backend, templates),
        meta_rm=AgreementMetaRM(),
        **kw,  # type: ignore[arg-type]
    )


RESPONSES = ["bad one", "good one", "bad two", "good two"]


async def test_scores_return_in_caller_order_despite_shuffling() -> None:
    backend = ScriptedBackend()
    result = await make(backend).score(build_item(query="q", responses=RESPONSES, k=8))
    orders = {tuple(shown_responses(r)) for r in backend.requests}
    assert len(orders) > 1  # samples really saw different orders
    assert result.votes == (16, 72, 16, 72)
    assert result.rewards == (2.0, 9.0, 2.0, 9.0)
    assert result.best == (1, 3) and result.tie
    assert result.k_used == result.k_valid == 8
    assert result.status is ScoreStatus.COMPLETE
    assert len({r.seed for r in backend.requests}) == 8


async def test_invalid_samples_are_resampled_with_new_seeds() -> None:
    seen: list[int] = []

    def flaky(request: GenerationRequest) -> str:
        seen.append(request.seed)
        return "no scores here" if len(seen) <= 2 else keyword_judge(request)

    backend = ScriptedBackend(flaky, capacity=1)
    result = await make(backend).score(build_item(query="q", responses=RESPONSES[:2], k=4))
    assert result.k_valid == 4 and result.invalid_samples == 2
    assert result.status is ScoreStatus.COMPLETE
    assert len(set(seen)) == 6  # the two re-samples used fresh seeds
    invalid = [s for s in result.samples if not s.valid]
    assert all("does not end with a Scores:" in s.invalid_reason for s in invalid)
    assert {s.spec.attempt for s in result.samples if s.valid} == {0, 1}


async def test_persistently_invalid_samples_are_dropped_and_reported() -> None:
    def half(request: GenerationRequest) -> str:
        return "garbage" if request.seed % 2 else keyword_judge(request)

    backend = ScriptedBackend(half)
    result = await make(backend, settings=PipelineSettings(max_attempts=1)).score(
        build_item(query="q", responses=RESPONSES[:2], k=16)
    )
    assert 0 < result.k_used < 16
    assert result.status is ScoreStatus.PARTIAL
    assert result.invalid_samples == 16 - result.k_used
    assert result.rewards == (2.0, 9.0)  # only valid samples vote; no zero rewards mixed in


async def test_no_valid_sample_is_an_error_not_a_reward() -> None:
    backend = ScriptedBackend(lambda r: "Scores: \\boxed{11, 0}")
    with pytest.raises(UnavailableError, match="no valid sample out of 12 drawn"):
        await make(backend).score(build_item(query="q", responses=RESPONSES[:2], k=4))


async def test_backend_errors_become_invalid_samples() -> None:
    calls = iter(range(100))
    backend = ScriptedBackend(lambda r: "<error>" if next(calls) == 0 else keyword_judge(r))
    result = await make(backend).score(build_item(query="q", responses=RESPONSES[:2], k=2))
    assert result.k_valid == 2
    assert any("backend error" in s.invalid_reason for s in result.samples if not s.valid)


async def test_greedy_is_one_sample_at_temperature_zero_in_identity_order() -> None:
    backend = ScriptedBackend()
    result = await make(backend).score(
        build_item(query="q", responses=RESPONSES, aggregation=Aggregation.GREEDY)
    )
    [request] = backend.requests
    assert request.temperature == 0.0
    assert shown_responses(request) == RESPONSES
    assert result.k_used == 1 and result.votes == (2, 9, 2, 9)


async def test_meta_vote_keeps_top_k_meta() -> None:
    def one_outlier(request: GenerationRequest) -> str:
        if request.seed == derive_seed(0, 0):  # sample 0 of a request with the default seed
            shown = shown_responses(request)
            scores = ", ".join("1" if "good" in s else "10" for s in shown)
            return f"Analysis: contrarian.\nScores: \\boxed{{{scores}}}"
        return keyword_judge(request)

    backend = ScriptedBackend(one_outlier, capacity=8)
    item = build_item(
        query="q", responses=RESPONSES[:2], k=8, k_meta=4, aggregation=Aggregation.META_VOTE
    )
    result = await make(backend).score(item)
    assert result.k_used == 4 and result.k_valid == 8
    assert result.votes == (8, 36)  # the outlier was not among the kept four
    kept = [s for s, u in zip(result.samples, result.used, strict=True) if u]
    assert all(s.scores == (2, 9) for s in kept)
    assert all(m is not None for m in result.meta_scores)


async def test_separate_mode_generates_principles_per_sample() -> None:
    def judge(request: GenerationRequest) -> str:
        if request.score_count == 0:
            return f"Specific Criteria: principle set seeded {request.seed}."
        assert (
            "#### Specific Criteria ####\nprinciple set seeded" in request.messages[-1]["content"]
        )
        return keyword_judge(request)

    backend = ScriptedBackend(judge)
    result = await make(backend).score(
        build_item(query="q", responses=RESPONSES[:2], k=3, principle_mode=PrincipleMode.SEPARATE)
    )
    assert len({s.principles for s in result.samples}) == 3
    assert result.votes == (6, 27)


async def test_caller_principles_are_used_verbatim() -> None:
    backend = ScriptedBackend()
    result = await make(backend).score(
        build_item(query="q", responses=RESPONSES[:2], k=2, principles="Be safe (100%).")
    )
    assert all("Be safe (100%)." in r.messages[-1]["content"] for r in backend.requests)
    assert all(s.principles == "Be safe (100%)." for s in result.samples)


async def test_meta_vote_without_meta_rm_is_invalid_argument() -> None:
    backend = ScriptedBackend()
    pipeline = ScoringPipeline(CritiqueSampler(backend, load_templates()))
    with pytest.raises(InvalidArgumentError, match="aggregation"):
        await pipeline.score(
            build_item(query="q", responses=["a", "b"], k=2, aggregation=Aggregation.META_VOTE)
        )


class CuttingPlanner:
    """A k planner whose budget affords `k` samples (stands in for measured latency)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def plan(self, k_requested: int, budget_ms: float, free: int, **_: object) -> KPlan:
        return KPlan(k_requested, min(k_requested, self.k), 100.0, free, 100.0)


@pytest.mark.parametrize(("afforded", "k_used"), [(5, 2), (3, 1), (1, 1)])
async def test_meta_vote_under_a_budget_that_cuts_k_keeps_half_of_the_valid(
    afforded: int, k_used: int
) -> None:
    """k_meta unset: meta-vote keeps max(1, k_valid // 2) of the samples actually drawn, so a
    budget that cuts k = 8 to `afforded` keeps meta filtering on (the paper's k_meta = k/2)."""
    from grm.services.aggregator.scorer import RewardScorer

    backend = ScriptedBackend(capacity=8)
    scorer = RewardScorer(make(backend), planner=CuttingPlanner(afforded))  # type: ignore[arg-type]
    item = build_item(
        query="q",
        responses=RESPONSES[:2],
        k=8,
        aggregation=Aggregation.META_VOTE,
        latency_budget_ms=60_000,
    )
    assert item.k_meta is None
    scored = await scorer.score(item, time_left_s=60)
    result = scored.result
    assert (result.k_requested, result.k_planned, result.k_valid) == (8, afforded, afforded)
    assert result.k_used == k_used == max(1, result.k_valid // 2)
    assert sum(result.used) == k_used and len(backend.requests) == afforded


async def test_separate_mode_principles_see_the_responses_unless_query_only() -> None:
    def judge(request: GenerationRequest) -> str:
        if request.score_count == 0:
            return "Specific Criteria: correctness (100%)."
        return keyword_judge(request)

    backend = ScriptedBackend(judge)
    pipeline = make(backend)
    for mode, sees_responses in (
        (PrincipleMode.SEPARATE, True),
        (PrincipleMode.SEPARATE_QUERY, False),
    ):
        backend.requests.clear()
        item = build_item(query="q", responses=RESPONSES[:2], k=2, principle_mode=mode)
        result = await pipeline.score(item)
        assert result.votes == (4, 18)
        [prompt] = {r.messages[-1]["content"] for r in backend.requests if r.score_count == 0}
        assert ("[The Begin of Response 2]" in prompt) is sees_responses


async def test_a_reference_reaches_every_prompt_of_a_request() -> None:
    def judge(request: GenerationRequest) -> str:
        if request.score_count == 0:
            return "Specific Criteria: matches the reference (100%)."
        return keyword_judge(request)

    backend = ScriptedBackend(judge)
    item = build_item(
        query="6 * 7?",
        responses=RESPONSES[:2],
        k=2,
        principle_mode=PrincipleMode.SEPARATE,
        reference="42",
    )
    await make(backend).score(item)
    assert len(backend.requests) == 4  # two principle sets, two critiques
    for request in backend.requests:
        assert "#### Reference Answer ####\n42\n" in request.messages[-1]["content"]


async def test_a_truncated_sample_is_invalid_and_redrawn_with_a_new_seed() -> None:
    seeds: list[int] = []

    class Cutting(ScriptedBackend):
        async def generate_one(self, request: GenerationRequest) -> GenerationResult:
            seeds.append(request.seed)
            result = await super().generate_one(request)
            if len(seeds) == 1:  # the first draw runs out of tokens (its list is complete)
                return replace(result, finish_reason="length")
            return result

    result = await make(Cutting(capacity=1)).score(
        build_item(query="q", responses=RESPONSES[:2], k=2)
    )
    assert result.k_valid == 2 and result.invalid_samples == 1
    [cut] = [s for s in result.samples if not s.valid]
    assert cut.finish_reason == "length" and "finish reason length" in cut.invalid_reason
    assert len(set(seeds)) == 3  # the re-draw used a new seed


async def test_a_prompt_is_rendered_once_per_order_and_shared_by_the_samples_that_show_it() -> None:
    backend = ScriptedBackend()
    templates = load_templates()
    rendered: list[tuple[str, ...]] = []
    real = templates.sample_prompt

    def counting(context, shown, principles="", reference=""):  # type: ignore[no-untyped-def]
        rendered.append(tuple(shown))
        return real(context, shown, principles, reference)

    object.__setattr__(templates, "sample_prompt", counting)
    pipeline = ScoringPipeline(CritiqueSampler(backend, templates))
    item = build_item(query="q", responses=RESPONSES[:2], k=8)
    first = await pipeline.score(item)
    shown = [tuple(shown_responses(r)) for r in backend.requests]
    assert len(shown) == 8 and len(set(shown)) == 2  # two orders of two responses
    assert sorted(rendered) == sorted(set(shown))  # each rendered once
    by_order = {s: r.messages for s, r in zip(shown, backend.requests, strict=True)}
    for s, request in zip(shown, backend.requests, strict=True):
        assert request.messages is by_order[s]  # the same prompt object, not a copy
    again = await pipeline.score(item)  # the same prompt again (an RL group): no rendering
    assert len(rendered) == 2 and again.votes == first.votes
    other = await pipeline.score(build_item(query="another q", responses=RESPONSES[:2], k=2))
    assert len(rendered) > 2 and other.k_used == 2  # a new prompt is rendered
