"""The Kubernetes HorizontalPodAutoscaler's replica computation, as pure functions.

A model of the autoscaling/v2 controller for one Pods metric with an AverageValue target (and
optionally External metrics with AverageValue targets), so that `grm bench autoscale` can
replay the chart's `sampler.autoscaling` settings without a cluster. It follows the
controller's code (pkg/controller/podautoscaler):

- replica calculator: ratio = mean(metric of pods that report one) / target; within the
  tolerance (default 0.1) nothing changes; else ceil(ratio x pods that report). Pods with no
  metric (e.g. not started yet) count as 0 when scaling up and as the target when scaling
  down; if that flips the direction or lands within the tolerance, nothing changes;
- an External metric with an AverageValue target proposes ceil(value / target) (unchanged
  within the tolerance of value / (target x current)); with several metrics the HPA takes the
  largest proposal;
- stabilization: the recommendation is clamped between the lowest recommendation of the
  scale-up window and the highest of the scale-down window (both include the newest);
- rate policies: each policy allows a change relative to the replicas at the start of its
  period (Pods: +/- value; Percent: x (1 +/- value/100), up rounded up, down truncated);
  selectPolicy Max takes the policy allowing the larger change, Min the smaller, Disabled none;
- min/max replicas bound every change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def parse_quantity(value: str | float | int) -> float:
    """A Kubernetes quantity as a float: '800m' -> 0.8, '2' -> 2.0, 1.5 -> 1.5."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


@dataclass(frozen=True)
class Policy:
    kind: str  # "Pods" | "Percent"
    value: int
    period_s: float


@dataclass(frozen=True)
class Rules:
    """One direction's behavior (scaleUp or scaleDown)."""

    stabilization_s: float
    select: str = "Max"  # "Max" | "Min" | "Disabled"
    policies: tuple[Policy, ...] = ()


@dataclass(frozen=True)
class HpaSpec:
    min_replicas: int
    max_replicas: int
    target: float  # the metric's target average value per pod
    scale_up: Rules
    scale_down: Rules
    tolerance: float = 0.1
    sync_s: float = 15.0  # --horizontal-pod-autoscaler-sync-period

    @classmethod
    def from_values(cls, autoscaling: Mapping[str, Any]) -> HpaSpec:
        """From the chart's `sampler.autoscaling` values."""
        behavior = autoscaling.get("behavior", {})

        def rules(d: Mapping[str, Any], default_window: float) -> Rules:
            return Rules(
                stabilization_s=float(d.get("stabilizationWindowSeconds", default_window)),
                select=str(d.get("selectPolicy", "Max")),
                policies=tuple(
                    Policy(str(p["type"]), int(p["value"]), float(p["periodSeconds"]))
                    for p in d.get("policies", ())
                ),
            )

        return cls(
            min_replicas=int(autoscaling["minReplicas"]),
            max_replicas=int(autoscaling["maxReplicas"]),
            target=parse_quantity(autoscaling["metric"]["targetAverageValue"]),
            scale_up=rules(behavior.get("scaleUp", {}), 0),
            scale_down=rules(behavior.get("scaleDown", {}), 300),
        )


# The chart's sampler.autoscaling defaults (charts/grm/values.yaml; a test keeps them equal),
# chosen with `grm bench autoscale` (docs/benchmarks.md): the gauges averaged over 1m, the
# samples the k planner cut counted as demand (deficit), a target of 1 (a full pod), the
# lowest recommendation of the last minute when scaling up, and half the pool per minute after
# 2 calm minutes when scaling down.
CHART_AUTOSCALING: dict[str, Any] = {
    "minReplicas": 1,
    "maxReplicas": 8,
    # window: a PromQL range ("1m" = 60 s; "" = the instant gauges).
    "metric": {"name": "grm_sampler_demand_ratio", "targetAverageValue": "1", "window": "1m"},
    # the rate of grm_k_deficit_total over `window` x the mean sample time, in pods, added to
    # the demand (grm_dev.bench.poolsim models it; the chart's adapter rule computes it)
    "deficit": {"enabled": True, "window": "1m"},
    "behavior": {
        "scaleUp": {
            "stabilizationWindowSeconds": 60,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 30},
                {"type": "Pods", "value": 4, "periodSeconds": 30},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 120,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
        },
    },
}


def metric_replicas(
    current: int, values: Sequence[float], missing: int, target: float, tolerance: float = 0.1
) -> int:
    """The replica calculator for a Pods metric: replicas that bring the average to target.

    `values`: the metric of each pod that reports one; `missing`: pods with no metric yet.
    """
    if not values or target <= 0:
        return current
    ratio = sum(values) / len(values) / target
    if not missing:
        if abs(ratio - 1.0) <= tolerance:
            return current
        return math.ceil(ratio * len(values))
    # Missing pods: 0 when scaling up (they may soon take load), the target when scaling down.
    fill = 0.0 if ratio > 1.0 else target
    count = len(values) + missing
    new_ratio = (sum(values) + fill * missing) / count / target
    if abs(new_ratio - 1.0) <= tolerance or (ratio < 1.0) != (new_ratio < 1.0):
        return current
    proposed = math.ceil(new_ratio * count)
    if (new_ratio < 1.0 and proposed > current) or (new_ratio > 1.0 and proposed < current):
        return current
    return proposed


def external_replicas(current: int, value: float, target: float, tolerance: float = 0.1) -> int:
    """The replica calculator for an External metric with an AverageValue target.

    The value is the pool's total (not a per-pod mean), so replicas = ceil(value / target);
    within the tolerance of the current replicas nothing changes. A second metric of an HPA
    gets its own proposal; the HPA acts on the largest.
    """
    if target <= 0:
        return current
    if current > 0 and abs(value / (target * current) - 1.0) <= tolerance:
        return current
    return math.ceil(value / target)


Event = tuple[float, int]  # (time, replicas added or removed)


def _changed_within(events: Sequence[Event], now: float, period_s: float) -> int:
    return sum(n for t, n in events if t > now - period_s)


def scale_up_limit(
    current: int, rules: Rules, ups: Sequence[Event], downs: Sequence[Event], now: float
) -> int:
    """The most replicas the scale-up policies allow now."""
    if rules.select == "Disabled" or not rules.policies:
        return current if rules.select == "Disabled" else 2**31 - 1
    pick = min if rules.select == "Min" else max
    out: int | None = None
    for p in rules.policies:
        start = (
            current
            - _changed_within(ups, now, p.period_s)
            + _changed_within(downs, now, p.period_s)
        )
        if p.kind == "Pods":
            proposed = start + p.value
        else:
            proposed = math.ceil(start * (1 + p.value / 100))
        out = proposed if out is None else pick(out, proposed)
    assert out is not None
    return out


def scale_down_limit(
    current: int, rules: Rules, ups: Sequence[Event], downs: Sequence[Event], now: float
) -> int:
    """The fewest replicas the scale-down policies allow now."""
    if rules.select == "Disabled" or not rules.policies:
        return current if rules.select == "Disabled" else 0
    # Min = the smaller change = the higher floor.
    pick = max if rules.select == "Min" else min
    out: int | None = None
    for p in rules.policies:
        start = (
            current
            - _changed_within(ups, now, p.period_s)
            + _changed_within(downs, now, p.period_s)
        )
        if p.kind == "Pods":
            proposed = start - p.value
        else:
            proposed = int(start * (1 - p.value / 100))
        out = proposed if out is None else pick(out, proposed)
    assert out is not None
    return out


@dataclass
class Hpa:
    """The controller's state for one target: recommendations and scale events over time."""

    spec: HpaSpec
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    ups: list[tuple[float, int]] = field(default_factory=list)  # (time, pods added)
    downs: list[tuple[float, int]] = field(default_factory=list)  # (time, pods removed)

    def stabilize(self, now: float, current: int, desired: int) -> int:
        """Clamp between the scale-up window's lowest and the scale-down window's highest."""
        self.recommendations.append((now, desired))
        up_cut = now - self.spec.scale_up.stabilization_s
        down_cut = now - self.spec.scale_down.stabilization_s
        up = min([r for t, r in self.recommendations if t > up_cut] + [desired])
        down = max([r for t, r in self.recommendations if t > down_cut] + [desired])
        keep = min(up_cut, down_cut)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > keep]
        return min(max(current, up), down)

    def limit(self, now: float, current: int, desired: int) -> int:
        """Apply the rate policies and min/max replicas."""
        s = self.spec
        if desired > current:
            cap = max(current, scale_up_limit(current, s.scale_up, self.ups, self.downs, now))
            return min(desired, s.max_replicas, cap)
        if desired < current:
            floor = min(current, scale_down_limit(current, s.scale_down, self.ups, self.downs, now))
            return max(desired, s.min_replicas, floor)
        return desired

    def sync(
        self,
        now: float,
        current: int,
        values: Sequence[float],
        missing: int = 0,
        external: Sequence[tuple[float, float]] = (),
    ) -> int:
        """One reconcile: the replicas the HPA sets, given the pods' metric values now.

        `external`: (value, AverageValue target) of further External metrics; the HPA takes
        the largest proposal over all its metrics."""
        s = self.spec
        if current > s.max_replicas:
            new = s.max_replicas
        elif current < s.min_replicas:
            new = s.min_replicas
        else:
            desired = metric_replicas(current, values, missing, s.target, s.tolerance)
            for value, target in external:
                desired = max(desired, external_replicas(current, value, target, s.tolerance))
            new = self.limit(now, current, self.stabilize(now, current, desired))
        if new > current:
            self.ups.append((now, new - current))
        elif new < current:
            self.downs.append((now, current - new))
        longest = max(
            (p.period_s for p in (*s.scale_up.policies, *s.scale_down.policies)), default=0
        )
        self.ups = [(t, n) for t, n in self.ups if t > now - longest]
        self.downs = [(t, n) for t, n in self.downs if t > now - longest]
        return new
