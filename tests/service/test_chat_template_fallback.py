"""Prompt roles against an engine whose chat template rejects a system role (Gemma-2, hence
DeepSeek-GRM-27B): the dev TGI server serves such a template and answers as TGI's router does
(HTTP 422, `template_error`); the default one-user-turn prompt never trips it, and the system
variant falls back to one user turn for that endpoint, said once in the log."""

from __future__ import annotations

import aiohttp
import pytest

from grm.core.templates import load_templates
from grm.core.types import Context, ScoreStatus
from grm.core.validation import build_item
from grm.scoring.critique import CritiqueSampler
from grm.scoring.pipeline import ScoringPipeline
from tests.support.chat_templates import GEMMA2
from tests.support.tgi_support import (
    contract_errors,
    dev_tgi,
    exchanges,
    generate_bodies,
    openapi,
    tgi_backend,
)

RESPONSES = ["a good answer", "a bad answer"]
ERROR_SCHEMA = openapi()["components"]["schemas"]["ErrorResponse"]


async def test_the_dev_server_answers_a_refused_role_as_tgi_does() -> None:
    messages = load_templates("grm-default-v3-system").joint(Context.from_query("q"), RESPONSES)
    async with (
        dev_tgi(chat_template=GEMMA2, bos_token="<bos>") as server,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(f"{server.url}/chat_tokenize", json={"messages": messages}) as r:
            status, body = r.status, await r.json()
        assert status == 422 and body["error_type"] == "template_error"
        assert body["error"].startswith("Template error: ")
        assert "System role not supported" in body["error"]
        assert contract_errors(ERROR_SCHEMA, body) == []
        single = load_templates().joint(Context.from_query("q"), RESPONSES)
        async with http.post(f"{server.url}/chat_tokenize", json={"messages": single}) as r:
            assert r.status == 200
            text = (await r.json())["templated_text"]
    assert text.startswith("<bos><start_of_turn>user\nYou are a skilled")
    assert text.endswith("<start_of_turn>model\n")


async def test_the_default_prompt_never_trips_a_template_without_a_system_role() -> None:
    async with (
        dev_tgi(chat_template=GEMMA2) as server,
        tgi_backend(server.url) as backend,
    ):
        templates = load_templates()
        pipeline = ScoringPipeline(CritiqueSampler(backend, templates))
        result = await pipeline.score(build_item(query="q", responses=RESPONSES, k=4))
    assert result.status is ScoreStatus.COMPLETE and result.k_used == 4
    assert all(x.status == 200 for x in server.state.exchanges)


async def test_the_system_variant_falls_back_to_one_user_turn_once_per_endpoint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        dev_tgi(chat_template=GEMMA2) as server,
        tgi_backend(server.url) as backend,
    ):
        templates = load_templates("grm-default-v3-system")
        pipeline = ScoringPipeline(CritiqueSampler(backend, templates))
        with caplog.at_level("WARNING", logger="grm.backends.tgi"):
            first = await pipeline.score(build_item(query="q", responses=RESPONSES, k=4))
            second = await pipeline.score(build_item(query="q2", responses=RESPONSES, k=4))
    for result in (first, second):
        assert result.status is ScoreStatus.COMPLETE and result.k_used == 4
        assert result.invalid_samples == 0
    refused = [x for x in exchanges(server, "/chat_tokenize") if x.status == 422]
    assert 1 <= len(refused) <= 2  # the orders rendered concurrently before the first refusal
    assert len(generate_bodies(server)) == 8
    assert all(b["inputs"].startswith("<start_of_turn>user\n") for b in generate_bodies(server))
    warnings = [r for r in caplog.records if "one user turn" in r.getMessage()]
    assert len(warnings) == 1 and server.url in warnings[0].getMessage()


async def test_a_local_chat_template_falls_back_the_same_way() -> None:
    async with (
        dev_tgi() as server,
        tgi_backend(server.url, chat_template=GEMMA2) as backend,
    ):
        templates = load_templates("grm-default-v3-system")
        result = await ScoringPipeline(CritiqueSampler(backend, templates)).score(
            build_item(query="q", responses=RESPONSES, k=2)
        )
    assert result.k_used == 2
    assert all(b["inputs"].startswith("<start_of_turn>user\n") for b in generate_bodies(server))
