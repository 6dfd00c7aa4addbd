"""Helpers for the OpenAI-compatible backend tests: dev servers per dialect, backends, the contract.

Everything goes over real HTTP: `grm dev-openai`'s app listens on a free loopback port in the
test's event loop and records every exchange; the backend talks to it with its pooled sessions.
The contract is the chat-completions subset of OpenAI's own OpenAPI document
(`tests/contracts/openai-chat-completions.json`), plus each engine's documented extras.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from grm.backends.http_pool import RetryPolicy
from grm.backends.openai import OpenAiBackend, OpenAiSettings
from grm_dev.devopenai import DevOpenAiServer, DevOpenAiSettings, start_dev_server
from grm_dev.devtgi import Exchange, FaultSettings
from grm_dev.devtgi.engines import Engine, ScriptedEngine

CONTRACT = Path(__file__).parents[1] / "contracts" / "openai-chat-completions.json"
CHAT = "/v1/chat/completions"
DIALECTS = ("vllm", "sglang", "llamacpp", "tgi")

# The field each engine's documentation gives for a regex / grammar constraint.
CONSTRAINT_FIELD = {
    "vllm": "structured_outputs",
    "sglang": "regex",
    "llamacpp": "grammar",
    "tgi": "response_format",
}

# The documented request extras beyond OpenAI's schema, per engine (the contract allows these
# on top of CreateChatCompletionRequest; OpenAI's own `response_format` has no regex type, so
# TGI's is checked against TGI's document instead).
EXTRAS: dict[str, dict[str, Any]] = {
    "vllm": {
        "structured_outputs": {
            "type": "object",
            "properties": {"regex": {"type": "string"}},
            "required": ["regex"],
            "additionalProperties": False,
        },
        "guided_regex": {"type": "string"},
        "continue_final_message": {"type": "boolean"},
        "add_generation_prompt": {"type": "boolean"},
    },
    "sglang": {
        "regex": {"type": "string"},
        "continue_final_message": {"type": "boolean"},
        "add_generation_prompt": {"type": "boolean"},
    },
    "llamacpp": {"grammar": {"type": "string"}},
    "tgi": {},
}

# Error bodies as each engine documents them (see docs/engines.md for the sources).
ERROR_SHAPES: dict[str, dict[str, Any]] = {
    "vllm": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code"],
                "properties": {"message": {"type": "string"}, "code": {"type": "integer"}},
            }
        },
    },
    "sglang": {
        "type": "object",
        "required": ["object", "message", "type", "code"],
        "properties": {"object": {"const": "error"}, "code": {"type": "integer"}},
    },
    "llamacpp": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "type"],
                "properties": {
                    "type": {
                        "enum": [
                            "invalid_request_error",
                            "authentication_error",
                            "not_found_error",
                            "server_error",
                            "permission_error",
                            "not_supported_error",
                            "unavailable_error",
                            "exceed_context_size_error",
                        ]
                    }
                },
            }
        },
    },
    "tgi": {"$ref": "urn:tgi-openapi#/components/schemas/ErrorResponse"},
}


@contextlib.asynccontextmanager
async def dev_openai(
    dialect: str = "vllm",
    engine: Engine | None = None,
    *,
    faults: FaultSettings | None = None,
    **settings: Any,
) -> AsyncIterator[DevOpenAiServer]:
    """A dev server in `dialect` on 127.0.0.1:0 that records every exchange."""
    server = await start_dev_server(
        engine or ScriptedEngine(),
        DevOpenAiSettings(
            dialect=dialect, record=True, faults=faults or FaultSettings(), **settings
        ),
    )
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def openai_backend(*urls: str, **settings: Any) -> AsyncIterator[OpenAiBackend]:
    """A started OpenAiBackend (fast backoff, metrics read on demand unless told otherwise)."""
    retry = {k: settings.pop(k) for k in list(settings) if k in RetryPolicy.__dataclass_fields__}
    retry.setdefault("backoff_base_s", 0.01)
    retry.setdefault("backoff_max_s", 0.05)
    settings.setdefault("startup_timeout_s", 5.0)
    settings.setdefault("metrics_interval_s", 0)
    backend = OpenAiBackend(OpenAiSettings(urls=urls, retry=RetryPolicy(**retry), **settings))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def chat_bodies(server: DevOpenAiServer) -> list[dict[str, Any]]:
    return [x.request for x in server.state.exchanges if x.path == CHAT]


def exchanges(server: DevOpenAiServer, path: str = CHAT) -> list[Exchange]:
    return [x for x in server.state.exchanges if x.path == path]


# ------------------------------------------------------------------ the contract


def _nullable(node: Any) -> Any:
    """OpenAPI `nullable: true` → JSON Schema `anyOf [..., null]` (recursively)."""
    if isinstance(node, list):
        return [_nullable(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _rebase(node: Any, urn: str) -> Any:
    if isinstance(node, list):
        return [_rebase(x, urn) for x in node]
    if isinstance(node, dict):
        return {
            k: (urn + v if k == "$ref" and v.startswith("#/") else _rebase(v, urn))
            for k, v in node.items()
        }
    return node


@cache
def _registry() -> Registry:
    openai = _nullable(copy.deepcopy(json.loads(CONTRACT.read_text("utf-8"))))
    tgi_doc = CONTRACT.parent / "tgi-openapi.json"
    tgi = _nullable(json.loads(tgi_doc.read_text("utf-8")))
    return (
        Registry()
        .with_resource(
            "urn:openai", Resource.from_contents(openai, default_specification=DRAFT202012)
        )
        .with_resource(
            "urn:tgi-openapi", Resource.from_contents(tgi, default_specification=DRAFT202012)
        )
    )


def errors_against(schema: dict[str, Any], instance: Any) -> list[str]:
    """Every way `instance` breaks `schema` (refs: `urn:openai#...`, `urn:tgi-openapi#...`)."""
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    validator = jsonschema.Draft202012Validator(root, registry=_registry())
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def openai_schema(name: str) -> dict[str, Any]:
    return {"$ref": f"urn:openai#/components/schemas/{name}"}


def request_errors(dialect: str, body: dict[str, Any]) -> list[str]:
    """A chat-completion request against OpenAI's schema plus the engine's documented extras."""
    extras = EXTRAS[dialect]
    core = {k: v for k, v in body.items() if k not in extras}
    if dialect == "tgi":  # TGI's regex response_format: TGI's own ChatRequest schema
        core.pop("response_format", None)
        problems = errors_against({"$ref": "urn:tgi-openapi#/components/schemas/ChatRequest"}, body)
    else:
        problems = []
    problems += errors_against(openai_schema("CreateChatCompletionRequest"), core)
    for key, schema in extras.items():
        if key in body:
            problems += [f"{key}: {p}" for p in errors_against(schema, body[key])]
    return problems
