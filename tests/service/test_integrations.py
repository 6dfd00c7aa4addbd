"""Framework adapters against the real suite (real gRPC servers, scripted model).

OpenRLHF: a real aiohttp /get_reward server on a free port inside the aggregator; TRL and verl:
their documented call shapes (`reward(prompts=..., completions=..., **columns)`,
`compute_score(data_source, solution_str, ground_truth, extra_info)`), no framework installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from grm.backends.base import GenerationRequest
from grm.core.errors import InvalidArgumentError
from grm.integrations import verl
from grm.integrations.groups import plan_groups
from grm.integrations.trl import grm_reward_func, grm_reward_func_async
from grm.services.aggregator.http_rm import HttpRmSettings, parse_body, split_query
from tests.support.scripted import keyword_judge, shown_responses
from tests.support.servers import Suite, running_suite


def failing_judge(request: GenerationRequest) -> str:
    """keyword_judge, except that a response containing 'fail' breaks the model."""
    if any("fail" in r for r in shown_responses(request)):
        return "<error>"
    return keyword_judge(request)


def shown_sets(suite: Suite) -> list[tuple[str, ...]]:
    """The responses each generation showed (sorted), across all samplers."""
    return [tuple(sorted(shown_responses(r))) for s in suite.samplers for r in s.backend.requests]


@pytest.fixture(autouse=True)
def _reset_verl() -> Iterator[None]:
    yield
    verl.configure(None)


# --- pure translation ---------------------------------------------------------------------


def test_split_query_finds_the_response_after_the_prompt() -> None:
    assert split_query("User: hi\nAssistant: hello", "User: hi\nAssistant: ") == "hello"
    pad, eos = "<pad>", "</s>"
    assert split_query(f"{pad}{pad}Q: 1+1? A: 2{eos}", f"{pad}Q: 1+1? A:", (pad, eos)) == " 2"
    with pytest.raises(InvalidArgumentError):
        split_query("something else", "Q:")
    with pytest.raises(InvalidArgumentError, match="prompts"):
        parse_body({"query": ["a"]})
    with pytest.raises(InvalidArgumentError, match="prompts\\[0\\]"):
        parse_body({"query": ["abc"], "prompts": ["x"]})


def test_plan_groups_groups_by_prompt_and_chunks() -> None:
    groups = plan_groups(["p", "q", "p", "p"], ["a", "b", "c", "d"], group=True, group_size=2)
    assert [(g.query, g.indices) for g in groups] == [("p", (0, 2)), ("p", (3,)), ("q", (1,))]
    alone = plan_groups(["p", "p"], ["a", "b"], group=False, group_size=8)
    assert [g.indices for g in alone] == [(0,), (1,)]
    with pytest.raises(InvalidArgumentError):
        plan_groups(["p"], ["a", "b"], group=True, group_size=2)


# --- OpenRLHF ------------------------------------------------------------------------------


async def post(suite: Suite, body: object) -> tuple[int, dict]:
    assert suite.aggregator.http is not None
    url = f"http://127.0.0.1:{suite.aggregator.http.port}/get_reward"
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as reply:
        return reply.status, await reply.json()


async def test_get_reward_has_openrlhf_shape_and_groups_by_prompt() -> None:
    settings = HttpRmSettings(port=0, group=True, group_size=8, k=2)
    async with running_suite(http=settings) as suite:
        p1, p2 = "User: say hi\nAssistant:", "User: add 1+1\nAssistant:"
        status, body = await post(
            suite,
            {
                "query": [p1 + " good hi", p1 + " bad hi", p2 + " good 2"],
                "prompts": [p1, p1, p2],
                "labels": ["", "", "2"],
            },
        )
        shown = shown_sets(suite)
    assert status == 200, body
    assert body["rewards"] == [9.0, 2.0, 9.0]
    assert body["scores"] == body["rewards"]
    assert set(body["extra_logs"]) == {"grm_k_used", "grm_votes", "grm_degraded"}
    assert all(len(v) == 3 for v in body["extra_logs"].values())
    assert body["extra_logs"]["grm_k_used"] == [2.0, 2.0, 2.0]
    # p1's two responses were judged side by side; p2's alone.
    assert set(shown) == {(" bad hi", " good hi"), (" good 2",)}


async def test_get_reward_one_by_one_when_grouping_is_off() -> None:
    async with running_suite(http=HttpRmSettings(port=0, group=False, k=1)) as suite:
        status, body = await post(suite, {"query": ["Q good", "Q bad"], "prompts": ["Q", "Q"]})
        shown = shown_sets(suite)
    assert status == 200 and body["rewards"] == [9.0, 2.0]
    assert set(shown) == {(" good",), (" bad",)}


async def test_a_failed_item_is_a_503_never_a_zero() -> None:
    settings = HttpRmSettings(port=0, group=False, k=1)
    async with running_suite(http=settings, script=failing_judge, max_attempts=1) as suite:
        status, body = await post(
            suite, {"query": ["Q good", "Q fail", "Q bad"], "prompts": ["Q", "Q", "Q"]}
        )
        bad_status, bad_body = await post(suite, {"query": ["Q good"], "prompts": ["X"]})
        not_json = await post(suite, {"query": "Q good"})
    assert status == 503, body
    assert "rewards" not in body
    assert [f["index"] for f in body["failed"]] == [1]
    assert body["failed"][0]["code"] == "UNAVAILABLE" and "query[1]" in body["error"]
    assert bad_status == 400 and "prompts[0]" in bad_body["error"]
    assert not_json[0] == 400


# --- TRL -----------------------------------------------------------------------------------


async def test_trl_reward_func_keeps_order_groups_and_chunks() -> None:
    async with running_suite() as suite:
        reward = grm_reward_func(suite.address, group_size=2, k=1, timeout=20)
        prompts = ["P1", "P2", "P1", "P1", "P2"]
        completions = ["good a", "bad b", "bad c", "good d", "good e"]
        rewards = await asyncio.to_thread(
            reward, prompts=prompts, completions=completions, ground_truth=["x"] * 5
        )
        reward.close()  # type: ignore[attr-defined]
        shown = shown_sets(suite)
    assert reward.__name__ == "grm"
    assert rewards == [9.0, 2.0, 2.0, 9.0, 9.0]
    # P1's three completions in chunks of 2 (first-seen order), P2's two together.
    assert set(shown) == {("bad c", "good a"), ("good d",), ("bad b", "good e")}


async def test_trl_reward_func_gives_none_for_failures_and_reads_conversations() -> None:
    async with running_suite(script=failing_judge, max_attempts=1) as suite:
        reward = grm_reward_func(suite.address, group=False, k=1, name="grm_judge", timeout=20)
        conv = [{"role": "user", "content": "Say hi"}]
        rewards = await asyncio.to_thread(
            reward,
            prompts=[conv, conv, conv],
            completions=[
                [{"role": "assistant", "content": "good hi"}],
                [{"role": "assistant", "content": "fail"}],
                [{"role": "assistant", "content": "bad"}],
            ],
        )
        reward.close()  # type: ignore[attr-defined]
        request = suite.samplers[0].backend.requests[0]
    assert reward.__name__ == "grm_judge"
    assert rewards == [9.0, None, 2.0]
    assert "Say hi" in request.messages[-1]["content"]


async def test_trl_async_reward_func() -> None:
    async with running_suite(script=failing_judge, max_attempts=1) as suite:
        reward = grm_reward_func_async(suite.address, group_size=4, k=1, timeout=20)
        assert asyncio.iscoroutinefunction(reward)
        rewards = await reward(
            prompts=["A", "B", "A", "B"], completions=["good", "fail", "bad", "good"]
        )
        await reward.aclose()  # type: ignore[attr-defined]
    # B's group contains the failure, so both of B's completions are None; never 0.
    assert rewards == [9.0, None, 2.0, None]


# --- verl ----------------------------------------------------------------------------------


async def test_verl_compute_score_and_batch() -> None:
    async with running_suite(script=failing_judge, max_attempts=1) as suite:
        verl.configure(suite.address, k=1, timeout=20)

        def run() -> tuple[float, float, list[float]]:
            good = verl.compute_score("gsm8k", "good: 4", "4", {"question": "2+2?"})
            bad = verl.compute_score("gsm8k", "bad: 5", "4", extra_info={"prompt": "2+2?"})
            batch = verl.compute_score_batch(
                ["d"] * 3, ["good", "bad", "good"], ["4"] * 3, [{"question": "q"}] * 3
            )
            return good, bad, batch

        good, bad, batch = await asyncio.to_thread(run)
        with pytest.raises(verl.GrmRewardError, match="could not score"):
            await asyncio.to_thread(verl.compute_score, "d", "fail", "4", {"question": "q"})
        with pytest.raises(verl.GrmRewardError, match="extra_info"):
            await asyncio.to_thread(verl.compute_score, "d", "good", "4", {"index": 3})
    assert (good, bad) == (9.0, 2.0)
    assert batch == [9.0, 2.0, 9.0]


def test_http_port_reaches_the_aggregator_from_grm_up_and_env() -> None:
    import argparse

    from grm.cli.up import UpSettings, add_up_options, aggregator_args, http_lines, up_options
    from grm.services.aggregator import main as agg

    parser = argparse.ArgumentParser()
    add_up_options(parser)
    settings = UpSettings(**up_options(parser.parse_args(["--http-port", "5000"])))
    assert aggregator_args(settings, {}) == ["--decoding", "embedded", "--http-port", "5000"]
    assert "http://127.0.0.1:5000/get_reward" in http_lines(settings)
    assert aggregator_args(UpSettings(), {}) == ["--decoding", "embedded"]
    assert http_lines(UpSettings()) == ""

    parser = argparse.ArgumentParser()
    agg.add_arguments(parser)
    args = parser.parse_args(["--samplers", "a:1", "--http-group-size", "4"])
    built = agg.build_settings(args, {"GRM_HTTP_PORT": "5000", "GRM_HTTP_GROUP": "false"})
    assert built.http == HttpRmSettings(
        host="0.0.0.0", port=5000, group=False, group_size=4, batch_items=256
    )
    assert agg.build_settings(args, {}).http is None
    with pytest.raises(SystemExit, match="http-group-size"):
        agg.build_settings(
            parser.parse_args(["--samplers", "a:1", "--http-group-size", "17"]),
            {"GRM_HTTP_PORT": "5000"},
        )
