"""Helpers for the TGI tests: dev servers on loopback port 0, backends, requests, the contract.

Everything goes over real HTTP: the dev server listens on a free port, the backend talks to it
with the real `text-generation` types.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import AsyncIterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

from grm.backends.base import GenerationRequest
from grm.backends.http_pool import RetryPolicy
from grm.backends.tgi import TgiBackend, TgiSettings
from grm.core.templates import load_templates
from grm.core.types import Context
from grm_dev.bench.stock_tgi import StockTgiBackend
from grm_dev.devtgi import DevTgiServer, DevTgiSettings, Exchange, FaultSettings, start_dev_server
from grm_dev.devtgi.engines import Engine, ScriptedEngine

CONTRACT = Path(__file__).parents[1] / "contracts" / "tgi-openapi.json"
RESPONSES = ("a good answer", "a bad answer")


@contextlib.asynccontextmanager
async def dev_tgi(
    engine: Engine | None = None, *, faults: FaultSettings | None = None, **settings: Any
) -> AsyncIterator[DevTgiServer]:
    """A dev server on 127.0.0.1:0 that records every exchange."""
    server = await start_dev_server(
        engine or ScriptedEngine(),
        DevTgiSettings(record=True, faults=faults or FaultSettings(), **settings),
    )
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def tgi_backend(
    *urls: str, pooled: bool = True, **settings: Any
) -> AsyncIterator[TgiBackend]:
    """A started TgiBackend on the given endpoints (fast backoff unless told otherwise);
    `pooled=False`: the stock-client baseline of the benchmarks (grm_dev)."""
    retry = {k: settings.pop(k) for k in list(settings) if k in RetryPolicy.__dataclass_fields__}
    retry.setdefault("backoff_base_s", 0.01)
    retry.setdefault("backoff_max_s", 0.05)
    settings.setdefault("startup_timeout_s", 5.0)
    cls = TgiBackend if pooled else StockTgiBackend
    backend = cls(TgiSettings(urls=urls, retry=RetryPolicy(**retry), **settings))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def judge_request(
    *,
    seed: int = 1,
    temperature: float = 0.5,
    max_new_tokens: int = 256,
    responses: Sequence[str] = RESPONSES,
    grammar: bool = True,
    query: str = "Which answer is right?",
    deadline: float | None = None,
    force_scores: bool = False,
) -> GenerationRequest:
    messages = load_templates().joint(Context.from_query(query), list(responses))
    return GenerationRequest(
        messages=tuple(messages),
        seed=seed,
        temperature=temperature,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        score_count=len(responses),
        grammar=grammar,
        force_scores=force_scores,
        deadline=deadline,
    )


def generate_bodies(server: DevTgiServer, path: str = "/generate") -> list[dict[str, Any]]:
    return [x.request for x in server.state.exchanges if x.path == path]


def exchanges(server: DevTgiServer, path: str) -> list[Exchange]:
    return [x for x in server.state.exchanges if x.path == path]


# ------------------------------------------------------------------ the OpenAPI contract


def _nullable_to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 `nullable: true` → JSON Schema `anyOf [..., null]` (recursively)."""
    if isinstance(node, list):
        return [_nullable_to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def openapi() -> dict[str, Any]:
    return json.loads(CONTRACT.read_text("utf-8"))


@cache
def _registry() -> tuple[Registry, dict[str, Any]]:
    doc = _nullable_to_json_schema(copy.deepcopy(openapi()))
    resource = Resource.from_contents(doc, default_specification=_DRAFT)
    return Registry().with_resource("urn:tgi-openapi", resource), doc


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    registry, _ = _registry()
    root = {"$schema": _DRAFT_URI, **_rebase(schema)}
    return jsonschema.Draft202012Validator(root, registry=registry)


def _rebase(node: Any) -> Any:
    """`#/components/...` refs point into the registered document."""
    if isinstance(node, list):
        return [_rebase(x) for x in node]
    if isinstance(node, dict):
        return {
            k: ("urn:tgi-openapi" + v if k == "$ref" and v.startswith("#/") else _rebase(v))
            for k, v in node.items()
        }
    return node


def request_schema(method: str, path: str) -> dict[str, Any] | None:
    op = openapi()["paths"][path][method.lower()]
    body = op.get("requestBody")
    if body is None:
        return None
    return body["content"]["application/json"]["schema"]


def response_schema(method: str, path: str, status: int) -> dict[str, Any] | None:
    op = openapi()["paths"][path][method.lower()]
    reply = op["responses"].get(str(status))
    if reply is None:
        raise AssertionError(f"{method} {path}: status {status} is not in the contract")
    content = reply.get("content")
    if not content:
        return None
    media = content.get("application/json") or content.get("text/plain")
    return media["schema"] if media else None


def contract_errors(schema: dict[str, Any], instance: Any) -> list[str]:
    """Every way `instance` breaks `schema` (empty = valid)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in _validator(schema).iter_errors(instance)
    ]


def _draft() -> Any:
    from referencing.jsonschema import DRAFT202012

    return DRAFT202012


_DRAFT = _draft()
_DRAFT_URI = "https://json-schema.org/draft/2020-12/schema"
