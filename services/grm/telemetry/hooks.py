"""The calls the services make at their stages (one line each where they are hooked)."""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span

from grm.telemetry.instruments import metrics, reason_class, set_error, stage
from grm.telemetry.logs import log_content, request_scope

log = logging.getLogger("grm.telemetry")


class ScoreRecord:
    """Handed to the scorer inside `score_request`: `done(result)` records the outcome."""

    def __init__(self, span: Span, item: Any) -> None:
        self.span = span
        self.item = item
        self.result: Any = None

    def done(self, result: Any, cache: Any = None) -> Any:
        """Record the result (and the request's grm.cache.CacheUsage); returns the result."""
        self.result = result
        if cache is not None:
            self.span.set_attribute("grm.cache.result_hit", cache.result_hit)
            self.span.set_attribute("grm.cache.samples_reused", cache.samples_reused)
            self.span.set_attribute("grm.cache.samples_generated", cache.samples_generated)
            self.span.set_attribute("grm.cache.principles_reused", cache.principles_reused)
        return result


@contextlib.contextmanager
def score_request(item: Any) -> Iterator[ScoreRecord]:
    """One scored item: span `grm.score`, request metrics, the request id on log lines."""
    started = time.perf_counter()
    m = metrics()
    with (
        request_scope(item.request_id),
        stage(
            "score",
            **{
                "grm.request_id": item.request_id or None,
                "grm.k_requested": item.k,
                "grm.k_meta": item.k_meta or 0,
                "grm.aggregation": str(item.aggregation),
                "grm.responses": len(item.responses),
                "grm.latency_budget_ms": item.latency_budget_ms or None,
            },
        ) as span,
    ):
        record = ScoreRecord(span, item)
        log_content(log, "query", item.context)
        log_content(log, "responses", item.responses)
        status = "error"
        try:
            yield record
            r = record.result
            if r is not None:
                status = str(r.status)
                span.set_attribute("grm.k_used", r.k_used)
                span.set_attribute("grm.k_valid", r.k_valid)
                span.set_attribute("grm.k_planned", r.k_planned)
                span.set_attribute("grm.invalid_samples", r.invalid_samples)
                m.k_used.record(r.k_used)
                m.k_planned.record(r.k_planned)
        except BaseException as exc:
            status = getattr(exc, "code", None) or type(exc).__name__
            set_error(span, exc)
            raise
        finally:
            elapsed = time.perf_counter() - started
            span.set_attribute("grm.status", status)
            m.score_requests.add(1, {"status": status})
            m.k_requested.record(item.k)
            missed = bool(item.latency_budget_ms) and elapsed * 1000 > item.latency_budget_ms
            if missed:
                m.budget_misses.add(1)
            log.info(
                "scored k=%d status=%s in %.0f ms",
                item.k,
                status,
                elapsed * 1000,
                extra={"k_requested": item.k, "status": status, "duration_ms": elapsed * 1000},
            )


class SampleBatch:
    """The samples of one sampler call: one span for the call, an event per sample on it,
    and the sample counters added once when the call ends (not per sample)."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.valid = 0
        self.invalid: collections.Counter[str] = collections.Counter()

    def flush(self) -> None:
        m = metrics()
        if self.valid:
            m.samples.add(self.valid, {"valid": "true"})
        invalid = sum(self.invalid.values())
        if invalid:
            m.samples.add(invalid, {"valid": "false"})
            for kind, count in self.invalid.items():
                m.invalid_samples.add(count, {"reason": kind})
        self.span.set_attribute("grm.samples_valid", self.valid)
        self.span.set_attribute("grm.samples_invalid", invalid)
        self.valid = 0
        self.invalid.clear()


_batch: contextvars.ContextVar[SampleBatch | None] = contextvars.ContextVar(
    "grm_sample_batch", default=None
)


@contextlib.contextmanager
def sample_batch(n: int) -> Iterator[SampleBatch]:
    """Span `grm.samples` around one call's `n` samples (each sample an event on it)."""
    with stage("samples", **{"grm.samples": n}) as span:
        batch = SampleBatch(span)
        token = _batch.set(batch)
        try:
            yield batch
        finally:
            _batch.reset(token)
            batch.flush()


def sample_done(sample: Any, *, queued_s: float, generate_s: float | None) -> None:
    """A finished sample: an event on the call's span (valid or its invalid reason), its
    queue and generation time and tokens, and the sample counters (in bulk within a batch).

    Outside a batch (in-process scoring) the event goes on the current span and the
    counters are added at once.
    """
    m = metrics()
    kind = "" if sample.valid else reason_class(sample.invalid_reason)
    batch = _batch.get()
    span = batch.span if batch is not None else trace.get_current_span()
    if span.is_recording():  # the event's attributes only for a span that keeps them
        span.add_event("grm.sample", _sample_event(sample, kind))
    duration = m.stage_duration
    duration.record(queued_s, {"stage": "queue"})
    if generate_s is not None:
        duration.record(generate_s, {"stage": "generate"})
        duration.record(queued_s + generate_s, {"stage": "sample"})
    if sample.tokens_generated:
        m.tokens.record(sample.tokens_generated)
    if batch is not None:
        if kind:
            batch.invalid[kind] += 1
        else:
            batch.valid += 1
    elif kind:
        m.samples.add(1, {"valid": "false"})
        m.invalid_samples.add(1, {"reason": kind})
    else:
        m.samples.add(1, {"valid": "true"})
    log_content(log, "generation", sample.text)


def _sample_event(sample: Any, kind: str) -> dict[str, Any]:
    spec = sample.spec
    attributes: dict[str, Any] = {
        "grm.sample.index": spec.index,
        "grm.sample.attempt": spec.attempt,
        "grm.sample.seed": spec.seed,
        "grm.sample.valid": sample.valid,
        "grm.sample.tokens_generated": sample.tokens_generated,
        "grm.sample.finish_reason": sample.finish_reason or "",
    }
    if kind:
        attributes["grm.sample.invalid_reason"] = sample.invalid_reason[:200]
        attributes["grm.sample.invalid_class"] = kind
    if spec.principles:
        attributes["grm.sample.separate_principles"] = True
    return attributes


def backend_error(span: Span | None, error: BaseException) -> None:
    kind = type(error).__name__
    metrics().backend_errors.add(1, {"kind": kind})
    if span is not None:
        set_error(span, error)
        span.set_attribute("grm.backend.error", kind)
