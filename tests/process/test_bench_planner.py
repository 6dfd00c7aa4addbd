"""The HPA model (grm_dev.bench.hpa) and smoke runs of `grm bench autoscale|planner`.

The HPA cases follow the Kubernetes docs' worked examples; the smoke runs use tiny settings
and assert only that the JSON and PNG are written and sane (no timing).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from grm.core.planner import plan_k
from grm_dev.bench.__main__ import main
from grm_dev.bench.hpa import (
    CHART_AUTOSCALING,
    Hpa,
    HpaSpec,
    Policy,
    Rules,
    metric_replicas,
    parse_quantity,
)

CHART = Path(__file__).resolve().parents[2] / "charts" / "grm" / "values.yaml"


def _spec(**kw: object) -> HpaSpec:
    base: dict[str, object] = {
        "min_replicas": 1,
        "max_replicas": 100,
        "target": 0.1,
        "scale_up": Rules(0, "Max", (Policy("Percent", 1000, 15),)),
        "scale_down": Rules(0, "Max", (Policy("Percent", 100, 15),)),
    }
    return HpaSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_replica_calculator_docs_examples() -> None:
    # 200m current vs 100m target: double; 50m: halve; within 10 %: no change.
    assert metric_replicas(1, [0.2], 0, 0.1) == 2
    assert metric_replicas(4, [0.05] * 4, 0, 0.1) == 2
    assert metric_replicas(4, [0.105] * 4, 0, 0.1) == 4
    assert metric_replicas(4, [0.111] * 4, 0, 0.1) == 5
    assert parse_quantity("800m") == 0.8 and parse_quantity("2") == 2.0


def test_missing_pods_count_as_zero_up_and_target_down() -> None:
    # 2 ready at 2x target + 2 starting (no metric): scale-up sees 4 pods at 1x -> no change.
    assert metric_replicas(4, [1.6, 1.6], 2, 0.8) == 4
    # 2 ready at 3x target + 2 starting: (2.4 * 2) / 4 / 0.8 = 1.5 -> 6.
    assert metric_replicas(4, [2.4, 2.4], 2, 0.8) == 6
    # scale-down with missing pods counted at the target: 2 idle + 2 missing -> 2.
    assert metric_replicas(4, [0.0, 0.0], 2, 0.8) == 2


def test_scale_down_stabilization_takes_the_window_maximum() -> None:
    hpa = Hpa(_spec(scale_down=Rules(300, "Max", (Policy("Percent", 100, 15),))))
    assert hpa.sync(0, 5, [0.1] * 5) == 5  # recommendation 5
    assert hpa.sync(15, 5, [0.06] * 5) == 5  # recommends 3, window max is 5
    assert hpa.sync(30, 5, [0.04] * 5) == 5  # recommends 2
    assert hpa.sync(301, 5, [0.04] * 5) == 3  # the 5 left the window; 3 (t=15) remains
    assert hpa.sync(316, 3, [0.04 * 5 / 3] * 3) == 2


def test_policies_limit_the_rate() -> None:
    # Docs: Percent 10 per 60 s, scaling 80 -> 10: 8 pods removed, then (72 -> 64) 8 more.
    hpa = Hpa(
        _spec(
            max_replicas=100,
            scale_down=Rules(0, "Max", (Policy("Percent", 10, 60),)),
        )
    )
    assert hpa.sync(0, 80, [0.0125] * 80) == 72
    assert hpa.sync(15, 72, [0.0125] * 72) == 72  # same period: nothing more
    assert hpa.sync(61, 72, [0.0125] * 72) == 64
    # Scale-up, Max of (100 % , 4 pods) per 30 s: 1 -> 5 (4 pods beat doubling).
    up = Rules(0, "Max", (Policy("Percent", 100, 30), Policy("Pods", 4, 30)))
    assert Hpa(_spec(scale_up=up)).sync(0, 1, [1.0]) == 5
    # Min picks the smaller change: 1 -> 2; Disabled: no change; max_replicas bounds.
    up_min = Rules(0, "Min", up.policies)
    assert Hpa(_spec(scale_up=up_min)).sync(0, 1, [1.0]) == 2
    assert Hpa(_spec(scale_up=Rules(0, "Disabled"))).sync(0, 1, [1.0]) == 1
    assert Hpa(_spec(scale_up=up, max_replicas=3)).sync(0, 1, [1.0]) == 3


def test_chart_defaults_match_values_yaml() -> None:
    values = yaml.safe_load(CHART.read_text())["sampler"]["autoscaling"]
    for key in ("minReplicas", "maxReplicas", "behavior"):
        assert values[key] == CHART_AUTOSCALING[key]
    assert values["metric"] == CHART_AUTOSCALING["metric"]
    spec = HpaSpec.from_values(values)
    assert spec.target == 0.8 and spec.scale_down.stabilization_s == 600


def test_plan_k_counts_work_queued_ahead() -> None:
    # 8 slots, 200 ms, 5 s budget (250 ms margin): 23 waves. A backlog of 16 leaves 168.
    assert plan_k(32, 5000, 200, 8 - 24, capacity=8, margin_ms=250) == 32
    # 500 ms (2 waves of 8 = 16 samples): 12 busy ahead leave 4; 20 busy leave none -> k_min.
    assert plan_k(32, 500, 200, 8 - 12, capacity=8, margin_ms=50) == 4
    assert plan_k(32, 500, 200, 8 - 20, capacity=8, margin_ms=50) == 1
    # idle pool: the same as the free-slot formula
    assert plan_k(32, 500, 200, 8, capacity=8, margin_ms=50) == 16


def _doc(tmp_path: Path, name: str) -> dict:
    doc = json.loads((tmp_path / f"{name}.json").read_text())
    assert doc["scenario"] == name and doc["command"]
    png = tmp_path / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return doc


def test_autoscale_smoke(tmp_path: Path) -> None:
    argv = ["autoscale", "--before-s", "60", "--ramp-s", "60", "--peak-s", "120"]
    argv += ["--after-s", "60", "--out", str(tmp_path)]
    assert main(argv) == 0
    doc = _doc(tmp_path, "autoscale")
    assert doc["assumptions"] and doc["settings"]["peak"] == 10.0
    assert [p["phase"] for p in doc["phases"]] == [
        "before", "ramp up", "peak", "ramp down", "after",
    ]  # fmt: skip
    assert doc["overall"]["requests"] > 0 and 0 <= doc["overall"]["attainment"] <= 1
    assert 1 <= doc["overall"]["max_desired"] <= 8
    assert 0 < doc["overall"]["mean_k"] <= 32
    # deterministic for a seed
    assert main(argv) == 0
    assert _doc(tmp_path, "autoscale")["phases"] == doc["phases"]


def test_planner_smoke(tmp_path: Path) -> None:
    argv = ["planner", "--requests", "6", "--warmup", "1", "--ks", "2,4", "--budgets", "500,2000"]
    argv += ["--latency-ms", "50", "--concurrency", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    doc = _doc(tmp_path, "planner")
    assert len(doc["results"]) == 6 and set(doc["per_budget"]) == {"500", "2000"}
    overall = doc["overall"]
    assert overall["requests"] == 6 and 0 <= overall["attainment"] <= 1
    assert all(1 <= r["k_used"] <= r["k"] for r in doc["results"])
    assert doc["checks"]["k32_5s"]["k_used"] == 32
