"""The embedded llama.cpp backend on the real default model (SmolLM2-135M GGUF)."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from grm.backends.base import GenerationRequest
from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings
from grm.core.errors import InvalidArgumentError
from grm.core.parsing import extract_scores
from grm.core.templates import load_templates
from grm.core.types import Context

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend():
    b = EmbeddedBackend()
    await b.start()
    yield b
    await b.close()


def request(
    n: int = 2,
    *,
    seed: int = 1,
    max_new_tokens: int = 24,
    grammar: bool = True,
    force_scores: bool = True,  # the embedded model's decoding profile
    **kw,
):
    messages = load_templates().joint(
        Context.from_query("What is 2 + 2?"), ["2 + 2 = 4.", "2 + 2 = 5."][:n] + ["Four."] * (n - 2)
    )
    return GenerationRequest(
        messages=tuple(messages),
        seed=seed,
        temperature=kw.get("temperature", 0.5),
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        score_count=n,
        grammar=grammar,
        force_scores=force_scores,
    )


@pytest.mark.parametrize("n", [1, 2, 3])
async def test_grammar_makes_every_sample_parse(backend: EmbeddedBackend, n: int) -> None:
    """Even when the token budget runs out, the forced final line parses with n scores."""
    [result] = await backend.generate([request(n, max_new_tokens=24)])
    assert not isinstance(result, Exception), result
    assert result.finish_reason in {"stop", "forced_scores"}
    parsed = extract_scores(result.text, n)
    assert parsed.scores is not None, (parsed.reason, result.text)
    assert result.tokens_generated > 0 and result.seed == 1


async def test_same_seed_same_text_and_seeds_differ(backend: EmbeddedBackend) -> None:
    a, b, c = await backend.generate(
        [
            request(seed=7, max_new_tokens=32),
            request(seed=7, max_new_tokens=32),
            request(seed=8, max_new_tokens=32),
        ]
    )
    assert a.text == b.text  # type: ignore[union-attr]
    assert a.text != c.text  # type: ignore[union-attr]


async def test_prompt_over_context_is_rejected_not_truncated() -> None:
    small = EmbeddedBackend(EmbeddedSettings(n_ctx=512))
    try:
        [result] = await small.generate([request(max_new_tokens=256)])
        assert isinstance(result, InvalidArgumentError)
        assert "exceeds the model context of 512" in str(result)
    finally:
        await small.close()


async def test_cancellation_stops_the_generation(backend: EmbeddedBackend) -> None:
    long = request(max_new_tokens=400, grammar=False)
    task = asyncio.create_task(backend.generate_one(long))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    loop = asyncio.get_running_loop()
    started = loop.time()
    await backend.generate_one(request(max_new_tokens=8))  # the thread is free again
    assert loop.time() - started < 30
