"""Cache keys: a hash of everything that determines the cached thing, and nothing else.

Samples are keyed by what decides the generation — model id + revision + backend, template
version, the context (all turns), the reference answer, the responses in the order the sample
saw them (and that order, which maps its scores back to the caller), its principles, its seed
and the sampling params — but not by its index or attempt, which only name it within one
request. Because seeds derive from (request seed, index, attempt), the first 8 samples of a
k=16 request are the samples of the k=8 request: k is incremental.

Bump KEY_VERSION when the meaning of a stored value changes without any of these inputs
changing (parsing or grammar semantics, the value encoding): old entries then simply stop
being found and age out by TTL.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import orjson

from grm.core.types import (
    Aggregation,
    Context,
    ModelInfo,
    SampleSpec,
    SamplingParams,
    ScoreItem,
)

# 2: strict final-line parsing, length = invalid, reference answers; 3: sample keys hash what a
# request's samples share once (the same inputs, encoded differently)
KEY_VERSION = 3
DIGEST_BYTES = 16
# What sources report before they know their model (the remote sampler pool says "unknown"
# until a sampler answers): such a model identifies nothing, so nothing is cached under it.
PLACEHOLDER_MODEL_IDS = frozenset({"", "unknown"})


def model_known(model: ModelInfo) -> bool:
    """Whether `model` identifies a model well enough to key a cache by it."""
    return model.model_id not in PLACEHOLDER_MODEL_IDS


class Kind(enum.StrEnum):
    """The three cached things; each has its own TTL and counters."""

    PRINCIPLES = "principles"
    SAMPLE = "sample"
    RESULT = "result"


def _model(model: ModelInfo) -> list[str]:
    return [model.model_id, model.revision, model.backend, model.template_version]


def _context(context: Context) -> list[list[str]]:
    return [[t.role, t.content] for t in context.turns]


def _params(params: SamplingParams) -> dict[str, Any]:
    return {
        "temperature": float(params.temperature),
        "top_p": float(params.top_p),
        "max_new_tokens": int(params.max_new_tokens),
        "grammar": bool(params.grammar),
        "force_scores": bool(params.force_scores),
    }


def _digest(kind: Kind, parts: dict[str, Any]) -> str:
    """The hex digest of a canonical JSON encoding of `parts`."""
    return hashlib.blake2b(_canonical(kind, parts), digest_size=DIGEST_BYTES).hexdigest()


def _canonical(kind: Kind, parts: dict[str, Any]) -> bytes:
    """What `json.dumps(..., ensure_ascii=False, sort_keys=True, separators=(",", ":"))` writes,
    in UTF-8 — the keys' definition. orjson writes the same bytes ~15× faster for every value
    but a float below 1e-4 or from 1e16 (`1e-05` there, `0.00001` in orjson), a non-finite
    float (an error here, `null` there) and an int beyond 64 bits; those go to `json`."""
    value = [KEY_VERSION, str(kind), parts]
    if _orjson_writes_it(parts):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # an int beyond 64 bits; a lone surrogate fails below as it always did
    payload = json.dumps(
        value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    )
    return payload.encode("utf-8")


def _orjson_writes_it(value: Any) -> bool:
    """No float that orjson writes differently from `json` (see `_canonical`)."""
    if isinstance(value, float):
        return value == 0 or (math.isfinite(value) and 1e-4 <= abs(value) < 1e16)
    if isinstance(value, dict):
        return all(_orjson_writes_it(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_orjson_writes_it(v) for v in value if not isinstance(v, str))
    return True


def make_key(kind: Kind, parts: dict[str, Any]) -> str:
    """`{kind}:{version}:{hex digest}` of a canonical JSON encoding of `parts`."""
    return f"{kind}:{KEY_VERSION}:{_digest(kind, parts)}"


def key_tag(key: str) -> bytes:
    """8 bytes of the key's digest, stored inside the value to tie it to its key."""
    return bytes.fromhex(key.rsplit(":", 1)[-1][:16])


class SampleKeys:
    """The keys of one request's samples: what they share (model, conversation, reference,
    responses, sampling) is encoded and hashed once, not once per sample — the conversation
    and responses can be long and a request has up to k samples. A sample's key adds what is
    its own: the order it showed the responses in (which, with the responses, fixes what it
    saw), its principles and its seed."""

    __slots__ = ("_shared",)

    def __init__(
        self,
        model: ModelInfo,
        context: Context,
        responses: Sequence[str],
        params: SamplingParams,
        reference: str = "",
    ) -> None:
        self._shared = _digest(
            Kind.SAMPLE,
            {
                "model": _model(model),
                "context": _context(context),
                "reference": reference,
                "responses": list(responses),
                "sampling": _params(params),
            },
        )

    def __call__(self, spec: SampleSpec) -> str:
        return make_key(
            Kind.SAMPLE,
            {
                "shared": self._shared,
                "order": list(spec.order),
                "principles": spec.principles,
                "seed": int(spec.seed),
            },
        )


def sample_key(
    model: ModelInfo,
    context: Context,
    responses: Sequence[str],
    spec: SampleSpec,
    params: SamplingParams,
    reference: str = "",
) -> str:
    """The key of one critique sample (`SampleKeys` for several of one request)."""
    return SampleKeys(model, context, responses, params, reference)(spec)


def principles_key(
    model: ModelInfo,
    context: Context,
    responses: Sequence[str],
    seed: int,
    index: int,
    params: SamplingParams,
    reference: str = "",
) -> str:
    """The key of principle set `index` of a request with `seed` (its seed derives from both)."""
    return make_key(
        Kind.PRINCIPLES,
        {
            "model": _model(model),
            "context": _context(context),
            "reference": reference,
            "responses": list(responses),
            "seed": int(seed),
            "index": int(index),
            "sampling": _params(params),
        },
    )


def result_key(
    model: ModelInfo,
    item: ScoreItem,
    *,
    meta_rm: str = "",
    principles_model: ModelInfo | None = None,
) -> str:
    """The key of a final result; request id and latency budget do not change a full result.

    k_meta and the meta RM only matter to meta-vote, and the principle generator only when it
    writes the principles, so they are normalised away otherwise (more hits, same answers).
    """
    meta = item.aggregation is Aggregation.META_VOTE
    generated = item.principle_mode.separate and not item.principles
    return make_key(
        Kind.RESULT,
        {
            "model": _model(model),
            "context": _context(item.context),
            "reference": item.reference,
            "responses": list(item.responses),
            "k": int(item.k),
            "k_meta": (item.k_meta or "auto") if meta else 0,
            "aggregation": str(item.aggregation),
            "meta_rm": meta_rm if meta else "",
            "seed": int(item.seed),
            "sampling": _params(item.sampling),
            "principles": item.principles,
            "principle_mode": str(item.principle_mode) if not item.principles else "given",
            "principles_model": (
                _model(principles_model) if generated and principles_model is not None else None
            ),
        },
    )
