"""Tracer and meter providers from the standard `OTEL_*` variables, and the scrape endpoint.

- `OTEL_EXPORTER_OTLP_ENDPOINT` (or the `_TRACES_` / `_METRICS_` variants) turns OTLP export
  on; without it nothing leaves the process (no exporter, no network), and spans are not
  recorded at all: only their trace and span ids are made (propagated to the next service
  and written on log lines).
- `OTEL_SERVICE_NAME` overrides the per-service name (`grm-aggregator`, `grm-principles`,
  `grm-sampler`); `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` etc. work as in any SDK.
- A Prometheus `/metrics` endpoint (prometheus_client's HTTP server) on `metrics_port`
  (0 = off), bound to the service's host.

The instruments read providers from `current()`: `setup()` installs the process's providers
once (and also makes them the global OTel providers); tests `install()` in-memory ones.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

log = logging.getLogger(__name__)

SERVICE_NAMES = {
    "grm.v1.RewardService": "grm-aggregator",
    "grm.v1.PrincipleService": "grm-principles",
    "grm.v1.CritiqueService": "grm-sampler",
}


@dataclass
class Providers:
    """What the instruments use: a tracer provider, a meter provider and what they export."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    exporting: list[str] = field(default_factory=list)  # e.g. ["otlp-traces", "prometheus"]
    metrics_server: Any = None  # prometheus_client's WSGI server when serving /metrics
    metrics_port: int | None = None

    def shutdown(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
            self.metrics_server = None
        for p in (self.tracer_provider, self.meter_provider):
            shutdown = getattr(p, "shutdown", None)
            if shutdown is not None:
                shutdown()


_lock = threading.Lock()
_state: dict[str, Providers | None] = {"providers": None}
_listeners: list[Any] = []  # callbacks run on install (the instruments rebuild themselves)


def current() -> Providers:
    """The installed providers, or the global (no-op unless someone set them) ones."""
    p = _state["providers"]
    if p is None:
        return Providers(trace.get_tracer_provider(), metrics.get_meter_provider())
    return p


def installed() -> bool:
    return _state["providers"] is not None


def on_install(callback: Any) -> None:
    _listeners.append(callback)


def install(providers: Providers) -> Providers:
    """Make `providers` the ones every instrument uses from now on (tests call this)."""
    with _lock:
        _state["providers"] = providers
    for callback in _listeners:
        callback(providers)
    return providers


def _has(environ: Mapping[str, str], *names: str) -> bool:
    return any(environ.get(n, "").strip() for n in names)


def _otlp_exporters(environ: Mapping[str, str]) -> tuple[Any, Any]:
    """(span exporter, metric exporter) for the configured OTLP protocol; None = not set."""
    traces = _has(environ, "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    mets = _has(environ, "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if environ.get("OTEL_TRACES_EXPORTER", "").strip() == "none":
        traces = False
    if environ.get("OTEL_METRICS_EXPORTER", "").strip() == "none":
        mets = False
    if not (traces or mets):
        return None, None
    protocol = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip() or "grpc"
    if protocol != "grpc":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; using grpc", protocol)
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return (OTLPSpanExporter() if traces else None), (OTLPMetricExporter() if mets else None)


def build_providers(
    service_name: str,
    *,
    environ: Mapping[str, str] | None = None,
    span_processors: list[SpanProcessor] | None = None,
    metric_readers: list[MetricReader] | None = None,
    prometheus: bool = False,
) -> Providers:
    """SDK providers for one service; OTLP exporters only when the environment asks."""
    env = os.environ if environ is None else environ
    attrs = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    resource = Resource.create(attrs)
    exporting: list[str] = []
    span_exporter, metric_exporter = _otlp_exporters(env)
    if span_exporter is None and not span_processors:
        # Nothing would receive a span: make only their ids (trace context still propagates
        # and log lines still carry trace_id), never record them (a recorded span with its
        # attributes cost ~20 µs, several per request, for nothing).
        tp = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    else:
        tp = TracerProvider(resource=resource)
    for proc in span_processors or []:
        tp.add_span_processor(proc)
    if span_exporter is not None:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tp.add_span_processor(BatchSpanProcessor(span_exporter))
        exporting.append("otlp-traces")
    readers = list(metric_readers or [])
    if metric_exporter is not None:
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(metric_exporter))
        exporting.append("otlp-metrics")
    if prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
        exporting.append("prometheus")
    mp = MeterProvider(resource=resource, metric_readers=readers)
    return Providers(tp, mp, exporting)


def start_metrics_server(providers: Providers, host: str, port: int) -> int:
    """Serve prometheus_client's default registry on host:port; returns the bound port."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host)
    providers.metrics_server = server
    providers.metrics_port = server.server_address[1]
    return providers.metrics_port


def setup(
    service_name: str,
    *,
    host: str = "127.0.0.1",
    metrics_port: int = 0,
    environ: Mapping[str, str] | None = None,
) -> Providers:
    """Once per process (a second call returns the installed providers unchanged)."""
    existing = _state["providers"]
    if existing is not None:
        return existing
    providers = build_providers(service_name, environ=environ, prometheus=metrics_port > 0)
    if metrics_port > 0:
        bound = start_metrics_server(providers, host, metrics_port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
    # Also the global providers, for any library instrumented with the plain OTel API.
    trace.set_tracer_provider(providers.tracer_provider)
    metrics.set_meter_provider(providers.meter_provider)
    if providers.exporting:
        log.info("telemetry export: %s", ", ".join(providers.exporting))
    return install(providers)
