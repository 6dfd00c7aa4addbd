"""The scoring pipeline end to end over the TGI backend: scripted dev server and the real model."""

from __future__ import annotations

import pytest

from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings
from grm.backends.tgi import TgiBackend
from grm.core.errors import InvalidArgumentError
from grm.core.parsing import extract_scores
from grm.core.templates import load_templates
from grm.core.types import Aggregation, PrincipleMode, ScoreStatus
from grm.core.validation import build_item
from grm.scoring.critique import CritiqueSampler
from grm.scoring.pipeline import ScoringPipeline
from grm.scoring.principles import PrincipleGenerator
from grm_dev.devtgi import FaultSettings
from grm_dev.devtgi.engines import EmbeddedEngine, shown_responses
from tests.support.tgi_support import dev_tgi, generate_bodies, tgi_backend

RESPONSES = ["bad one", "good one", "bad two", "good two"]


def pipeline(backend: TgiBackend) -> ScoringPipeline:
    templates = load_templates()
    return ScoringPipeline(
        CritiqueSampler(backend, templates), principles=PrincipleGenerator(backend, templates)
    )


async def test_scores_end_to_end_against_the_scripted_server() -> None:
    async with dev_tgi() as server, tgi_backend(server.url) as backend:
        result = await pipeline(backend).score(build_item(query="q", responses=RESPONSES, k=8))
    assert result.status is ScoreStatus.COMPLETE and result.k_used == 8
    assert result.votes == (16, 72, 16, 72) and result.rewards == (2.0, 9.0, 2.0, 9.0)
    assert result.best == (1, 3) and result.tie
    assert result.model is not None and result.model.backend == "tgi"
    assert result.model.model_id == "grm-devtgi/scripted"
    bodies = generate_bodies(server)
    assert len(bodies) == 8
    assert len({b["parameters"]["seed"] for b in bodies}) == 8
    assert len({tuple(shown_responses(b["inputs"])) for b in bodies}) > 1  # shuffled orders
    assert {s.backend_seed for s in result.samples} == {s.spec.seed for s in result.samples}


async def test_invalid_outputs_are_resampled_with_new_seeds() -> None:
    faults = FaultSettings(sequence=("garbage", "wrong-count", "500"))
    async with dev_tgi(faults=faults) as server, tgi_backend(server.url) as backend:
        result = await pipeline(backend).score(build_item(query="q", responses=RESPONSES[:2], k=4))
    assert result.status is ScoreStatus.COMPLETE and result.k_valid == 4
    assert result.invalid_samples == 2  # garbage and wrong count; the 500 was retried
    reasons = " ".join(s.invalid_reason for s in result.samples if not s.valid)
    assert "does not end with a Scores:" in reasons and "expected 2" in reasons
    assert result.votes == (8, 36)
    seeds = [b["parameters"]["seed"] for b in generate_bodies(server)]
    assert len(seeds) == 7 and len(set(seeds)) == 6  # 4 + 2 re-samples; the 500 retry reuses


async def test_greedy_and_separate_principles_over_tgi() -> None:
    async with dev_tgi() as server, tgi_backend(server.url) as backend:
        greedy = await pipeline(backend).score(
            build_item(query="q", responses=RESPONSES[:2], aggregation=Aggregation.GREEDY)
        )
        assert greedy.k_used == 1 and greedy.votes == (2, 9)
        [body] = generate_bodies(server)
        assert body["parameters"]["do_sample"] is False
        separate = await pipeline(backend).score(
            build_item(
                query="q", responses=RESPONSES[:2], k=3, principle_mode=PrincipleMode.SEPARATE
            )
        )
    assert separate.votes == (6, 27)
    bodies = generate_bodies(server)[1:]
    principle_bodies = [b for b in bodies if "Do not score any response" in b["inputs"]]
    assert len(principle_bodies) == 3 and len(bodies) == 6
    # the paper's conditioning: principles see the query and the responses
    assert all("[The Begin of Response 2]" in b["inputs"] for b in principle_bodies)
    assert all(b["parameters"]["grammar"] is None for b in bodies)  # served: no grammar


async def test_an_over_long_item_is_invalid_argument_not_unavailable() -> None:
    async with dev_tgi(max_total_tokens=1200) as server, tgi_backend(server.url) as backend:
        with pytest.raises(InvalidArgumentError, match="input tokens"):
            await pipeline(backend).score(
                build_item(query="q", responses=["long " * 400, "short"], k=4)
            )
    assert not generate_bodies(server)


@pytest.mark.model
async def test_scores_end_to_end_against_the_dev_server_on_the_real_model() -> None:
    """TGI backend → dev server → embedded SmolLM2: the regex grammar becomes GBNF there, and
    samples cut off at 32 tokens get their score line completed by a second request."""
    engine = EmbeddedEngine(EmbeddedBackend(EmbeddedSettings(n_ctx=2048)))
    async with dev_tgi(engine) as server, tgi_backend(server.url) as backend:
        assert backend.info.revision == engine.model_sha and backend.limits is not None
        assert backend.limits.max_total_tokens == 2048
        item = build_item(
            query="What is 2 + 2?",
            responses=["2 + 2 = 4.", "2 + 2 = 5."],
            k=2,
            max_new_tokens=32,
            grammar=True,  # the tiny model needs the embedded profile's decoding
            force_scores=True,
        )
        result = await pipeline(backend).score(item)
    assert result.k_valid >= 1 and result.status in (ScoreStatus.COMPLETE, ScoreStatus.PARTIAL)
    assert all(1 <= r <= 10 for r in result.rewards)
    for sample in (s for s in result.samples if s.valid):
        assert sample.finish_reason in ("stop", "forced_scores")
        assert sample.backend_seed == sample.spec.seed
        assert extract_scores(sample.text, 2).scores is not None
    first = generate_bodies(server)[0]["parameters"]
    assert first["do_sample"] is True and first["max_new_tokens"] == 32
