"""Contract tests: the chat completions on the wire against OpenAI's published schema.

Every request body the openai backend sent in every dialect — samples, greedy, no grammar, a
forced score line, the one-turn fallback, retried faults — must validate against
`CreateChatCompletionRequest` of OpenAI's OpenAPI document (the vendored subset in
`tests/contracts/`) plus that engine's documented extras (`EXTRAS`); TGI's, which carry a
regex `response_format` OpenAI's schema has no type for, also against TGI's own `ChatRequest`.
The dev server's replies are checked too: successes against `CreateChatCompletionResponse`
(and TGI's `ChatCompletion`), errors against each engine's documented error body.

What the contract showed (and the backend therefore does):
- OpenAI's `top_p` allows 1.0 but TGI's router refuses `top_p >= 1.0`: the backend leaves
  top_p out at 1.0 (the same thing) for every engine.
- `max_tokens` is deprecated in OpenAI's document in favour of `max_completion_tokens`, which
  TGI 3.3 and llama-cpp-python do not read: the backend sends `max_tokens`, still in the schema.
- Unset optional fields are left out, never sent as null (OpenAI's 3.1 document marks few
  fields nullable).
"""

from __future__ import annotations

import dataclasses

import pytest

from grm.backends.base import GenerationRequest
from grm_dev.devtgi import Exchange, FaultSettings
from tests.support.openai_support import (
    CHAT,
    DIALECTS,
    ERROR_SHAPES,
    dev_openai,
    errors_against,
    openai_backend,
    openai_schema,
    request_errors,
)
from tests.support.tgi_support import judge_request


def _system_turn() -> GenerationRequest:
    request = judge_request()
    user = "\n\n".join(m["content"] for m in request.messages)
    messages = ({"role": "system", "content": "You judge."}, {"role": "user", "content": user})
    return dataclasses.replace(request, messages=messages)


async def traffic(dialect: str) -> list[Exchange]:
    """Everything the backend sends in `dialect`, and the replies, including errors."""
    faults = FaultSettings(sequence=("ok", "429", "500", "422"))
    out: list[Exchange] = []
    async with dev_openai(dialect, faults=faults, context=2048) as server:
        async with openai_backend(server.url) as b:
            await b.generate([judge_request(seed=s) for s in (1, 2)])  # samples; faults
            await b.generate([judge_request(seed=s) for s in (0, 3, 4)])  # seed 0
            await b.generate([judge_request(temperature=0.0)])  # greedy
            await b.generate([judge_request(max_new_tokens=12, force_scores=True)])  # forced line
            await b.generate([judge_request(grammar=False, responses=("x",))])  # no grammar
            await b.generate([judge_request(max_new_tokens=4000)])  # over the context: 400
        out += list(server.state.exchanges)
    async with dev_openai(dialect, reject_system_role=True) as server:
        async with openai_backend(server.url) as b:
            await b.generate([_system_turn()])  # template error, then one user turn
        out += list(server.state.exchanges)
    return out


@pytest.fixture(scope="module", params=DIALECTS)
def recorded(request: pytest.FixtureRequest) -> tuple[str, list[Exchange]]:
    import asyncio

    return request.param, asyncio.run(traffic(request.param))


def test_the_traffic_covers_what_the_contract_must_see(
    recorded: tuple[str, list[Exchange]],
) -> None:
    dialect, exchanges = recorded
    chats = [x for x in exchanges if x.path == CHAT]
    statuses = {x.status for x in chats}
    invalid = 422 if dialect == "tgi" else 400
    assert {200, invalid, 429, 500} <= statuses and len(chats) >= 10
    assert any("temperature" in x.request and x.request["temperature"] == 0 for x in chats)
    if dialect in ("vllm", "sglang"):
        assert any(x.request.get("continue_final_message") for x in chats)


def test_every_request_validates_against_openais_schema_and_the_engines_extras(
    recorded: tuple[str, list[Exchange]],
) -> None:
    dialect, exchanges = recorded
    for x in exchanges:
        if x.path == CHAT:
            assert request_errors(dialect, x.request) == [], x.request


def test_every_reply_matches_the_engines_documented_shape(
    recorded: tuple[str, list[Exchange]],
) -> None:
    dialect, exchanges = recorded
    for x in exchanges:
        if x.path == CHAT and x.status == 200:
            assert errors_against(openai_schema("CreateChatCompletionResponse"), x.response) == []
            if dialect == "tgi":
                tgi = {"$ref": "urn:tgi-openapi#/components/schemas/ChatCompletion"}
                assert errors_against(tgi, x.response) == []
        elif x.path == CHAT:
            assert errors_against(ERROR_SHAPES[dialect], x.response) == [], x.response
        if dialect == "tgi" and x.path == "/info":
            assert (
                errors_against({"$ref": "urn:tgi-openapi#/components/schemas/Info"}, x.response)
                == []
            )
        if dialect == "tgi" and x.path == "/v1/models":
            model = {"$ref": "urn:tgi-openapi#/components/schemas/ModelInfo"}
            assert errors_against(model, x.response) == []


def test_the_contract_rejects_what_engines_would_reject() -> None:
    good = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 8}
    assert request_errors("vllm", good) == []
    assert request_errors("vllm", {**good, "temperature": 3})  # OpenAI: at most 2
    assert request_errors("vllm", {**good, "messages": []})  # minItems 1
    assert request_errors("vllm", {**good, "structured_outputs": {"regex": 1}})
    assert request_errors("tgi", {**good, "response_format": {"type": "grammar", "value": "x"}})
    assert request_errors("llamacpp", {**good, "grammar": ["root ::= x"]})
