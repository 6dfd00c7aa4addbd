"""OpenTelemetry for the three services: traces over gRPC, `grm_*` metrics, JSON logs.

Nothing here exports anything unless asked: OTLP only with `OTEL_EXPORTER_OTLP_ENDPOINT`,
Prometheus only with a metrics port. docs/metrics.md lists every metric.

May import core only (and OpenTelemetry, Prometheus, gRPC for the trace interceptors).
"""

from typing import Any

from grm.telemetry.hooks import SampleBatch, backend_error, sample_batch, sample_done, score_request
from grm.telemetry.instruments import (
    metrics,
    reason_class,
    record_duration,
    stage,
    tracer,
    watch_cache,
    watch_pool,
    watch_sampler,
)
from grm.telemetry.logs import (
    JsonFormatter,
    configure_logging,
    content_logging,
    log_content,
    request_scope,
)
from grm.telemetry.setup import (
    SERVICE_NAMES,
    Providers,
    build_providers,
    current,
    install,
    setup,
    start_metrics_server,
)


def __getattr__(name: str) -> Any:
    """The gRPC interceptors load grpc: only on use (grm.cache must import without grpc)."""
    if name in (
        "ClientTraceInterceptor",
        "ServerTraceInterceptor",
        "carried_span",
        "client_span",
        "end_client_span",
    ):
        from grm.telemetry import grpc_trace

        value = getattr(grpc_trace, name)
        globals()[name] = value  # found once: later uses skip this hook (hot paths use them)
        return value
    raise AttributeError(name)


__all__ = [
    "SERVICE_NAMES",
    "ClientTraceInterceptor",
    "JsonFormatter",
    "Providers",
    "SampleBatch",
    "ServerTraceInterceptor",
    "backend_error",
    "build_providers",
    "carried_span",
    "client_span",
    "configure_logging",
    "content_logging",
    "current",
    "end_client_span",
    "install",
    "log_content",
    "metrics",
    "reason_class",
    "record_duration",
    "request_scope",
    "sample_batch",
    "sample_done",
    "score_request",
    "setup",
    "stage",
    "start_metrics_server",
    "tracer",
    "watch_cache",
    "watch_pool",
    "watch_sampler",
]
