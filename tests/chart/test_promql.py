"""Every PromQL query the chart renders parses, and computes what values.yaml says it does.

The other chart tests compare rendered strings, so a query Prometheus rejects (a parenthesis
short, a range vector where an instant one belongs) passes them and breaks autoscaling only in
a cluster. Here a real PromQL parser (promql-parser: the Rust crate's bindings, outside this
repository) reads the prometheus-adapter rules (as the adapter expands them), the KEDA query and
the Grafana dashboard (as Grafana expands it), for the values that change each query's form:
the autoscaling mode, `deficit.enabled`, `metric.window` empty or set, the engine pools' queue
rule, renamed metrics and a custom KEDA query.
"""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser as pp
import pytest

from tests.support.helm import SCENARIOS, adapter_rules, find, kinds, load_docs, template
from tests.support.promql import (
    aggregations,
    calls,
    duration,
    expand_adapter_query,
    expand_grafana_expr,
    functions,
    grouping,
    matchers,
    metric_names,
    op,
    parse,
    ranges,
    selectors,
    strip_parens,
)

NS = "prom"  # the release and its namespace
SCRAPED = "--set=metrics.serviceMonitor.enabled=true"  # the sampler demand metric has a feed
KEDA = "--set=sampler.autoscaling.mode=keda"
GAUGES = ("grm_sampler_in_flight", "grm_sampler_queued")
CAPACITY = "grm_sampler_capacity"
# the k deficit term: the aggregators' counter and the samplers' generation-time histogram
DEFICIT = {
    "grm_k_deficit_total",
    "grm_stage_duration_seconds_sum",
    "grm_stage_duration_seconds_count",
}
# Requests the HPA makes through prometheus-adapter: (LabelMatchers, GroupBy). The first is
# docs/config.md's own example form for pods; the second groups by two labels.
ADAPTER_REQUESTS = (
    (f'pod=~"{NS}-grm-sampler-7d9f-abcde|{NS}-grm-sampler-7d9f-fghij",namespace="{NS}"', "pod"),
    (f'namespace="{NS}",pod="{NS}-grm-sampler-7d9f-abcde"', "namespace,pod"),
)
WINDOWS = ("", "1m", "1h30m")


def _render(*extra: str) -> list[dict[str, Any]]:
    return load_docs(template(NS, *extra).stdout)


def _sampler_rule(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [rule] = [r for r in adapter_rules(docs) if r["name"]["as"] == "grm_hpa_sampler_demand"]
    return rule


def _keda_queries(docs: list[dict[str, Any]]) -> list[str]:
    return [
        t["metadata"]["query"]
        for so in kinds(docs, "ScaledObject")
        for t in so["spec"]["triggers"]
        if t["type"] == "prometheus"
    ]


def _request_matchers(label_matchers: str) -> dict[str, tuple[str, str]]:
    """The adapter's LabelMatchers as `matchers` returns them, for comparing selectors."""
    return matchers(parse(f"x{{{label_matchers}}}"))


def _series_selector(query: str, name: str, namespace: str = NS) -> None:
    """A seriesQuery is what the adapter passes to /api/v1/series: one selector, no function."""
    expr = parse(query, "seriesQuery")
    assert isinstance(expr, pp.VectorSelector) and expr.name == name, query
    assert matchers(expr) == {"namespace": ("=", namespace), "pod": ("!=", "")}


def _assert_cut_term(cut: pp.Expr, release: str, window: str) -> None:
    """scalar(<the samples the k planner cut, one series> or vector(0)): never empty, one value."""
    assert isinstance(cut, pp.Call) and cut.func.name == "scalar", cut
    [arg] = cut.args
    arg = strip_parens(arg)
    assert isinstance(arg, pp.BinaryExpr) and op(arg) == "or", arg
    fallback = strip_parens(arg.rhs)
    assert isinstance(fallback, pp.Call) and fallback.func.name == "vector", fallback
    # one series in: scalar() of several series is NaN, so nothing in the term groups
    assert all(grouping(a) is None for a in aggregations(arg.lhs)), arg.lhs
    assert DEFICIT <= metric_names(arg.lhs)
    assert ranges(arg.lhs) == {duration(window)}
    for s in selectors(arg.lhs):
        m = matchers(s)
        assert m["namespace"] == ("=", release), s
        part = "aggregator" if s.name == "grm_k_deficit_total" else "sampler"
        assert m["pod"] == ("=~", f"{release}-grm-{part}-.*"), s
        if s.name.startswith("grm_stage_duration_seconds"):
            assert m["stage"] == ("=", "generate"), s


def _assert_windowed_gauges(demand: pp.Expr, window: str) -> None:
    """In-flight and queued averaged over `metric.window` when set; capacity never."""
    if window:
        assert ranges(demand) == {duration(window)}
        windowed = {s.name for c in calls(demand, "avg_over_time") for s in selectors(c.args[0])}
        assert windowed == set(GAUGES)
    else:
        assert ranges(demand) == set() and "avg_over_time" not in functions(demand)


# --- every scenario ---------------------------------------------------------------------------


def test_every_scenario_renders_promql_that_parses(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    forms: set[str] = set()
    for scenario in SCENARIOS:
        docs = rendered[scenario]
        for rule in adapter_rules(docs):
            series = rule["name"]["matches"].strip("^$")
            _series_selector(rule["seriesQuery"], series, scenario)
            for label_matchers, group_by in ADAPTER_REQUESTS:
                query = expand_adapter_query(rule["metricsQuery"], series, label_matchers, group_by)
                parse(query, f"{scenario}: adapter rule {rule['name']['as']}")
            forms.add(f"adapter {rule['name']['as']}")
        for query in _keda_queries(docs):
            parse(query, f"{scenario}: KEDA trigger")
            forms.add("keda")
    # the scenarios cover each query the chart builds (or this test checked nothing)
    assert forms == {"adapter grm_hpa_sampler_demand", "adapter grm_hpa_engine_queue", "keda"}


# --- the sampler's prometheus-adapter rule ----------------------------------------------------


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("deficit", [True, False])
def test_sampler_adapter_rule(deficit: bool, window: str) -> None:
    """Per pod: its (in-flight + queued) / capacity, plus an equal share of the cut samples."""
    docs = _render(
        SCRAPED,
        f"--set=sampler.autoscaling.deficit.enabled={str(deficit).lower()}",
        f"--set=sampler.autoscaling.metric.window={window}",
    )
    rule = _sampler_rule(docs)
    _series_selector(rule["seriesQuery"], "grm_sampler_demand_ratio")
    for label_matchers, group_by in ADAPTER_REQUESTS:
        query = expand_adapter_query(
            rule["metricsQuery"], "grm_sampler_demand_ratio", label_matchers, group_by
        )
        expr = strip_parens(parse(query, "adapter metricsQuery"))
        assert metric_names(expr) == {*GAUGES, CAPACITY} | (DEFICIT if deficit else set())
        demand = expr
        if deficit:
            assert isinstance(expr, pp.BinaryExpr) and op(expr) == "+", expr
            demand = strip_parens(expr.lhs)
            _assert_cut_term(strip_parens(expr.rhs), NS, "1m")
            pods = calls(expr.rhs, "clamp_min")[-1].args[0]
            assert metric_names(pods) == {CAPACITY}, "the cut is shared by the pool's pods"
        # (sum by (pod) (in-flight) + sum by (pod) (queued)) / clamp_min(sum by (pod) (cap), 1)
        assert isinstance(demand, pp.BinaryExpr) and op(demand) == "/", demand
        load = strip_parens(demand.lhs)
        assert isinstance(load, pp.BinaryExpr) and op(load) == "+", load
        assert {metric_names(load.lhs).pop(), metric_names(load.rhs).pop()} == set(GAUGES)
        per_pod = strip_parens(demand.rhs)
        assert isinstance(per_pod, pp.Call) and per_pod.func.name == "clamp_min", per_pod
        assert metric_names(per_pod) == {CAPACITY}
        # one series per requested pod, each read with the adapter's matchers
        group = tuple(group_by.split(","))
        assert [grouping(a) for a in aggregations(demand)] == [group] * 3
        assert {op(a) for a in aggregations(demand)} == {"sum"}
        for s in selectors(demand):
            assert matchers(s) == _request_matchers(label_matchers), s
        _assert_windowed_gauges(demand, window)


def test_engine_queue_rule(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The engine pools' HPA metric: the engine's own queue gauge summed per pod."""
    for scenario, gauge in (
        ("gke-vllm", "vllm:num_requests_waiting"),
        ("tgi-nodepools", "tgi_queue_size"),
    ):
        [rule] = [
            r
            for r in adapter_rules(rendered[scenario])
            if r["name"]["as"] == "grm_hpa_engine_queue"
        ]
        label_matchers, group_by = ADAPTER_REQUESTS[0]
        query = expand_adapter_query(rule["metricsQuery"], gauge, label_matchers, group_by)
        expr = strip_parens(parse(query, f"{scenario}: engine queue rule"))
        assert isinstance(expr, pp.AggregateExpr) and op(expr) == "sum", expr
        assert grouping(expr) == (group_by,)
        [s] = selectors(expr)
        assert s.name == gauge and matchers(s) == _request_matchers(label_matchers)


# --- the KEDA trigger ---------------------------------------------------------------------------


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("deficit", [True, False])
def test_keda_query(deficit: bool, window: str) -> None:
    """The pool's demand in pods, one series: (in-flight + queued [+ cut]) / one pod's capacity."""
    docs = _render(
        SCRAPED,
        KEDA,
        f"--set=sampler.autoscaling.deficit.enabled={str(deficit).lower()}",
        f"--set=sampler.autoscaling.metric.window={window}",
    )
    [query] = _keda_queries(docs)
    expr = strip_parens(parse(query, "KEDA query"))
    assert metric_names(expr) == {*GAUGES, CAPACITY} | (DEFICIT if deficit else set())
    assert isinstance(expr, pp.BinaryExpr) and op(expr) == "/", expr
    per_pod = strip_parens(expr.rhs)
    assert isinstance(per_pod, pp.Call) and per_pod.func.name == "clamp_min", per_pod
    [capacity] = aggregations(per_pod)
    assert op(capacity) == "avg" and metric_names(capacity) == {CAPACITY}
    load = strip_parens(expr.lhs)
    if deficit:
        assert isinstance(load, pp.BinaryExpr) and op(load) == "+", load
        _assert_cut_term(strip_parens(load.rhs), NS, "1m")
        load = strip_parens(load.lhs)
    assert isinstance(load, pp.BinaryExpr) and op(load) == "+", load
    assert metric_names(load) == set(GAUGES)
    # KEDA reads one value: nothing groups, and every sampler series is this release's pods
    assert all(grouping(a) is None for a in aggregations(expr)), f"grouped: {query}"
    for s in selectors(load) + selectors(per_pod):
        assert matchers(s) == {"namespace": ("=", NS), "pod": ("=~", f"{NS}-grm-sampler-.*")}
    _assert_windowed_gauges(load, window)


def test_a_custom_keda_query_is_rendered_as_given() -> None:
    custom = 'sum(rate(my_queue_total{job="grm"}[2m])) / 4'
    [query] = _keda_queries(
        _render(SCRAPED, KEDA, f"--set-string=sampler.autoscaling.keda.query={custom}")
    )
    assert query == custom
    assert metric_names(parse(query, "custom KEDA query")) == {"my_queue_total"}


def test_renamed_metrics_parse() -> None:
    """metrics.names accepts recording-rule names (with colons): both queries stay valid."""
    names = {
        "inFlight": "grm:sampler_in_flight",
        "queued": "grm:sampler_queued",
        "capacity": "grm:sampler_capacity",
        "kDeficit": "grm:k_deficit_total",
        "stageDuration": "grm:stage_duration_seconds",
    }
    renamed = [f"--set=metrics.names.{k}={v}" for k, v in names.items()]
    histogram = names.pop("stageDuration")
    expected = {*names.values(), f"{histogram}_sum", f"{histogram}_count"}
    rule = _sampler_rule(_render(SCRAPED, *renamed))
    label_matchers, group_by = ADAPTER_REQUESTS[0]
    query = expand_adapter_query(rule["metricsQuery"], "x", label_matchers, group_by)
    assert metric_names(parse(query, "renamed adapter rule")) == expected
    [keda] = _keda_queries(_render(SCRAPED, KEDA, *renamed))
    assert metric_names(parse(keda, "renamed KEDA query")) == expected


@pytest.mark.parametrize(
    "window", ["1m", "90s", "1h30m", "1m30s500ms", "0s", "00m", "30s1m", "1m1m"]
)
@pytest.mark.parametrize("key", ["metric.window", "deficit.window"])
def test_the_chart_refuses_a_window_promql_rejects(key: str, window: str) -> None:
    """The schema's pattern lets through ranges Prometheus rejects (0s, units out of order);
    the chart must refuse those at install rather than render a query that never parses.
    (The schema allows fewer units than PromQL, no `d` or `w`: these windows are within both.)"""
    try:
        pp.parse(f"rate(x[{window}])")
        valid = True
    except ValueError:
        valid = False
    result = template(NS, SCRAPED, KEDA, f"--set=sampler.autoscaling.{key}={window}", check=False)
    assert (result.returncode == 0) == valid, result.stderr
    if valid:
        [query] = _keda_queries(load_docs(result.stdout))
        assert duration(window) in ranges(parse(query, f"KEDA query, {key}={window}"))
    else:
        assert f"sampler.autoscaling.{key}" in result.stderr


# --- the Grafana dashboard ----------------------------------------------------------------------


def test_dashboard_queries_parse() -> None:
    """Each panel's `expr` (after Grafana's variables) and the namespace variable's selector."""
    docs = _render("--set=metrics.grafanaDashboard.enabled=true")
    board = json.loads(find(docs, "ConfigMap", "dashboard")["data"]["grm.json"])
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", []) if "expr" in t]
    assert exprs, "the dashboard has no queries"
    for raw in exprs:
        expr = parse(expand_grafana_expr(raw), f"dashboard expr {raw!r}")
        # every panel follows the namespace picker
        for s in selectors(expr):
            assert matchers(s)["namespace"] == ("=~", "(grm|grm-canary)"), raw
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        # Grafana's label_values(<series selector>, <label>) is not PromQL; its selector is
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert m, f"unexpected variable query {query!r}"
        assert isinstance(parse(m.group(1), f"variable {var['name']}"), pp.VectorSelector)
