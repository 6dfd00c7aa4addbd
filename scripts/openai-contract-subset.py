"""Cut the chat-completions subset out of OpenAI's OpenAPI document (openai/openai-openapi).

    python scripts/openai-contract-subset.py openapi.json > tests/contracts/openai-chat-completions.json

Keeps the schemas the chat-completions request and reply reach (transitively, through $ref),
unchanged, under `components.schemas`; the rest of the document is dropped. See
tests/contracts/README.md for the version and licence.
"""

from __future__ import annotations

import json
import sys
from typing import Any

ROOTS = ("CreateChatCompletionRequest", "CreateChatCompletionResponse", "ErrorResponse")
PREFIX = "#/components/schemas/"


def refs(node: Any) -> set[str]:
    """Schema names a node refers to."""
    if isinstance(node, list):
        return set().union(*(refs(x) for x in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    out = set().union(*(refs(v) for v in node.values())) if node else set()
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(PREFIX):
        out.add(ref[len(PREFIX) :])
    return out


def subset(doc: dict[str, Any]) -> dict[str, Any]:
    schemas = doc["components"]["schemas"]
    keep: dict[str, Any] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = schemas[name]
        todo.extend(sorted(refs(schemas[name]) - keep.keys()))
    return {
        "openapi": doc["openapi"],
        "info": {"title": doc["info"]["title"], "version": doc["info"]["version"]},
        "components": {"schemas": dict(sorted(keep.items()))},
    }


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        json.dump(subset(json.load(f)), sys.stdout, indent=1, sort_keys=False)
        sys.stdout.write("\n")
