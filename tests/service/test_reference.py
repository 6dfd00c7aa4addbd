"""Reference-guided scoring end to end: a `reference` reaches the prompt the model renders —
through gRPC (SDK → aggregator → sampler), `grm score` input lines, OpenRLHF `labels`, verl
`ground_truth` and a TRL dataset column — and is part of the cache keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from grm.cache import CacheSettings
from grm.client import AsyncGrmClient
from grm.integrations import verl
from grm.integrations.trl import grm_reward_func
from grm.services.aggregator.http_rm import HttpRmSettings
from tests.support.servers import Suite, running_suite

BLOCK = "#### Reference Answer ####\n"


def prompts(suite: Suite) -> list[str]:
    """Every prompt the samplers' model saw."""
    return [r.messages[-1]["content"] for s in suite.samplers for r in s.backend.requests]


def references(suite: Suite) -> list[str]:
    """The reference each prompt showed ("" = none)."""
    out = []
    for text in prompts(suite):
        out.append(text.split(BLOCK, 1)[1].split("\n", 1)[0] if BLOCK in text else "")
    return out


@pytest.fixture(autouse=True)
def _reset_verl() -> Iterator[None]:
    yield
    verl.configure(None)


async def test_a_reference_reaches_the_prompt_through_grpc_and_keys_the_cache() -> None:
    async with (
        running_suite(cache=CacheSettings()) as suite,
        AsyncGrmClient(suite.address, timeout=20) as client,
    ):
        first = await client.score("6 * 7?", ["good 42", "bad 41"], k=2, reference="42")
        assert references(suite) == ["42", "42"]
        again = await client.score("6 * 7?", ["good 42", "bad 41"], k=2, reference="42")
        assert len(prompts(suite)) == 2  # the same request: served from the cache
        other = await client.score("6 * 7?", ["good 42", "bad 41"], k=2, reference="forty-two")
        assert sorted(references(suite)) == ["42", "42", "forty-two", "forty-two"]
        plain = await client.score("6 * 7?", ["good 42", "bad 41"], k=2)
        assert references(suite).count("") == 2  # no reference: no block, and no cache hit
    assert first.rewards == again.rewards == other.rewards == plain.rewards == (9.0, 2.0)


async def test_grm_score_lines_carry_a_reference(tmp_path: Path) -> None:
    from grm.cli import main as cli
    from grm.cli.scorefile import run_scorefile

    items = tmp_path / "items.jsonl"
    items.write_text(
        json.dumps({"id": 1, "query": "6 * 7?", "responses": ["good", "bad"], "reference": "42"})
        + "\n"
        + json.dumps({"id": 2, "query": "q", "responses": ["good"], "reference": 42})
        + "\n"
    )
    async with running_suite() as suite:
        args = cli.build_parser().parse_args(
            ["score", str(items), "--target", suite.address, "--k", "2"]
        )
        out = tmp_path / "out.jsonl"
        async with AsyncGrmClient(suite.address, timeout=20) as client:
            with items.open("rb") as stream, out.open("w") as sink:
                await run_scorefile(
                    stream,
                    sink,
                    cli._request_builder(args),
                    client.score_request,
                    progress=False,
                )
        assert references(suite) == ["42", "42"]
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert first["rewards"] == [9.0, 2.0]
    assert second["error"]["field"] == "reference"


async def test_openrlhf_labels_become_references_when_enabled() -> None:
    body = {
        "query": ["Q: 6*7? good 42", "Q: 6*7? bad 41", "Q: 1+1? good 2"],
        "prompts": ["Q: 6*7?", "Q: 6*7?", "Q: 1+1?"],
        "labels": ["42", "42", "2"],
    }
    for enabled, expected in ((False, {""}), (True, {"42", "2"})):
        settings = HttpRmSettings(port=0, k=1, labels_as_reference=enabled)
        async with running_suite(http=settings) as suite:
            assert suite.aggregator.http is not None
            url = f"http://127.0.0.1:{suite.aggregator.http.port}/get_reward"
            async with aiohttp.ClientSession() as http, http.post(url, json=body) as reply:
                assert reply.status == 200, await reply.text()
                assert (await reply.json())["rewards"] == [9.0, 2.0, 9.0]
            assert set(references(suite)) == expected
            # the responses of one prompt and one label are still judged together
            assert len(prompts(suite)) == 2


async def test_verl_ground_truth_becomes_the_reference_when_enabled() -> None:
    async with running_suite() as suite:
        verl.configure(suite.address, k=1, timeout=20, use_ground_truth=True)
        extra = {"question": "6 * 7?"}
        reward = await asyncio.to_thread(verl.compute_score, "gsm8k", "good 42", "42", extra)
        batch = await asyncio.to_thread(
            verl.compute_score_batch,
            ["gsm8k", "gsm8k"],
            ["good a", "bad b"],
            [{"target": 7}, {"target": 7}],
            [{"question": "q"}, {"question": "q"}],
        )
        assert reward == 9.0 and batch == [9.0, 2.0]
        assert sorted(references(suite)) == ["42", '{"target": 7}']
        verl.configure(suite.address, k=1, timeout=20)  # off by default
        await asyncio.to_thread(verl.compute_score, "gsm8k", "good 42", "42", extra)
        assert sorted(references(suite)) == ["", "42", '{"target": 7}']


async def test_trl_reads_the_reference_from_a_dataset_column() -> None:
    async with running_suite() as suite:
        reward = grm_reward_func(suite.address, k=1, timeout=20, reference_column="answer")
        try:
            rewards = await asyncio.to_thread(
                reward,
                prompts=["6 * 7?", "6 * 7?", "1 + 1?"],
                completions=["good 42", "bad 41", "good 2"],
                answer=["42", "42", 2],
            )
            with pytest.raises(Exception, match="reference_column"):
                await asyncio.to_thread(reward, prompts=["q"], completions=["good"])
        finally:
            reward.close()  # type: ignore[attr-defined]
    assert rewards == [9.0, 2.0, 9.0]
    assert sorted(references(suite)) == ["2", "42"]
