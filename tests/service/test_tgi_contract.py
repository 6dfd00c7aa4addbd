"""Contract tests: the bodies on the wire against TGI's own OpenAPI document (TGI 3.3.6-dev0).

The dev server records every exchange as it crossed the wire (raw bytes, parsed); nothing
here is hand-written except the negative controls. Every request body the TGI backend sent
(pooled `/generate`, stock `/`, `/chat_tokenize`, `/tokenize`) must validate against its
route's request schema, and every reply the dev server gave (success and error bodies,
`/info`, `/health`, `/tokenize`, `/chat_tokenize`) against the schema of its status.

What the contract showed (and the backend therefore does):
- `GenerateParameters.seed` has `exclusiveMinimum: 0`: seed 0 is outside the contract, so the
  backend sends seed 0 as 2**31 (outside the suite's 31-bit seed range).
- `top_p` allows 1.0 in the schema (`maximum: 1`), but `text-generation`'s `Parameters` (and
  TGI's router) reject `top_p >= 1.0`: the backend sends no top_p for 1.0 (the same thing).
- `temperature` has `exclusiveMinimum: 0`: greedy is `do_sample: false` with no temperature.
- `text-generation` serializes every unset optional field as an explicit `null`; the document
  allows that only through OpenAPI 3.0 `nullable`, so validation maps `nullable` to JSON
  Schema's `null` type (without it, every body the stock client sends would fail).
- `GenerateRequest` has no `stream` (only `CompatGenerateRequest` for `/` does); the stock
  client always sends it, the pooled `/generate` call leaves it out.
- `GenerateResponse.details` is nullable, but `text-generation`'s `Response` requires it: the
  backend always asks for `details: true`.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from text_generation import errors as tgi_errors
from text_generation.types import Parameters, Request

from grm.core.grammar import scores_regex
from grm_dev.devtgi import DevTgiSettings, Exchange, FaultSettings, start_dev_server
from grm_dev.devtgi.engines import ScriptedEngine
from tests.support.tgi_support import (
    contract_errors,
    dev_tgi,
    judge_request,
    request_schema,
    response_schema,
    tgi_backend,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:The `dict` method is deprecated:DeprecationWarning"  # text-generation 0.7.0
)

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


async def backend_traffic() -> list[Exchange]:
    """Everything the TGI backend sends in its modes, and the replies, including errors."""
    faults = FaultSettings(sequence=("ok", "429", "500", "422"))
    async with dev_tgi(faults=faults) as server:
        for pooled in (True, False):
            async with tgi_backend(server.url, pooled=pooled, stop=("<|im_end|>",)) as b:
                await b.generate([judge_request(seed=s) for s in (1, 2)])  # samples; faults
                await b.generate([judge_request(seed=s) for s in (0, 3, 4)])  # seed 0
                await b.generate([judge_request(temperature=0.0)])  # greedy
                await b.generate([judge_request(max_new_tokens=10, force_scores=True)])  # forced
                await b.generate([judge_request(grammar=False, responses=("x",))])  # no grammar
        async with tgi_backend(server.url, chat_template=TEMPLATE) as b:
            await b.generate([judge_request(seed=7)])  # local template: /tokenize
        return list(server.state.exchanges)


async def server_only_traffic() -> list[Exchange]:
    """Replies the backend does not provoke: real validation errors, health while loading."""

    class SlowEngine(ScriptedEngine):
        async def start(self) -> None:
            import asyncio

            await asyncio.sleep(0.5)

    server = await start_dev_server(
        SlowEngine(max_total_tokens=64),
        DevTgiSettings(record=True, max_concurrent_requests=1),
        wait_ready=False,
    )
    try:
        async with aiohttp.ClientSession() as http:
            await (await http.get(f"{server.url}/health")).read()  # 503 while loading
            await server.loader  # type: ignore[misc]
            await (await http.get(f"{server.url}/health")).read()
            await (await http.get(f"{server.url}/metrics")).read()
            for params in (
                {"max_new_tokens": 8},
                {"max_new_tokens": 200},  # over max_total_tokens
                {"temperature": 0.0},
                {"top_p": 1.0},
                {"stop": ["a", "b", "c", "d", "e"]},
                {"grammar": {"type": "regex", "value": "[a-z]+"}},
                {"grammar": {"type": "json", "value": {"type": "object"}}},
            ):
                body = {"inputs": "Hello there", "parameters": params}
                await (await http.post(f"{server.url}/generate", json=body)).read()
            long = {"inputs": "word " * 100, "parameters": {"max_new_tokens": 4}}
            await (await http.post(f"{server.url}/generate", json=long)).read()
            await (await http.post(f"{server.url}/", json=long)).read()
            await (await http.post(f"{server.url}/tokenize", json={"inputs": "a b"})).read()
        return list(server.state.exchanges)
    finally:
        await server.close()


def _label(x: Exchange) -> str:
    return f"{x.method} {x.path} → {x.status}"


async def test_every_request_body_the_backend_sends_fits_the_contract() -> None:
    traffic = await backend_traffic()
    checked: dict[str, int] = {}
    problems: list[str] = []
    for x in traffic:
        schema = request_schema(x.method, x.path)
        if schema is None:
            assert x.request is None, f"{_label(x)} sent a body the contract has no schema for"
            continue
        checked[x.path] = checked.get(x.path, 0) + 1
        problems += [f"{_label(x)}: {p}" for p in contract_errors(schema, x.request)]
    assert not problems, "\n".join(problems)
    assert set(checked) == {"/generate", "/", "/chat_tokenize", "/tokenize"}, checked
    generate = [x.request for x in traffic if x.path in ("/generate", "/")]
    grammars = {
        (b["parameters"]["grammar"] or {}).get("value", "")[:20] for b in generate
    }  # with grammar, without, and the forced suffix
    assert scores_regex(2)[:20] in grammars and "" in grammars and len(grammars) >= 3
    assert {b["parameters"]["do_sample"] for b in generate} == {True, False}


async def test_every_reply_of_the_dev_server_fits_the_contract() -> None:
    traffic = await backend_traffic() + await server_only_traffic()
    problems: list[str] = []
    seen: set[tuple[str, int]] = set()
    for x in traffic:
        seen.add((x.path, x.status))
        schema = response_schema(x.method, x.path, x.status)
        if schema is None:
            assert x.response in (None, ""), f"{_label(x)}: body where the contract has none"
            continue
        if x.path == "/metrics":
            assert x.content_type == "text/plain" and "tgi_request_count" in x.response
            continue
        assert x.content_type == "application/json", _label(x)
        problems += [f"{_label(x)}: {p}" for p in contract_errors(schema, x.response)]
    assert not problems, "\n".join(problems)
    for expected in [
        ("/generate", 200),
        ("/generate", 422),
        ("/generate", 429),
        ("/generate", 500),
        ("/", 200),
        ("/", 422),
        ("/info", 200),
        ("/health", 200),
        ("/health", 503),
        ("/tokenize", 200),
        ("/chat_tokenize", 200),
        ("/metrics", 200),
    ]:
        assert expected in seen, f"no {expected} reply was checked"


async def test_the_dev_server_refuses_what_tgi_refuses() -> None:
    replies = {
        (x.path, str(x.request.get("parameters") if x.request else None)[:40]): x
        for x in await server_only_traffic()
    }
    messages = [x.response["error"] for x in replies.values() if x.status == 422]
    assert any("`inputs` must have less than 63 tokens" in m for m in messages)
    assert any("`inputs` tokens + `max_new_tokens` must be <= 64" in m for m in messages)
    assert any("`temperature` must be strictly positive" in m for m in messages)
    assert any("`top_p` must be > 0.0 and < 1.0" in m for m in messages)
    assert any("supports up to 4 stop sequences" in m for m in messages)
    assert sum("grammar" in m for m in messages) == 2


# Negative controls: the validation really rejects what breaks the contract.


def test_seed_zero_from_the_client_types_breaks_the_contract() -> None:
    body = Request(inputs="x", parameters=Parameters(seed=0, details=True)).model_dump(mode="json")
    errors = contract_errors(request_schema("post", "/"), body)
    assert errors and errors[0].startswith("parameters/seed")
    body["parameters"]["seed"] = 1
    assert contract_errors(request_schema("post", "/"), body) == []


def test_top_p_one_fits_the_schema_but_not_the_client() -> None:
    body: dict[str, Any] = {"inputs": "x", "parameters": {"top_p": 1.0}}
    assert contract_errors(request_schema("post", "/generate"), body) == []
    with pytest.raises(tgi_errors.ValidationError):
        Parameters(top_p=1.0)


def test_malformed_replies_break_the_contract() -> None:
    ok = {
        "generated_text": "x",
        "details": {"finish_reason": "length", "generated_tokens": 1, "prefill": [], "tokens": []},
    }
    schema = response_schema("post", "/generate", 200)
    assert schema is not None and contract_errors(schema, ok) == []
    assert contract_errors(schema, {**ok, "details": {**ok["details"], "finish_reason": "Stop"}})
    assert contract_errors(schema, {"details": ok["details"]})
    error_schema = response_schema("post", "/generate", 429)
    assert error_schema is not None
    assert contract_errors(error_schema, {"error": "Model is overloaded"})  # no error_type
    info_schema = response_schema("get", "/info", 200)
    assert info_schema is not None and contract_errors(info_schema, {"model_id": "m"})
