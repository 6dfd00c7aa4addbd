"""The openai backend over real HTTP against `grm dev-openai` in each engine's dialect.

A k = 8 Score sends 8 chat completions with 8 seeds and the engine's constrained-decoding
field; the sampler's capacity follows the engine's /metrics; overloads are retried, the
request's own faults are not; a refused chat template falls back to one user turn, once per
endpoint; cancellation closes the request at the engine.
"""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest

from grm.backends.base import GenerationRequest
from grm.backends.openai import OpenAiBackend
from grm.core.errors import ChatTemplateError, InvalidArgumentError, UnavailableError
from grm.core.templates import load_templates
from grm.core.types import ScoreStatus
from grm.core.validation import build_item
from grm.scoring.critique import CritiqueSampler
from grm.scoring.pipeline import ScoringPipeline
from grm.scoring.principles import PrincipleGenerator
from grm.v1 import critique_pb2, critique_pb2_grpc
from grm_dev.devtgi import FaultSettings
from grm_dev.devtgi.engines import shown_responses
from tests.support.openai_support import (
    CONSTRAINT_FIELD,
    DIALECTS,
    chat_bodies,
    dev_openai,
    exchanges,
    openai_backend,
)
from tests.support.servers import start_sampler
from tests.support.tgi_support import judge_request

RESPONSES = ["bad one", "good one", "bad two", "good two"]


def pipeline(backend: OpenAiBackend) -> ScoringPipeline:
    templates = load_templates()
    return ScoringPipeline(
        CritiqueSampler(backend, templates), principles=PrincipleGenerator(backend, templates)
    )


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_k8_score_sends_8_seeded_constrained_chat_completions(dialect: str) -> None:
    async with dev_openai(dialect) as server, openai_backend(server.url) as backend:
        assert backend.engines[server.url].dialect.name == dialect  # detected, not told
        result = await pipeline(backend).score(
            build_item(query="q", responses=RESPONSES, k=8, temperature=0.5, grammar=True)
        )
    assert result.status is ScoreStatus.COMPLETE and result.k_used == 8
    assert result.votes == (16, 72, 16, 72)
    assert result.model is not None and result.model.backend == "openai"
    assert result.model.model_id == "grm-devtgi/scripted"
    bodies = chat_bodies(server)
    assert len(bodies) == 8
    assert len({b["seed"] for b in bodies}) == 8
    assert {b["temperature"] for b in bodies} == {0.5}
    assert all(CONSTRAINT_FIELD[dialect] in b for b in bodies)
    others = set(CONSTRAINT_FIELD.values()) - {CONSTRAINT_FIELD[dialect]}
    assert not any(set(b) & others for b in bodies)  # only the engine's own spelling
    shown = {tuple(shown_responses(b["messages"][-1]["content"])) for b in bodies}
    assert len(shown) > 1  # each sample its own response order
    assert {s.backend_seed for s in result.samples} == {b["seed"] for b in bodies}
    assert {s.finish_reason for s in result.samples} == {"stop"}


async def test_without_grammar_no_constraint_is_sent() -> None:
    async with dev_openai("sglang") as server, openai_backend(server.url) as backend:
        await backend.generate([judge_request(grammar=False)])
    [body] = chat_bodies(server)
    assert not set(body) & set(CONSTRAINT_FIELD.values())


async def test_the_engine_is_taken_from_the_flag_over_detection() -> None:
    async with dev_openai("vllm") as server, openai_backend(server.url, engine="sglang") as b:
        await b.generate([judge_request()])
    assert "regex" in chat_bodies(server)[0]  # told SGLang, so SGLang's spelling
    assert "/version" not in {x.path for x in server.state.exchanges}  # no detection probes


async def test_limits_come_from_the_engine_and_cap_max_tokens() -> None:
    async with (
        dev_openai("llamacpp", max_concurrent=3, context=600) as server,
        openai_backend(server.url) as backend,
    ):
        assert backend.capacity == 3  # /props total_slots
        await backend.generate([judge_request(max_new_tokens=5000, grammar=False)])
    assert chat_bodies(server)[0]["max_tokens"] == 599  # capped by n_ctx


async def test_a_prompt_over_the_context_is_the_callers_error() -> None:
    async with dev_openai("vllm", context=64) as server, openai_backend(server.url) as backend:
        [result] = await backend.generate([judge_request(max_new_tokens=32)])
    assert isinstance(result, InvalidArgumentError) and result.field == "responses"


@pytest.mark.parametrize("dialect", ["vllm", "llamacpp"])
async def test_the_samplers_capacity_follows_the_engines_metrics(dialect: str) -> None:
    async with dev_openai(dialect, max_concurrent=8) as server:
        async with openai_backend(server.url, max_in_flight=8) as backend:
            running = await start_sampler(backend)  # type: ignore[arg-type]
            try:
                async with grpc.aio.insecure_channel(running.address) as channel:
                    stub = critique_pb2_grpc.CritiqueServiceStub(channel)
                    before = await stub.GetLoad(critique_pb2.LoadRequest(), timeout=5)
                    server.state.extra_running = 5  # another client's requests
                    await backend.refresh_load()
                    busy = await stub.GetLoad(critique_pb2.LoadRequest(), timeout=5)
                    server.state.extra_running, server.state.extra_waiting = 6, 4
                    await backend.refresh_load()
                    queueing = await stub.GetLoad(critique_pb2.LoadRequest(), timeout=5)
                    server.state.extra_running = server.state.extra_waiting = 0
                    await backend.refresh_load()
                    after = await stub.GetLoad(critique_pb2.LoadRequest(), timeout=5)
            finally:
                await running.stop()
    assert (before.capacity, busy.capacity, queueing.capacity, after.capacity) == (8, 3, 1, 8)
    assert running.sampler.capacity == 8


async def test_the_metrics_loop_reads_the_gauges_by_itself() -> None:
    async with (
        dev_openai("sglang", max_concurrent=16) as server,
        openai_backend(server.url, metrics_interval_s=0.05) as backend,
    ):
        assert backend.capacity == 16  # /get_server_info max_running_requests
        server.state.extra_waiting = 20
        server.state.extra_running = 16
        for _ in range(200):  # polled every 50 ms; bounded by count, not wall time
            if backend.capacity == 1:
                break
            await asyncio.sleep(0.05)
        assert backend.capacity == 1


async def test_overloads_are_retried_and_outages_move_to_another_endpoint() -> None:
    faults = FaultSettings(sequence=("429", "429", "ok"))
    async with (
        dev_openai("tgi", faults=faults) as server,
        openai_backend(server.url) as backend,
    ):
        [result] = await backend.generate([judge_request()])
    assert not isinstance(result, Exception) and backend.stats["overloaded"] == 2
    async with (
        dev_openai("vllm", faults=FaultSettings(sequence=("500",))) as bad,
        dev_openai("vllm") as good,
        openai_backend(bad.url, good.url) as backend,
    ):
        results = await backend.generate([judge_request(seed=s) for s in range(4)])
    assert not any(isinstance(r, Exception) for r in results)
    assert backend.stats["unavailable"] == 1 and len(chat_bodies(good)) >= 1


async def test_the_requests_own_fault_is_not_retried() -> None:
    faults = FaultSettings(sequence=("422",))
    async with dev_openai("sglang", faults=faults) as server, openai_backend(server.url) as b:
        [result] = await b.generate([judge_request()])
    assert type(result) is InvalidArgumentError and len(chat_bodies(server)) == 1


def with_system_turn() -> GenerationRequest:
    """A judge request as a system turn plus one user turn (whatever the template's roles)."""
    request = judge_request()
    user = "\n\n".join(m["content"] for m in request.messages)
    messages = ({"role": "system", "content": "You judge."}, {"role": "user", "content": user})
    return dataclasses.replace(request, messages=messages)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_refused_system_role_falls_back_to_one_user_turn_once(dialect: str) -> None:
    async with (
        dev_openai(dialect, reject_system_role=True) as server,
        openai_backend(server.url) as backend,
    ):
        first = await backend.generate([with_system_turn()])
        second = await backend.generate([with_system_turn()])
    assert not any(isinstance(r, Exception) for r in first + second)
    assert [r.finish_reason for r in first + second] == ["stop", "stop"]  # type: ignore[union-attr]
    roles = [[m["role"] for m in b["messages"]] for b in chat_bodies(server)]
    assert roles == [["system", "user"], ["user"], ["user"]]  # refused once, then one turn
    assert chat_bodies(server)[1]["messages"][0]["content"].startswith("You judge.\n\n")
    assert backend.stats["single_turn_fallbacks"] == 1


async def test_without_the_fallback_a_refused_template_is_the_callers_error() -> None:
    async with (
        dev_openai("vllm", reject_system_role=True) as server,
        openai_backend(server.url) as backend,
    ):
        backend._single_turn.add("elsewhere")  # another endpoint's memory changes nothing here
        [result] = await backend.generate([with_system_turn()])
        [plain] = await backend.generate(
            [
                dataclasses.replace(
                    with_system_turn(),
                    messages=({"role": "system", "content": "only a system turn"},),
                )
            ]
        )
    assert not isinstance(result, Exception)
    # a prompt that is nothing but a system turn cannot be helped by folding it into a user
    # turn the template would accept... it becomes one user turn, which the template takes
    assert not isinstance(plain, ChatTemplateError)


async def test_an_api_key_goes_with_every_request() -> None:
    async with dev_openai("vllm", api_key="s3cret") as server:
        with pytest.raises(UnavailableError, match="401"):
            async with openai_backend(server.url, startup_timeout_s=0.2):
                pass
        async with openai_backend(server.url, api_key="s3cret") as backend:
            [result] = await backend.generate([judge_request()])
    assert not isinstance(result, Exception)


async def test_a_cut_off_score_line_is_completed_per_engine() -> None:
    async with dev_openai("vllm") as server, openai_backend(server.url) as backend:
        [result] = await backend.generate([judge_request(max_new_tokens=12, force_scores=True)])
    assert not isinstance(result, Exception) and result.finish_reason == "forced_scores"
    first, second = chat_bodies(server)
    assert "continue_final_message" not in first
    assert second["continue_final_message"] is True and second["add_generation_prompt"] is False
    assert second["messages"][-1]["role"] == "assistant"
    assert second["messages"][-1]["content"].endswith("Scores: \\boxed{")
    assert result.text.endswith("Scores: \\boxed{9, 2}")
    async with dev_openai("llamacpp") as server, openai_backend(server.url) as backend:
        [result] = await backend.generate([judge_request(max_new_tokens=40, force_scores=True)])
    assert not isinstance(result, Exception) and result.finish_reason == "forced_scores"
    [body] = chat_bodies(server)  # one request: the free text was bounded to fit
    assert "body ::= [^\\x00]{0,14}" in body["grammar"]  # 40 - len("Scores: \\boxed{10, 10}") - 4


async def test_cancellation_closes_the_request_at_the_engine() -> None:
    faults = FaultSettings(sequence=("timeout",), hang_s=60)
    async with dev_openai("vllm", faults=faults) as server, openai_backend(server.url) as backend:
        task = asyncio.ensure_future(backend.generate([judge_request()]))
        for _ in range(400):  # until the engine has admitted it (bounded by count)
            if server.state.admitted:
                break
            await asyncio.sleep(0.01)
        assert server.state.admitted == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(400):
            if not server.state.admitted:
                break
            await asyncio.sleep(0.01)
        assert server.state.admitted == 0  # the engine's handler was cancelled
        assert backend.endpoints[0].in_flight == 0


async def test_endpoints_with_another_model_are_refused() -> None:
    async with (
        dev_openai("vllm") as one,
        dev_openai("vllm", model_id="other/model") as two,
        openai_backend(one.url, two.url) as backend,
    ):
        assert backend.endpoints[0].ready and not backend.endpoints[1].ready
        assert "refused" in backend.endpoints[1].error
        assert await backend.healthy()
    assert exchanges(two, "/v1/models")
