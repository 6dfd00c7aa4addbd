"""The HPA model (grm_dev.bench.hpa), the pool simulation's engine, clock and oracle
(grm_dev.bench.poolsim), and smoke runs of `grm bench autoscale|planner`.

The HPA cases follow the Kubernetes docs' worked examples; the engine cases check the roofline
against the published sweep it is fitted to; the smoke runs use tiny settings and assert only
that the JSON and PNG are written and sane (no timing).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from grm.core.planner import plan_k
from grm_dev.bench.__main__ import main
from grm_dev.bench.hpa import (
    CHART_AUTOSCALING,
    Hpa,
    HpaSpec,
    Policy,
    Rules,
    external_replicas,
    metric_replicas,
    parse_quantity,
)
from grm_dev.bench.poolsim import (
    GRM_27B_H100,
    INFERENCEBENCH_H100_LLAMA8B,
    SWEPT_ENGINE,
    Pod,
    Roofline,
    SimConfig,
    fit_concurrency,
    oracle_pods,
    parse_window,
    simulate,
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


def test_external_metric_proposes_its_total_over_the_target() -> None:
    # An External AverageValue metric is a pool total: 6 pods' worth at target 1 -> 6.
    assert external_replicas(2, 6.0, 1.0) == 6
    assert external_replicas(4, 4.2, 1.0) == 4  # within 10 % of 4 x 1
    assert external_replicas(4, 1.0, 1.0) == 1
    # with two metrics the HPA takes the larger proposal: the pods metric alone says 1
    up = Rules(0, "Max", (Policy("Percent", 1000, 15),))
    assert Hpa(_spec(target=1.0, scale_up=up)).sync(0, 2, [0.5, 0.5], external=[(6.0, 1.0)]) == 6
    assert Hpa(_spec(target=1.0, scale_up=up)).sync(0, 2, [2.0, 2.0], external=[(1.0, 1.0)]) == 4


def test_k_deficit_as_demand_grows_the_pool_and_grants_more_k() -> None:
    # Cold pods through a short surge: the planner cuts k while the pool is short; counting the
    # cut samples as demand starts more pods, so later requests get more of their k.
    base = {"before_s": 120, "ramp_s": 60, "peak_s": 900, "after_s": 60, "warmup_s": 300}
    without = dict(CHART_AUTOSCALING, deficit={"enabled": False})
    added = dict(CHART_AUTOSCALING, deficit={"enabled": True, "window": "1m"})
    separate = dict(CHART_AUTOSCALING, deficit={**added["deficit"], "combine": "separate"})
    assert SimConfig(autoscaling=without).deficit is None
    assert SimConfig(autoscaling=added).deficit == ("add", 60.0)
    runs = {
        name: simulate(SimConfig(start_delay_s=600, max_replicas=200, autoscaling=values, **base))
        for name, values in (("without", without), ("added", added), ("separate", separate))
    }
    peak = {name: r.phase_table()[2] for name, r in runs.items()}
    assert peak["added"]["k_granted"] > peak["without"]["k_granted"]
    assert peak["separate"]["k_granted"] > peak["without"]["k_granted"]
    assert peak["added"]["max_pods"] > peak["without"]["max_pods"]


def test_chart_defaults_match_values_yaml() -> None:
    values = yaml.safe_load(CHART.read_text())["sampler"]["autoscaling"]
    for key in ("minReplicas", "maxReplicas", "behavior", "deficit"):
        assert values[key] == CHART_AUTOSCALING[key]
    assert values["metric"] == CHART_AUTOSCALING["metric"]
    spec = HpaSpec.from_values(values)
    assert spec.target == 1.0 and spec.scale_down.stabilization_s == 120
    assert spec.scale_up.stabilization_s == 60
    assert parse_window(values["metric"]["window"]) == 60


def test_roofline_fits_the_published_sweep() -> None:
    # t1 = TPOT at concurrency 1, T_max = the peak throughput: knee at about 9 sequences.
    assert (SWEPT_ENGINE.t1_ms, SWEPT_ENGINE.tmax_tok_s) == (6.48, 1384.2)
    assert SWEPT_ENGINE.knee == pytest.approx(8.97, abs=0.01)
    for b, tok_s, tpot_ms in INFERENCEBENCH_H100_LLAMA8B:
        assert SWEPT_ENGINE.tpot_s(b) * 1000 == pytest.approx(tpot_ms, rel=0.07)
        if b > 1:  # at 1 the client's tok/s also counts time to first token and gaps
            assert SWEPT_ENGINE.throughput(b) == pytest.approx(tok_s, rel=0.07)
    # 27B bf16: 3.39x the bytes: t1 x 3.39, T_max / 3.39, the same knee.
    assert GRM_27B_H100.t1_ms == pytest.approx(21.95, abs=0.01)
    assert GRM_27B_H100.tmax_tok_s == pytest.approx(408.6, abs=0.1)
    assert GRM_27B_H100.knee == pytest.approx(SWEPT_ENGINE.knee)
    # below the knee the batch is free; past it each sequence slows with b
    assert GRM_27B_H100.tpot_s(4) == GRM_27B_H100.tpot_s(1)
    assert GRM_27B_H100.tpot_s(20) == pytest.approx(20 / 408.6, rel=1e-3)


def test_virtual_clock_shares_the_engine() -> None:
    # t1 = 10 ms, T_max = 100 tok/s (knee 1): two sequences run at 20 ms per token each.
    pod = Pod(created=0.0, ready_at=0.0, engine=Roofline(10.0, 100.0))
    pod.add(0.0, 1, 100)
    pod.add(0.0, 2, 200)
    assert pod.next_end() == (pytest.approx(2.0), 1)  # 100 tokens x 20 ms
    assert pod.pop_end(2.0) == 1
    # alone, the second runs at 10 ms per token: its last 100 tokens take 1 s
    assert pod.next_end() == (pytest.approx(3.0), 2)
    # a third joining at 2.5 s slows it again: 50 tokens left at 20 ms -> 3.5 s
    pod.add(2.5, 3, 1000)
    assert pod.next_end() == (pytest.approx(3.5), 2)
    # cancelling the third at 3 s: 25 tokens left at 10 ms -> 3.25 s
    pod.drop(3.0, 3)
    assert pod.next_end() == (pytest.approx(3.25), 2)
    assert pod.pop_end(3.25) == 2 and pod.next_end() is None


def test_oracle_is_tokens_over_per_pod_throughput() -> None:
    cfg = SimConfig(capacity=10, budget_ms=30000, tokens_median=300, tokens_sigma=0.3)
    # a p99 sample (600 tokens) at 10 sequences (24.5 ms/token) takes 14.7 s < 29.75 s
    assert fit_concurrency(cfg) == 10
    per_minute = cfg.engine.throughput(10) * 60  # saturated: T_max
    assert per_minute == pytest.approx(408.6 * 60, rel=1e-3)
    assert oracle_pods(cfg, [0.0, per_minute, per_minute * 2.5]) == [1, 1, 3]
    # a tight budget caps the concurrency where the p99 sample still fits
    tight = SimConfig(capacity=20, budget_ms=20000)  # 603 tokens x b / 408.6 <= 19.75 s
    assert fit_concurrency(tight) == math.floor(19.75 / (300 * math.exp(2.326 * 0.3)) * 408.64)
    assert fit_concurrency(tight) == 13


def test_window_parses_promql_ranges() -> None:
    assert [parse_window(w) for w in ("", "90s", "1m", "1m30s", "2h")] == [0, 90, 60, 90, 7200]
    with pytest.raises(ValueError):
        parse_window("a minute")


def test_simulation_counts_pod_hours_and_is_deterministic() -> None:
    cfg = SimConfig(before_s=60, ramp_s=60, peak_s=120, after_s=60, warmup_s=120, peak=4)
    a, b = simulate(cfg), simulate(cfg)
    assert a.requests == b.requests and a.pods == b.pods
    overall = a.overall()
    # every pod holds a GPU for at most the whole run; the initial 3 for all of it
    assert 3 * 300 / 3600 <= overall["pod_hours"] <= len(a.pods) * 300 / 3600
    assert overall["oracle_pod_hours"] == pytest.approx(sum(a.oracle) / 60)
    assert 0 < overall["k_granted"] <= 1 and 0 <= overall["attainment"] <= 1


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
    argv += ["--after-s", "60", "--warmup-s", "120", "--seeds", "1", "--candidates", "chart"]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 0
    doc = _doc(tmp_path, "autoscale")
    assert doc["assumptions"] and doc["settings"]["peak"] == 10.0
    assert doc["engine"]["source"].startswith("https://")
    assert [r["start"] for r in doc["comparison"]] == ["warm", "cold"]
    for phases in doc["phases"].values():
        assert [p["phase"] for p in phases] == [
            "before", "ramp up", "peak", "ramp down", "after", "all",
        ]  # fmt: skip
    for row in doc["comparison"]:
        assert 0 <= row["attainment"] <= 1 and 0 < row["k_granted"] <= 1
        assert row["pod_hours"] > 0 and row["oracle_pod_hours"] > 0
    assert set(doc["checks"]) == {"warm", "cold"}
    # deterministic for a seed
    assert main(argv) == 0
    assert _doc(tmp_path, "autoscale")["comparison"] == doc["comparison"]


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
