"""The chart's Grafana dashboard: values-gated, valid JSON, on the metrics the services export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.support.helm import CHART, load_docs, template

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def _documented() -> set[str]:
    return set(re.findall(r"^\| `(grm_[a-z_]+)`", DOCS.read_text(), flags=re.M))


def _dashboards(*extra: str) -> list[dict]:
    docs = load_docs(template("dash", *extra).stdout)
    return [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("dashboard")
    ]


def test_the_dashboard_is_off_by_default_and_rendered_when_enabled() -> None:
    assert _dashboards() == []
    [cm] = _dashboards(
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "metrics.grafanaDashboard.namespace=monitoring",
    )
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(cm["data"]["grm.json"])
    assert board == json.loads((CHART / "dashboards" / "grm.json").read_text())


def test_every_dashboard_query_uses_documented_metrics() -> None:
    board = json.loads((CHART / "dashboards" / "grm.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for e in exprs
        for name in re.findall(r"\b(grm_[a-z_]+)", e)
    }
    assert used and used <= _documented(), used - _documented()
    assert "grm_sampler_demand_ratio" in used and "grm_stage_duration_seconds" in used
