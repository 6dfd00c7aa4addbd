"""The `grm_*` metrics and the span helpers the services call (docs/metrics.md lists them).

Instruments are rebuilt whenever providers are installed, so callers always go through
`metrics()` / `tracer()` rather than keeping instruments of their own.
"""

from __future__ import annotations

import contextlib
import re
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, Status, StatusCode

from grm.telemetry import setup as _setup

SCOPE = "grm"
SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
K_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128]
TOKEN_BUCKETS = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]

# Live objects the observable gauges read (weak: a test's sampler may go away).
_samplers: weakref.WeakSet[Any] = weakref.WeakSet()
_caches: weakref.WeakSet[Any] = weakref.WeakSet()
_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_CACHE_KINDS = ("principles", "sample", "result")


def watch_sampler(sampler: Any) -> None:
    """Export a CritiqueSampler's in_flight / queued / capacity (summed per process)."""
    _samplers.add(sampler)


def watch_pool(pool: Any) -> None:
    """Export a sampler pool's `ready_count` and `mismatched_count` (the aggregator's view)."""
    _pools.add(pool)


def _pool_gauge(attr: str) -> Any:
    def observe(_: CallbackOptions) -> Iterable[Observation]:
        pools = list(_pools)
        if not pools:
            return []
        return [Observation(sum(getattr(p, attr) for p in pools))]

    return observe


def watch_cache(cache: Any) -> None:
    """Export a GrmCache's hit/miss counters (its `stats`, summed per process)."""
    _caches.add(cache)


def _load() -> tuple[int, int, int]:
    items = list(_samplers)
    return (
        sum(s.in_flight for s in items),
        sum(s.queued for s in items),
        sum(s.capacity for s in items),
    )


def _gauge(index: int) -> Any:
    def observe(_: CallbackOptions) -> Iterable[Observation]:
        if not _samplers:
            return []
        return [Observation(_load()[index])]

    return observe


def _demand(_: CallbackOptions) -> Iterable[Observation]:
    if not _samplers:
        return []
    in_flight, queued, capacity = _load()
    return [Observation((in_flight + queued) / max(capacity, 1))]


def _cache_counter(attr: str) -> Any:
    def observe(_: CallbackOptions) -> Iterable[Observation]:
        caches = list(_caches)
        if not caches:
            return []
        return [
            Observation(sum(getattr(c.stats[kind], attr) for c in caches), {"kind": kind})
            for kind in _CACHE_KINDS
        ]

    return observe


class Metrics:
    """Every grm_ instrument, on one meter provider."""

    def __init__(self, provider: Any) -> None:
        m = provider.get_meter(SCOPE)
        self.stage_duration = m.create_histogram(
            "grm_stage_duration_seconds",
            unit="s",
            description="Latency per stage (score, principles, sampling, sample, queue, "
            "generate, meta_rm, vote, cache)",
            explicit_bucket_boundaries_advisory=SECONDS,
        )
        self.score_requests = m.create_counter(
            "grm_score_requests_total", description="Scored items by final status"
        )
        self.k_requested = m.create_histogram(
            "grm_k_requested",
            description="k asked for per scored item",
            explicit_bucket_boundaries_advisory=K_BUCKETS,
        )
        self.k_planned = m.create_histogram(
            "grm_k_planned",
            description="k the planner granted per scored item",
            explicit_bucket_boundaries_advisory=K_BUCKETS,
        )
        self.k_used = m.create_histogram(
            "grm_k_used",
            description="Samples that voted per scored item",
            explicit_bucket_boundaries_advisory=K_BUCKETS,
        )
        self.budget_misses = m.create_counter(
            "grm_budget_misses_total",
            description="Scored items that took longer than their latency_budget_ms",
        )
        self.k_deficit = m.create_counter(
            "grm_k_deficit_total",
            description="Samples the k planner cut from requests to fit their latency budget "
            "(k requested - k planned); grows when the sampler pool is too small",
        )
        self.samples = m.create_counter(
            "grm_samples_total", description="Samples drawn by a sampler, by validity"
        )
        self.invalid_samples = m.create_counter(
            "grm_invalid_samples_total", description="Invalid samples by reason class"
        )
        self.tokens = m.create_histogram(
            "grm_sample_tokens",
            description="Tokens generated per sample",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.backend_errors = m.create_counter(
            "grm_backend_errors_total", description="Generation backend errors by kind"
        )
        m.create_observable_gauge(
            "grm_sampler_in_flight", [_gauge(0)], description="Samples being generated now"
        )
        m.create_observable_gauge(
            "grm_sampler_queued", [_gauge(1)], description="Samples waiting for a slot"
        )
        m.create_observable_gauge(
            "grm_sampler_capacity", [_gauge(2)], description="Samples generated at once"
        )
        m.create_observable_gauge(
            "grm_sampler_demand_ratio",
            [_demand],
            description="(in_flight + queued) / capacity: the sampler HPA's input",
        )
        m.create_observable_gauge(
            "grm_samplers_ready",
            [_pool_gauge("ready_count")],
            description="Samplers that answer health and serve the pool's model (aggregator)",
        )
        m.create_observable_gauge(
            "grm_samplers_model_mismatch",
            [_pool_gauge("mismatched_count")],
            description="Samplers serving another model than the pool's; never mixed in a vote",
        )
        m.create_observable_counter(
            "grm_cache_hits", [_cache_counter("hits")], description="Cache hits by kind"
        )
        m.create_observable_counter(
            "grm_cache_misses", [_cache_counter("misses")], description="Cache misses by kind"
        )


_metrics: dict[str, Metrics | None] = {"m": None}


def _rebuild(providers: _setup.Providers) -> None:
    _metrics["m"] = Metrics(providers.meter_provider)


_setup.on_install(_rebuild)


def metrics() -> Metrics:
    m = _metrics["m"]
    if m is None:
        m = _metrics["m"] = Metrics(_setup.current().meter_provider)
    return m


_tracer: dict[str, Any] = {"provider": None, "tracer": None}


def tracer() -> trace.Tracer:
    """The suite's tracer, made once per provider: the SDK builds a new Tracer (and its
    instrumentation scope) on every get_tracer call, which cost ~10 µs on each span."""
    provider = _setup.current().tracer_provider
    if _tracer["provider"] is not provider:
        _tracer["tracer"] = provider.get_tracer(SCOPE)
        _tracer["provider"] = provider
    return _tracer["tracer"]  # type: ignore[no-any-return]


def unrecorded_parent() -> Span | None:
    """The current span when a child of it would not be recorded either, else None.

    Under a span that is not being recorded (tracing off: no exporter, or a trace the sampler
    dropped) a child would not be recorded: the SDK's samplers decide a child as its parent
    (parent-based) or by the trace id they share (always on/off, trace-id ratio). Making it
    anyway costs ~5–10 µs, several times per Score call; the parent's trace id is what the
    log lines (and the next service) carry either way."""
    parent = trace.get_current_span()
    if parent is not trace.INVALID_SPAN and not parent.is_recording():
        return parent
    return None


@contextlib.contextmanager
def stage(name: str, **attributes: Any) -> Iterator[Span]:
    """A span `grm.<name>` and a `grm_stage_duration_seconds{stage=name}` observation; under
    a span that is not being recorded, that span stands for it (`unrecorded_parent`)."""
    started = time.perf_counter()
    parent = unrecorded_parent()
    try:
        if parent is not None:
            yield parent
        else:
            attrs = _clean(attributes)
            with tracer().start_as_current_span(f"grm.{name}", attributes=attrs) as span:
                yield span
    finally:
        metrics().stage_duration.record(time.perf_counter() - started, {"stage": name})


def record_duration(name: str, seconds: float) -> None:
    metrics().stage_duration.record(seconds, {"stage": name})


def set_error(span: Span, exc: BaseException) -> None:
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


_REASONS = (
    ("deadline", "deadline"),
    ("sampler unavailable", "sampler_unavailable"),
    ("sampler error", "sampler_error"),
    ("sampler serves another model", "model_mismatch"),
    ("sampler returned no sample", "sampler_error"),
    ("backend error", "backend_error"),
    ("no \\boxed", "no_score_list"),
    ("does not end with a scores", "no_score_list"),
    ("holds no", "no_score_list"),
    ("not closed", "unclosed_score_list"),
    ("truncated", "truncated"),
    ("empty score list", "no_score_list"),
    ("not an integer", "not_integer"),
)


def reason_class(reason: str) -> str:
    """A bounded label for an invalid sample's free-text reason."""
    low = reason.lower()
    for needle, label in _REASONS:
        if needle in low:
            return label
    if re.search(r"expected \d+|scores? for \d+|\d+ scores?", low):
        return "wrong_count"
    if "range" in low or "[1, 10]" in low or "out of" in low:
        return "out_of_range"
    return "other"
