"""The k planner (grm.core.planner): latency window, wave prediction, k under a budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grm.core.plan import MARGINS
from grm.core.planner import KPlanner, LatencyWindow, plan_k, predicted_ms

budget_margin_ms = MARGINS.vote_margin_ms


def test_window_high_percentile_over_recent_values() -> None:
    w = LatencyWindow(size=100, quantile=0.95)
    assert w.estimate() is None
    w.extend(float(v) for v in range(1, 101))
    assert w.estimate() == 95.0
    w.extend([1000.0] * 100)  # the old values leave the window
    assert w.estimate() == 1000.0 and len(w) == 100
    w.observe(float("nan"))
    w.observe(-1.0)
    assert len(w) == 100


def test_window_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        LatencyWindow(size=0)
    with pytest.raises(ValueError):
        LatencyWindow(quantile=0)
    with pytest.raises(ValueError):
        KPlanner(k_min=0)


def test_waves() -> None:
    assert predicted_ms(8, 200, 8) == 200
    assert predicted_ms(9, 200, 8) == 400
    assert predicted_ms(32, 200, 8, overhead_ms=10) == 810
    assert predicted_ms(3, 100, 0) == 300  # no free slot: planned as one


def test_plan_k_fits_whole_waves() -> None:
    # 200 ms per sample, 8 free slots, 500 ms budget with a 50 ms margin: 2 waves = 16.
    assert plan_k(32, 500, 200, 8, margin_ms=50) == 16
    assert plan_k(32, 5000, 200, 8, margin_ms=250) == 32
    assert plan_k(32, 100, 200, 8) == 1  # not even one wave: k_min
    assert plan_k(32, 100, 200, 8, k_min=4) == 4
    assert plan_k(2, 100, 200, 8, k_min=4) == 2  # k_min never above the request
    assert plan_k(32, None, 200, 8) == 32  # no budget
    assert plan_k(32, 500, None, 8) == 32  # nothing measured yet: optimistic


def test_planner_uses_the_window_and_reports_the_deficit() -> None:
    planner = KPlanner(LatencyWindow())
    assert planner.plan(32, 500, 8).k_planned == 32
    planner.window.extend([200.0] * 20)
    plan = planner.plan(32, 500, 8)
    assert (plan.k_planned, plan.deficit, plan.latency_ms) == (16, 16, 200.0)
    assert plan.predicted_ms == 400.0
    assert planner.plan(32, 5000, 8).k_planned == 32
    assert (
        budget_margin_ms(500) == 50 and budget_margin_ms(50) == 20 and budget_margin_ms(1e5) == 250
    )


ks = st.integers(1, 256)
budgets = st.integers(1, 60_000)
latencies = st.floats(0.1, 10_000)
slots = st.integers(0, 512)


@given(ks, budgets, budgets, latencies, slots, st.integers(1, 16))
def test_monotone_in_budget(k: int, b1: int, b2: int, lat: float, free: int, k_min: int) -> None:
    lo, hi = sorted((b1, b2))
    margin = budget_margin_ms
    a = plan_k(k, lo, lat, free, k_min=k_min, margin_ms=margin(lo))
    b = plan_k(k, hi, lat, free, k_min=k_min, margin_ms=margin(hi))
    assert a <= b


@given(ks, budgets, latencies, slots, slots)
def test_monotone_in_capacity(k: int, budget: int, lat: float, f1: int, f2: int) -> None:
    lo, hi = sorted((f1, f2))
    assert plan_k(k, budget, lat, lo) <= plan_k(k, budget, lat, hi)


@given(
    ks, st.one_of(st.none(), budgets), st.one_of(st.none(), latencies), slots, st.integers(1, 16)
)
def test_bounds(k: int, budget: int | None, lat: float | None, free: int, k_min: int) -> None:
    got = plan_k(k, budget, lat, free, k_min=k_min, margin_ms=10)
    assert min(k_min, k) <= got <= k


@given(ks, budgets, st.floats(1, 10_000), st.integers(1, 512))
def test_a_planned_k_above_k_min_is_predicted_to_fit(
    k: int, budget: int, lat: float, free: int
) -> None:
    margin = budget_margin_ms(budget)
    got = plan_k(k, budget, lat, free, margin_ms=margin)
    if got > 1:
        assert predicted_ms(got, lat, free) <= budget - margin + 1e-6
