"""`grm up --backend openai` end to end against `grm dev-openai` in the vLLM and SGLang dialects.

Real child processes on free loopback ports: the dev server (scripted judge), then `grm up`
(aggregator, principle generator, two samplers, each `grm serve ... --backend openai`). A
k = 8 Score must reach the engine as 8 chat completions with 8 seeds at temperature 0.5.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from grm.client import AsyncGrmClient
from grm.core.types import ScoreStatus
from grm_dev.bench import suite

RESPONSES = ["a bad answer", "a good answer"]


async def engine_requests(url: str) -> int:
    """Chat completions the dev server has received (its own counter)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url.removesuffix("/v1") + "/metrics") as resp:
            text = await resp.text()
    match = re.search(r"^grm_devopenai_requests_total (\d+)$", text, re.MULTILINE)
    assert match, text
    return int(match.group(1))


@pytest.mark.parametrize("dialect", ["vllm", "sglang"])
async def test_grm_up_scores_k8_through_the_openai_backend(tmp_path: Path, dialect: str) -> None:
    async with (
        suite.dev_openai(tmp_path, latency_ms=5, max_concurrent=64, dialect=dialect) as url,
        suite.suite(tmp_path, url, backend="openai", samplers=2) as address,
        AsyncGrmClient(address, timeout=60) as client,
    ):
        before = await engine_requests(url)
        result = await client.score(
            "Which answer is right?",
            RESPONSES,
            k=8,
            temperature=0.5,
            include_samples=True,
            principle_mode="joint",
        )
        sent = await engine_requests(url) - before
    assert result.status is ScoreStatus.COMPLETE and result.k_used == 8
    assert result.rewards == (2.0, 9.0)
    assert result.model is not None and result.model.backend == "openai"
    assert sent == 8
    assert len({s.backend_seed for s in result.samples}) == 8
    assert {s.finish_reason for s in result.samples} == {"stop"}
    assert len({s.sampler for s in result.samples}) == 2  # spread over both sampler processes
