"""A discrete-event simulation of the sampler pool under the HPA (pure: no I/O, seeded).

Why: the chart scales the pool on grm_sampler_demand_ratio with a 60 s+ pod start and a slow
scale-down; whether budgets still hold and how far k drops while the pool catches up with a
demand surge can only be seen over minutes of simulated time, not in a unit test.

Model (every assumption is listed in ASSUMPTIONS and reported with the results):
requests arrive as a Poisson process whose rate follows the demand profile (base rate x 1,
a linear ramp to the peak multiple, a hold, a linear ramp back); each asks for k samples under
a latency budget; the aggregator's real k planner (grm.core.planner.KPlanner) picks k from the
measured per-sample latency window and the pool's load (capacity of ready pods, samples in
flight or queued); samples wait in one FIFO queue and run on any free slot of a ready pod;
at budget - margin (the pipeline's cutoff) the request votes over the finished samples and
cancels the rest (freeing their slots at once); with none finished it waits for the first.
The HPA (grm_dev.bench.hpa) syncs every 15 s on the pods' demand ratio.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grm.core.plan import MARGINS
from grm.core.planner import KPlanner, LatencyWindow
from grm_dev.bench.hpa import CHART_AUTOSCALING, Hpa, HpaSpec

ASSUMPTIONS = [
    "arrivals: Poisson; rate = base rate x the demand multiple at that time (thinning)",
    "demand: 1x for `before_s`, linear ramp to `peak`x over `ramp_s`, `peak`x for `peak_s`, "
    "linear ramp back to 1x over `ramp_s`, 1x for `after_s`",
    "every request asks for the same k with the same latency budget",
    "per-sample service time: lognormal (median `service_ms`, sigma `service_sigma`), "
    "independent of load (TGI's batching would slow samples when a pod is full; not modelled)",
    "each pod runs `capacity` samples at once; one FIFO queue for the whole pool (the "
    "aggregator sends to the least loaded sampler, approximated by a shared queue)",
    "k planner: grm.core.planner.KPlanner (p95 of the last 256 service times, the budget "
    "margin of grm.core.plan.Margins) with the pool's capacity (ready pods) and the "
    "samples in flight or queued; before any sample finished it grants the full k",
    "anytime voting: at budget - margin (Margins.vote_cutoff_ms) the finished "
    "samples are voted over and the rest cancelled, freeing their slots at once; with none "
    "finished the request waits for its first sample; voting and network take no time",
    "budget attained: time from arrival to the vote <= budget",
    "pods: ready `start_delay_s` after the HPA creates them (model load), then export the "
    "metric; pods not ready report no metric (the HPA's missing pods) and take no samples",
    "scale-down removes not-ready pods first, then the newest; a removed pod takes no new "
    "samples and finishes the ones it runs (graceful drain)",
    "metric: per ready pod (in flight + its share of the queue) / capacity, read at the sync "
    "instant (no scrape or adapter delay) as the chart's adapter rule does; with "
    "`metric_window_s` > 0 instead the mean of 1 s snapshots over that window (what an "
    "avg_over_time rule would give)",
    "HPA: grm_dev.bench.hpa (replica calculator with tolerance, stabilization windows, rate "
    "policies, min/max) with the chart's sampler.autoscaling values; sync every `sync_s`",
]


@dataclass(frozen=True)
class SimConfig:
    seed: int = 1
    base_rate: float = 0.3  # requests per second at 1x
    peak: float = 10.0
    before_s: float = 600.0
    ramp_s: float = 300.0
    peak_s: float = 900.0
    after_s: float = 1500.0
    k: int = 32
    budget_ms: float = 3000.0
    capacity: int = 8  # samples at once per pod
    service_ms: float = 500.0  # median per-sample service time
    service_sigma: float = 0.25
    start_delay_s: float = 60.0
    initial_replicas: int = 1
    sync_s: float = 15.0
    record_s: float = 5.0  # time-series resolution
    metric_window_s: float = 0.0  # 0: the metric at the sync instant; else a moving mean
    autoscaling: dict[str, Any] = field(default_factory=lambda: CHART_AUTOSCALING)

    @property
    def duration_s(self) -> float:
        return self.before_s + 2 * self.ramp_s + self.peak_s + self.after_s

    def multiple(self, t: float) -> float:
        """The demand multiple at time t."""
        up = self.before_s
        top = up + self.ramp_s
        down = top + self.peak_s
        end = down + self.ramp_s
        if t < up or t >= end:
            return 1.0
        if t < top:
            return 1.0 + (self.peak - 1.0) * (t - up) / self.ramp_s
        if t < down:
            return self.peak
        return self.peak - (self.peak - 1.0) * (t - down) / self.ramp_s

    def phases(self) -> list[tuple[str, float, float]]:
        """(name, start, end) of the profile's phases."""
        b = [0.0, self.before_s]
        for d in (self.ramp_s, self.peak_s, self.ramp_s, self.after_s):
            b.append(b[-1] + d)
        names = ["before", "ramp up", "peak", "ramp down", "after"]
        return [(n, b[i], b[i + 1]) for i, n in enumerate(names)]


@dataclass
class Pod:
    ready_at: float
    running: int = 0
    removed: bool = False


@dataclass
class Request:
    arrived: float
    k: int
    done: int = 0
    finished: float | None = None
    jobs: list[int] = field(default_factory=list)


@dataclass
class SimResult:
    config: SimConfig
    series: list[dict[str, float]]  # every record_s: time, demand, replicas, queue, ...
    requests: list[dict[str, float]]  # arrived, latency_ms, k_planned, k_used, met

    def phase_table(self) -> list[dict[str, Any]]:
        out = []
        for name, start, end in self.config.phases():
            reqs = [r for r in self.requests if start <= r["arrived"] < end]
            pts = [p for p in self.series if start <= p["t"] < end]
            n = len(reqs)
            out.append(
                {
                    "phase": name,
                    "start_s": start,
                    "end_s": end,
                    "requests": n,
                    "attainment": sum(r["met"] for r in reqs) / n if n else math.nan,
                    "mean_k": sum(r["k_used"] for r in reqs) / n if n else math.nan,
                    "mean_k_planned": sum(r["k_planned"] for r in reqs) / n if n else math.nan,
                    "mean_ready": sum(p["ready"] for p in pts) / len(pts) if pts else math.nan,
                    "max_desired": max((p["desired"] for p in pts), default=0),
                    "p99_latency_ms": _p99([r["latency_ms"] for r in reqs]),
                }
            )
        return out


def _p99(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(0.99 * len(ordered)))) - 1]


def simulate(cfg: SimConfig) -> SimResult:
    """Run the whole profile; deterministic for a given config (seed included)."""
    rng = random.Random(cfg.seed)
    spec = HpaSpec.from_values(cfg.autoscaling)
    hpa = Hpa(HpaSpec(**{**spec.__dict__, "sync_s": cfg.sync_s}))
    planner = KPlanner(LatencyWindow())
    cutoff_s = MARGINS.vote_cutoff_ms(cfg.budget_ms) / 1000
    pods: list[Pod] = [Pod(ready_at=0.0) for _ in range(cfg.initial_replicas)]
    queue: deque[int] = deque()  # job ids
    # job -> (request index, pod running it or None while queued, service start)
    jobs: dict[int, tuple[int, Pod | None, float]] = {}
    requests: list[Request] = []
    events: list[tuple[float, int, str, int]] = []  # (time, order, kind, payload)
    order = itertools.count()
    job_ids = itertools.count()
    series: list[dict[str, float]] = []
    snapshots: deque[tuple[float, float]] = deque()  # (time, pool demand ratio), 1 s apart

    def push(t: float, kind: str, payload: int = 0) -> None:
        heapq.heappush(events, (t, next(order), kind, payload))

    def ready_pods(now: float) -> list[Pod]:
        return [p for p in pods if not p.removed and p.ready_at <= now]

    def in_flight() -> int:
        return sum(p.running for p in pods)

    def dispatch(now: float) -> None:
        for pod in ready_pods(now):
            while pod.running < cfg.capacity and queue:
                job = queue.popleft()
                req_i, _, _ = jobs[job]
                jobs[job] = (req_i, pod, now)
                pod.running += 1
                service = cfg.service_ms * math.exp(rng.gauss(0.0, cfg.service_sigma)) / 1000
                push(now + service, "sample", job)

    def finish(now: float, req_i: int) -> None:
        req = requests[req_i]
        req.finished = now
        for job in req.jobs:
            if job in jobs:  # cancel: drop from the queue or free the slot
                _, pod, _ = jobs.pop(job)
                if pod is None:
                    queue.remove(job)
                else:
                    pod.running -= 1
        dispatch(now)

    lam_max = cfg.base_rate * max(1.0, cfg.peak)
    t = rng.expovariate(lam_max) if lam_max > 0 else math.inf
    while t < cfg.duration_s:  # thinning: accepted with rate(t) / lam_max
        if rng.random() < cfg.base_rate * cfg.multiple(t) / lam_max:
            push(t, "arrive")
        t += rng.expovariate(lam_max)
    s = 0.0
    while s < cfg.duration_s:
        push(s, "sync")
        s += cfg.sync_s
    if cfg.metric_window_s > 0:
        for second in range(int(cfg.duration_s) + 1):
            push(float(second), "tick")
    r = 0.0
    while r <= cfg.duration_s:
        push(r, "record")
        r += cfg.record_s

    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "arrive":
            ready = ready_pods(now)
            capacity = len(ready) * cfg.capacity
            busy = in_flight() + len(queue)
            plan = planner.plan(
                cfg.k,
                cfg.budget_ms,
                capacity - busy,
                capacity=capacity,
                margin_ms=MARGINS.vote_margin_ms(cfg.budget_ms),
            )
            req = Request(arrived=now, k=plan.k_planned)
            requests.append(req)
            req_i = len(requests) - 1
            for _ in range(plan.k_planned):
                job = next(job_ids)
                jobs[job] = (req_i, None, now)
                req.jobs.append(job)
                queue.append(job)
            push(now + cutoff_s, "cutoff", req_i)
            dispatch(now)
        elif kind == "sample":
            if payload not in jobs:
                continue  # cancelled
            req_i, pod, started = jobs.pop(payload)
            assert pod is not None
            pod.running -= 1
            planner.window.observe((now - started) * 1000)  # service time, as the pool does
            req = requests[req_i]
            req.done += 1
            if req.finished is None and (req.done == req.k or now - req.arrived >= cutoff_s - 1e-9):
                finish(now, req_i)
            dispatch(now)
        elif kind == "cutoff":
            req = requests[payload]
            if req.finished is None and req.done > 0:
                finish(now, payload)
        elif kind == "ready":
            dispatch(now)
        elif kind == "tick":
            ready = ready_pods(now)
            ratio = (in_flight() + len(queue)) / (len(ready) * cfg.capacity) if ready else 0.0
            snapshots.append((now, ratio))
            while snapshots and snapshots[0][0] <= now - cfg.metric_window_s:
                snapshots.popleft()
        elif kind == "sync":
            active = [p for p in pods if not p.removed]
            ready = [p for p in active if p.ready_at <= now]
            share = len(queue) / len(ready) if ready else 0.0
            values = [(p.running + share) / cfg.capacity for p in ready]
            if cfg.metric_window_s > 0 and snapshots and ready:
                mean = sum(v for _, v in snapshots) / len(snapshots)
                values = [mean] * len(ready)
            new = hpa.sync(now, len(active), values, missing=len(active) - len(ready))
            if new > len(active):
                for _ in range(new - len(active)):
                    pods.append(Pod(ready_at=now + cfg.start_delay_s))
                push(now + cfg.start_delay_s, "ready")
            elif new < len(active):
                # not-ready pods first, then the newest
                victims = sorted(active, key=lambda p: (p.ready_at <= now, -p.ready_at))
                for pod in victims[: len(active) - new]:
                    pod.removed = True
            pods[:] = [p for p in pods if not (p.removed and p.running == 0)]
        elif kind == "record":
            active = [p for p in pods if not p.removed]
            series.append(
                {
                    "t": now,
                    "demand": cfg.multiple(now),
                    "desired": len(active),
                    "ready": len([p for p in active if p.ready_at <= now]),
                    "queue": len(queue),
                    "in_flight": in_flight(),
                }
            )
    return SimResult(cfg, series, [_row(req, cfg.budget_ms) for req in requests])


def _row(req: Request, budget_ms: float) -> dict[str, float]:
    end = req.finished if req.finished is not None else math.inf
    latency_ms = (end - req.arrived) * 1000
    return {
        "arrived": req.arrived,
        "latency_ms": latency_ms,
        "k_planned": req.k,
        "k_used": req.done if req.finished is not None else 0,
        "met": float(latency_ms <= budget_ms + 1e-6),
    }
