"""JSON form of results and errors: what `grm score` writes, one object per item."""

from __future__ import annotations

from typing import Any

from grm.core.errors import GrmError
from grm.core.types import Sample, ScoreResult


def sample_to_dict(sample: Sample, used: bool, meta_score: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": sample.spec.index,
        "attempt": sample.spec.attempt,
        "seed": sample.spec.seed,
        "order": list(sample.spec.order),
        "valid": sample.valid,
        "scores": list(sample.scores) if sample.scores is not None else None,
        "used_in_vote": used,
        "principles": sample.principles,
        "critique": sample.critique,
        "text": sample.text,
        "tokens_generated": sample.tokens_generated,
        "latency_ms": round(sample.latency_ms, 1),
        "finish_reason": sample.finish_reason,
    }
    if not sample.valid:
        out["invalid_reason"] = sample.invalid_reason
    if meta_score is not None:
        out["meta_score"] = meta_score
    return out


def result_to_dict(
    result: ScoreResult, *, item_id: Any = None, details: bool = False
) -> dict[str, Any]:
    """The record of one scored item (samples only with `details`)."""
    out: dict[str, Any] = {
        "id": item_id,
        "rewards": [round(r, 4) for r in result.rewards],
        "votes": list(result.votes),
        "best": list(result.best),
        "tie": result.tie,
        "k_requested": result.k_requested,
        "k_used": result.k_used,
        "k_valid": result.k_valid,
        "invalid_samples": result.invalid_samples,
        "status": str(result.status),
        "aggregation": str(result.aggregation),
        "timings_ms": {
            "total": round(result.timings.total_ms, 1),
            "principles": round(result.timings.principles_ms, 1),
            "sampling": round(result.timings.sampling_ms, 1),
            "meta": round(result.timings.meta_ms, 1),
        },
    }
    if result.status_detail:
        out["status_detail"] = result.status_detail
    if result.model is not None:
        out["model"] = {
            "model_id": result.model.model_id,
            "revision": result.model.revision,
            "backend": result.model.backend,
            "template_version": result.model.template_version,
        }
    if details:
        metas = result.meta_scores or (None,) * len(result.samples)
        used = result.used or (False,) * len(result.samples)
        out["samples"] = [
            sample_to_dict(s, u, m) for s, u, m in zip(result.samples, used, metas, strict=True)
        ]
    return out


def error_to_dict(
    exc: BaseException, *, item_id: Any = None, line: int | None = None
) -> dict[str, Any]:
    """An error record in place of a result: never a reward."""
    code = exc.code if isinstance(exc, GrmError) else "INTERNAL"
    err: dict[str, Any] = {"code": code, "message": str(exc)}
    if isinstance(exc, GrmError) and exc.field:
        err["field"] = exc.field
    out: dict[str, Any] = {"id": item_id, "error": err}
    if line is not None:
        out["line"] = line
    return out
