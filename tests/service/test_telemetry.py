"""Telemetry across the three services: one trace per Score, /metrics, JSON logs, no export.

Real servers on loopback (tests.support.servers); only the model is scripted. The providers are the
production ones (grm.telemetry.build_providers) with an in-memory span exporter and metric
reader added, installed for the instruments like `grm serve` installs its own.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from grm import telemetry
from grm.telemetry import logs as telemetry_logs
from grm.v1 import common_pb2, reward_pb2, reward_pb2_grpc
from tests.support.servers import child_env, running_suite

RESPONSES = ["bad one", "good one"]
_STATE: dict[str, telemetry.Providers] = {}
SPANS = InMemorySpanExporter()
READER = InMemoryMetricReader()


@pytest.fixture
def providers() -> Iterator[telemetry.Providers]:
    """In-memory exporters plus the Prometheus reader (one per process: it registers globally)."""
    if "p" not in _STATE:
        _STATE["p"] = telemetry.build_providers(
            "grm-test",
            environ={},
            span_processors=[SimpleSpanProcessor(SPANS)],
            metric_readers=[READER],
            prometheus=True,
        )
    telemetry.install(_STATE["p"])
    SPANS.clear()
    yield _STATE["p"]
    SPANS.clear()


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _chain(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> list[str]:
    """Span names from `span` up to the root."""
    out = [span.name]
    while span.parent is not None and span.parent.span_id in spans:
        span = spans[span.parent.span_id]
        out.append(span.name)
    return out


async def _score(address: str, **fields: object) -> reward_pb2.ScoreResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        return await stub.Score(
            reward_pb2.ScoreRequest(query="q", responses=RESPONSES, **fields), timeout=10
        )


async def test_one_score_is_one_trace_across_aggregator_principles_and_samplers(
    providers: telemetry.Providers,
) -> None:
    async with running_suite(samplers=2) as suite:
        reply = await _score(
            suite.address,
            k=4,
            principle_mode=common_pb2.PRINCIPLE_MODE_SEPARATE,
            request_id="req-1",
        )
        assert reply.k_used == 4
    spans = SPANS.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1  # one trace, three services
    by_id = {s.context.span_id: s for s in spans}
    [root] = _by_name(spans, "grm.v1.RewardService/Score")
    assert root.kind is SpanKind.SERVER and root.parent is None
    [score] = _by_name(spans, "grm.score")
    assert score.attributes["grm.k_requested"] == 4 and score.attributes["grm.k_used"] == 4
    assert score.attributes["grm.status"] == "complete"
    assert score.attributes["grm.request_id"] == "req-1"
    # The sampler side: a server span per SampleChannel job (two samplers), children of the
    # aggregator's client span for the job (its trace context travels inside the job, not in
    # call metadata); under each, one grm.samples span for the job's samples with an event per
    # sample (no span per sample: that cost more CPU than the sample itself).
    sample_calls = _by_name(spans, "grm.v1.CritiqueService/SampleChannel")
    servers = [s for s in sample_calls if s.kind is SpanKind.SERVER]
    assert len(servers) == 2 and len(sample_calls) == 4  # + the aggregator's client spans
    for server in servers:
        assert server.parent is not None and server.parent.is_remote
        client = by_id[server.parent.span_id]
        assert client.kind is SpanKind.CLIENT and client.name == server.name
    batches = _by_name(spans, "grm.samples")
    assert len(batches) == 2
    for batch in batches:
        assert _chain(batch, by_id) == [
            "grm.samples",
            "grm.v1.CritiqueService/SampleChannel",
            "grm.v1.CritiqueService/SampleChannel",
            "grm.sampling",
            "grm.score",
            "grm.v1.RewardService/Score",
        ]
        events = [e for e in batch.events if e.name == "grm.sample"]
        assert len(events) == batch.attributes["grm.samples"]
        assert batch.attributes["grm.samples_valid"] == len(events)
    events = [e for b in batches for e in b.events if e.name == "grm.sample"]
    assert len(events) == 4 and not _by_name(spans, "grm.sample")
    seeds = [e.attributes["grm.sample.seed"] for e in events]
    assert len(set(seeds)) == 4
    assert sorted(e.attributes["grm.sample.index"] for e in events) == [0, 1, 2, 3]
    assert all(e.attributes["grm.sample.valid"] for e in events)
    assert all(e.attributes["grm.sample.tokens_generated"] > 0 for e in events)
    assert all(e.attributes["grm.sample.separate_principles"] for e in events)
    [principles] = [
        s
        for s in _by_name(spans, "grm.v1.PrincipleService/GeneratePrinciples")
        if s.kind is SpanKind.SERVER
    ]
    assert "grm.principles" in _chain(principles, by_id)
    assert _by_name(spans, "grm.vote")


async def test_an_anytime_request_is_one_job_per_sampler_in_its_trace(
    providers: telemetry.Providers,
) -> None:
    """With a latency budget each sampler gets its share of the k samples as one job on its
    SampleChannel call (not one call per sample), traced like a unary call."""
    async with running_suite(samplers=2, capacity=8) as suite:
        reply = await _score(suite.address, k=8, latency_budget_ms=5000)
        assert reply.k_used == 8
    spans = SPANS.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1
    by_id = {s.context.span_id: s for s in spans}
    streams = _by_name(spans, "grm.v1.CritiqueService/SampleChannel")
    servers = [s for s in streams if s.kind is SpanKind.SERVER]
    assert len(servers) == 2 and len(streams) == 4  # + the aggregator's client spans
    assert not _by_name(spans, "grm.v1.CritiqueService/Sample")
    assert not _by_name(spans, "grm.v1.CritiqueService/SampleStream")
    for server in servers:
        client = by_id[server.parent.span_id]
        assert client.kind is SpanKind.CLIENT and client.name == server.name
        assert server.attributes["rpc.grpc.status_code"] == 0
    batches = _by_name(spans, "grm.samples")
    assert sorted(b.attributes["grm.samples"] for b in batches) == [4, 4]
    events = [e for b in batches for e in b.events if e.name == "grm.sample"]
    assert sorted(e.attributes["grm.sample.index"] for e in events) == list(range(8))


async def test_metrics_endpoint_serves_the_documented_series(
    providers: telemetry.Providers,
) -> None:
    port = telemetry.start_metrics_server(providers, "127.0.0.1", 0)
    try:
        gc.collect()  # samplers of earlier tests leave the gauges
        async with running_suite(samplers=2, capacity=3) as suite:
            for _ in range(3):
                await _score(suite.address, k=2)
            text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    finally:
        providers.metrics_server.shutdown()
        providers.metrics_server.server_close()
        providers.metrics_server = None

    def value(prefix: str, *labels: str) -> float:
        for line in text.splitlines():
            if line.startswith(prefix + "{") and all(lb in line for lb in labels):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{prefix} {labels} not in /metrics")

    assert value("grm_score_requests_total", 'status="complete"') >= 3
    for stage in ("score", "sampling", "sample", "queue", "generate", "vote"):
        assert value("grm_stage_duration_seconds_count", f'stage="{stage}"') >= 3
    assert value("grm_k_requested_count") >= 3 and value("grm_k_used_sum") >= 6
    assert value("grm_samples_total", 'valid="true"') >= 6
    assert value("grm_sample_tokens_count") >= 6
    assert value("grm_sampler_capacity") >= 6  # two samplers of capacity 3 in this process
    assert value("grm_sampler_in_flight") == 0 and value("grm_sampler_queued") == 0
    assert value("grm_sampler_demand_ratio") == 0
    documented = _documented_metrics()
    for name in ("grm_score_requests_total", "grm_sampler_demand_ratio"):
        assert name in documented


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


def _documented_metrics() -> set[str]:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(grm_[a-z_]+)`", doc, flags=re.M))


def test_the_chart_hpa_metric_names_are_the_exported_ones() -> None:
    from pathlib import Path

    import yaml

    values = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "charts/grm/values.yaml").read_text()
    )
    documented = _documented_metrics()
    assert set(values["metrics"]["names"].values()) <= documented
    assert values["sampler"]["autoscaling"]["metric"]["name"] in documented


def test_invalid_reasons_map_to_bounded_classes() -> None:
    rc = telemetry.reason_class
    assert rc("no \\boxed{...} or [[...]] score list in output") == "no_score_list"
    assert rc("the output does not end with a Scores: \\boxed{...} line") == "no_score_list"
    assert rc("the final score line's list is not closed: '\\boxed{4'") == "unclosed_score_list"
    assert rc("truncated at max_new_tokens (finish reason length)") == "truncated"
    assert rc("expected 2 score(s), found 3: '1, 2, 3'") == "wrong_count"
    assert rc("score 11 outside [1, 10]") == "out_of_range"
    assert rc("score 'x' is not an integer") == "not_integer"
    assert rc("deadline exceeded before the sample finished") == "deadline"
    assert rc("sampler unavailable (127.0.0.1:1: UNAVAILABLE: x)") == "sampler_unavailable"
    assert rc("backend error: boom") == "backend_error"
    assert rc("something new") == "other"


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(telemetry.JsonFormatter("grm-test"))
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
        telemetry_logs.set_content_logging(False)


SECRET_Q = "the-secret-question-7f3a"
SECRET_R = "the-secret-response-91bc"


async def _score_secret(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        await stub.Score(
            reward_pb2.ScoreRequest(
                query=SECRET_Q, responses=[SECRET_R, "good one"], k=2, request_id="req-log"
            ),
            timeout=10,
        )


async def test_json_logs_carry_trace_and_request_ids_and_no_content_by_default(
    providers: telemetry.Providers, json_log: io.StringIO
) -> None:
    async with running_suite(samplers=1) as suite:
        await _score_secret(suite.address)
    text = json_log.getvalue()
    assert SECRET_Q not in text and SECRET_R not in text
    lines = [json.loads(line) for line in text.splitlines()]
    [scored] = [x for x in lines if x["message"].startswith("scored")]
    [score_span] = _by_name(SPANS.get_finished_spans(), "grm.score")
    assert scored["trace_id"] == format(score_span.context.trace_id, "032x")
    assert scored["span_id"] == format(score_span.context.span_id, "016x")
    assert scored["request_id"] == "req-log" and scored["service"] == "grm-test"
    assert scored["status"] == "complete" and scored["level"] == "INFO"


async def test_content_is_logged_only_when_switched_on(
    providers: telemetry.Providers, json_log: io.StringIO
) -> None:
    telemetry_logs.set_content_logging(True)
    async with running_suite(samplers=1) as suite:
        await _score_secret(suite.address)
    text = json_log.getvalue()
    assert SECRET_Q in text and SECRET_R in text
    assert any(json.loads(x).get("content") for x in text.splitlines())


def test_without_an_otlp_endpoint_nothing_is_exported() -> None:
    p = telemetry.build_providers("grm-sampler", environ={})
    try:
        assert p.exporting == []
        assert p.tracer_provider._active_span_processor._span_processors == ()  # type: ignore[attr-defined]
        assert not p.meter_provider._metric_readers  # type: ignore[attr-defined]
        tracer = p.tracer_provider.get_tracer("t")
        with tracer.start_as_current_span("x") as span, tracer.start_as_current_span("y") as y:
            assert span.get_span_context().is_valid  # ids for the logs, nothing sent
            assert y.get_span_context().trace_id == span.get_span_context().trace_id
            assert not span.is_recording()  # nothing would receive it: not recorded
    finally:
        p.shutdown()


def _dropped_trace() -> context.Context:
    """A trace the caller did not sample: parent-based sampling records none of it."""
    return trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=trace.TraceFlags(0))
        )
    )


def test_stages_under_an_unrecorded_span_make_no_span_but_keep_metrics_and_ids(
    providers: telemetry.Providers,
) -> None:
    tracer = providers.tracer_provider.get_tracer("t")
    dropped = _dropped_trace()
    with tracer.start_as_current_span("rpc", context=dropped) as rpc:
        assert not rpc.is_recording()
        with telemetry.stage("vote", **{"grm.k_valid": 4}) as span:
            assert span is rpc  # no child made; log lines carry the request's trace id
            assert span.get_span_context().trace_id == 0xABC
    with tracer.start_as_current_span("rpc") as rpc, telemetry.stage("vote") as span:
        assert span is not rpc and span.is_recording()  # a sampled trace gets the stage's span
    names = [s.name for s in SPANS.get_finished_spans()]
    assert names == ["grm.vote", "rpc"]
    points = [
        p
        for m in READER.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
        if m.name == "grm_stage_duration_seconds"
        for p in m.data.data_points
        if p.attributes == {"stage": "vote"}
    ]
    assert points and points[0].count >= 2  # both stages observed


def test_client_spans_under_an_unrecorded_span_carry_its_context(
    providers: telemetry.Providers,
) -> None:
    tracer = providers.tracer_provider.get_tracer("t")
    dropped = _dropped_trace()
    method = "/grm.v1.CritiqueService/SampleChannel"
    with tracer.start_as_current_span("rpc", context=dropped) as rpc:
        with telemetry.client_span(method) as (span, metadata):
            assert span is rpc  # no child made: the call carries the request's context
            [(name, value)] = metadata
            parent = rpc.get_span_context()
            assert name == "traceparent"
            assert value == f"00-{parent.trace_id:032x}-{parent.span_id:016x}-00"
    with tracer.start_as_current_span("rpc") as rpc, telemetry.client_span(method) as (span, md):
        assert span is not rpc and span.is_recording()  # a sampled trace gets its CLIENT span
        assert f"{span.get_span_context().span_id:016x}" in dict(md)["traceparent"]
    names = [s.name for s in SPANS.get_finished_spans()]
    assert names == ["grm.v1.CritiqueService/SampleChannel", "rpc"]


def test_the_otlp_endpoint_turns_export_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    p = telemetry.build_providers("grm-aggregator", environ=os.environ)
    try:
        assert p.exporting == ["otlp-traces", "otlp-metrics"]
        assert p.tracer_provider.resource.attributes["service.name"] == "grm-aggregator"  # type: ignore[attr-defined]
    finally:
        p.shutdown()


def test_setup_in_a_fresh_process_exports_nothing_without_configuration() -> None:
    env = {k: v for k, v in child_env().items() if not k.startswith("OTEL_")}
    code = (
        "from grm import telemetry\n"
        "p = telemetry.setup('grm-sampler')\n"
        "assert p.exporting == [], p.exporting\n"
        "assert telemetry.setup('grm-other') is p\n"
        "print(p.tracer_provider.resource.attributes['service.name'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "grm-sampler"


def test_the_services_take_the_telemetry_options() -> None:
    import argparse

    from grm.services.aggregator import main as agg

    parser = argparse.ArgumentParser()
    agg.add_arguments(parser)
    args = parser.parse_args(["--samplers", "a:1", "--metrics-port", "9464", "--log-content", "1"])
    s = agg.build_settings(args, {"GRM_LOG_FORMAT": "text"})
    assert s.server.metrics_port == 9464 and s.server.log_content is True
    assert s.server.log_format == "text"
    s = agg.build_settings(parser.parse_args(["--samplers", "a:1"]), {})
    assert s.server.metrics_port == 0 and s.server.log_format == "json"
    assert s.server.log_content is False


def test_grm_up_gives_each_child_its_metrics_port() -> None:
    import argparse

    from grm.cli.up import UpSettings, add_up_options, metrics_lines, telemetry_args, up_options

    parser = argparse.ArgumentParser()
    add_up_options(parser)
    s = UpSettings(**up_options(parser.parse_args([])))
    assert s.metrics_port == 9464 and s.log_format == "text"
    assert telemetry_args(s, 0) == ["--log-format", "text", "--metrics-port", "9464"]
    assert telemetry_args(s, 3)[-1] == "9467"  # sampler-1
    lines = metrics_lines(s, 2)
    assert "aggregator: http://127.0.0.1:9464/metrics" in lines
    assert "sampler-1: http://127.0.0.1:9467/metrics" in lines
    off = UpSettings(**up_options(parser.parse_args(["--metrics-port", "0"])))
    assert "--metrics-port" not in telemetry_args(off, 1) and metrics_lines(off, 2) == ""
