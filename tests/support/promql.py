"""PromQL the chart renders, parsed by a real parser (promql-parser, the Rust crate's bindings).

The chart tests compare rendered strings; these helpers turn a query into an AST so a test can
tell that Prometheus would accept it and what it computes: the metrics it reads, its matchers,
its ranges and groupings. Queries that are templates for another program (prometheus-adapter's
`<<.LabelMatchers>>`, Grafana's `$__rate_interval`) are expanded first, as that program would.
"""

from __future__ import annotations

import re
from datetime import timedelta

import promql_parser as pp
import pytest

# --- parsing ------------------------------------------------------------------------------


def parse(query: str, where: str = "") -> pp.Expr:
    """The query's AST; a parse error fails the test with the query and where it came from."""
    try:
        return pp.parse(query)
    except ValueError as e:
        pytest.fail(f"PromQL {where} does not parse ({e}):\n{query}")


def walk(expr: pp.Expr) -> list[pp.Expr]:
    """Every node of the AST, parents before children."""
    nodes: list[pp.Expr] = []
    pp.walk(expr, pre_visit=nodes.append)
    return nodes


def strip_parens(expr: pp.Expr) -> pp.Expr:
    """The expression inside any parentheses: they group, they compute nothing."""
    while isinstance(expr, pp.ParenExpr):
        expr = expr.expr
    return expr


def op(expr: pp.Expr) -> str:
    """The operator of a binary or aggregate expression ('+', 'or', 'sum'), as written."""
    return str(expr.op)


def selectors(expr: pp.Expr) -> list[pp.VectorSelector]:
    """Every vector selector, those inside range selectors included (walk visits them)."""
    return [n for n in walk(expr) if isinstance(n, pp.VectorSelector)]


def metric_names(expr: pp.Expr) -> set[str]:
    """The metrics the query reads (what Prometheus must scrape for it to have a value)."""
    return {s.name for s in selectors(expr)}


def matchers(selector: pp.VectorSelector) -> dict[str, tuple[str, str]]:
    """label -> (operator, value); the operator as PromQL writes it ('=', '=~', ...)."""
    ops = {
        "MatchOp.Equal": "=",
        "MatchOp.NotEqual": "!=",
        "MatchOp.Re": "=~",
        "MatchOp.NotRe": "!~",
    }
    return {m.name: (ops[str(m.op)], m.value) for m in selector.matchers.matchers}


def functions(expr: pp.Expr) -> set[str]:
    """The names of the functions the query calls."""
    return {n.func.name for n in walk(expr) if isinstance(n, pp.Call)}


def ranges(expr: pp.Expr) -> set[timedelta]:
    """The ranges of every range selector ([1m] -> 60 s)."""
    return {n.range for n in walk(expr) if isinstance(n, pp.MatrixSelector)}


def duration(text: str) -> timedelta:
    """A PromQL duration (1m30s) as the parser reads it, to compare with `ranges`."""
    return pp.parse_duration(text)


def grouping(expr: pp.AggregateExpr) -> tuple[str, ...] | None:
    """`by` labels of an aggregation; None without a `by` clause (one series out)."""
    modifier = expr.modifier
    if modifier is None:
        return None
    assert modifier.type == pp.AggModifierType.By, f"unexpected {modifier} in {expr}"
    return tuple(modifier.labels)


def aggregations(expr: pp.Expr) -> list[pp.AggregateExpr]:
    """Every aggregation (sum, avg, ...), outermost first."""
    return [n for n in walk(expr) if isinstance(n, pp.AggregateExpr)]


def calls(expr: pp.Expr, name: str) -> list[pp.Call]:
    """Every call of the function `name`, outermost first."""
    return [n for n in walk(expr) if isinstance(n, pp.Call) and n.func.name == name]


# --- the programs that expand the chart's query templates -----------------------------------

# prometheus-adapter's metricsQuery is a Go template with `<<` `>>` delimiters. Its
# docs/config.md ("Querying") defines the fields: `Series` is the metric name, `LabelMatchers`
# "a comma-separated list of label matchers matching the given objects" (the resource's label,
# plus `namespace` for a namespaced resource: e.g. `pod=~"pod1|pod2",namespace="somens"`), and
# `GroupBy` "a comma-separated list of labels to group by" (the resource's label: `pod`).
ADAPTER_FIELD = re.compile(r"<<\s*\.(\w+)\s*>>")


def expand_adapter_query(template: str, series: str, label_matchers: str, group_by: str) -> str:
    """A metricsQuery as prometheus-adapter sends it to Prometheus for one request."""
    fields = {"Series": series, "LabelMatchers": label_matchers, "GroupBy": group_by}

    def field(m: re.Match[str]) -> str:
        assert m.group(1) in fields, f"prometheus-adapter has no field .{m.group(1)}: {template}"
        return fields[m.group(1)]

    return ADAPTER_FIELD.sub(field, template)


# Grafana substitutes its variables before the query reaches Prometheus: a multi-value
# variable with "All" becomes a regex alternation, $__rate_interval a duration.
GRAFANA_VARIABLES = {
    "namespace": "(grm|grm-canary)",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "6h",
}
GRAFANA_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def expand_grafana_expr(expr: str) -> str:
    """A dashboard's `expr` with Grafana's variables replaced by plausible values."""

    def variable(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in GRAFANA_VARIABLES, f"no sample value for Grafana's ${name}: {expr}"
        return GRAFANA_VARIABLES[name]

    return GRAFANA_VARIABLE.sub(variable, expr)
