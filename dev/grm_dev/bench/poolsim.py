"""A discrete-event simulation of the sampler pool under the HPA (pure: no I/O, seeded).

Why: the chart scales the pool on grm_sampler_demand_ratio with a slow GPU pod start and a slow
scale-down; whether budgets still hold, how far k drops while the pool catches up with a demand
surge, and how many pod-hours that costs against the least that could have served it can only
be seen over an hour of simulated time, not in a unit test.

Model (every assumption is listed in ASSUMPTIONS and reported with the results):
requests arrive as a Poisson process whose rate follows the demand profile (base rate x 1, a
linear ramp to the peak multiple, a hold, a linear ramp back); each asks for k samples under a
latency budget; the aggregator's real k planner (grm.core.planner.KPlanner) picks k from the
measured per-sample latency window and the pool's load; samples wait in one FIFO queue and
run on a free slot of the least loaded ready pod. Each pod is one GPU engine that batches its
sequences (Roofline: a sequence's time per output token grows with the batch once the engine's
throughput saturates; all sequences of a pod share one speed, processor sharing); each sample
generates a lognormal number of tokens. At budget - margin (the pipeline's cutoff) the request
votes over the finished samples and cancels the rest; with none finished it waits for the
first. The HPA (grm_dev.bench.hpa) syncs every 15 s on the pods' demand ratio. The oracle is
the fewest ready pods that could have served every request's full k within its budget, minute
by minute (see oracle_pods).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grm.core.plan import MARGINS
from grm.core.planner import KPlanner, LatencyWindow
from grm_dev.bench.hpa import CHART_AUTOSCALING, Hpa, HpaSpec

# A published vLLM concurrency sweep: (concurrent sequences, output tok/s, median TPOT ms).
# InferenceBench "concurrency sweep" recipe: vLLM 0.21.0, Llama-3.1-8B-Instruct fp16, one
# H100-80GB-HBM3, https://yobitelcomm.github.io/bench/recipes/concurrency-sweep/
INFERENCEBENCH_H100_LLAMA8B: tuple[tuple[int, float, float], ...] = (
    (1, 122.2, 6.48),
    (4, 580.3, 6.59),
    (16, 1384.2, 10.94),
    (64, 1312.3, 46.91),
)
SWEEP_SOURCE = "https://yobitelcomm.github.io/bench/recipes/concurrency-sweep/"
# Parameters (bf16/fp16: 2 bytes each) of the swept model and of the served GRM's base model:
# Llama-3.1-8B and Gemma-2-27B (DeepSeek-GRM-27B is post-trained from Gemma-2-27B).
LLAMA_3_1_8B_PARAMS = 8.03e9
GEMMA_2_27B_PARAMS = 27.2e9


@dataclass(frozen=True)
class Roofline:
    """One engine's decode speed versus the sequences it batches.

    Decode is memory-bound at small batches (each step reads all the weights once, whatever the
    batch: time per output token t1) and compute-bound past the knee (the engine's output
    throughput saturates at T_max), so TPOT(b) = max(t1, b / T_max) and the output throughput
    b / TPOT(b) = min(b / t1, T_max). Prefill is not modelled: with prefix caching the k samples
    of an item share their prompt, and its time is small against a few hundred decode steps.
    """

    t1_ms: float
    tmax_tok_s: float

    def tpot_s(self, b: int) -> float:
        """Seconds per output token of each of b concurrent sequences."""
        return max(self.t1_ms / 1000, max(1, b) / self.tmax_tok_s)

    def throughput(self, b: int) -> float:
        """Output tokens per second of the whole engine with b concurrent sequences."""
        return b / self.tpot_s(b) if b > 0 else 0.0

    @property
    def knee(self) -> float:
        """The batch where throughput saturates (t1 x T_max)."""
        return self.t1_ms / 1000 * self.tmax_tok_s

    @classmethod
    def fit(cls, sweep: Sequence[tuple[int, float, float]]) -> Roofline:
        """t1 = the TPOT at the smallest concurrency; T_max = the highest throughput."""
        lowest = min(sweep)
        return cls(t1_ms=lowest[2], tmax_tok_s=max(tok_s for _, tok_s, _ in sweep))

    def scaled(self, factor: float) -> Roofline:
        """The same engine and GPU serving a model `factor` x as large (dense, same dtype).

        Memory-bound steps read factor x the bytes (t1 x factor); compute per token is about
        2 x parameters FLOPs (T_max / factor); the knee stays where it was."""
        return Roofline(self.t1_ms * factor, self.tmax_tok_s / factor)


SWEPT_ENGINE = Roofline.fit(INFERENCEBENCH_H100_LLAMA8B)
# DeepSeek-GRM-27B bf16 (about 54 GB of weights) on one H100-80GB with the same engine.
GRM_27B_H100 = SWEPT_ENGINE.scaled(GEMMA_2_27B_PARAMS / LLAMA_3_1_8B_PARAMS)

# Pod start: warm = the weights on the chart's model cache (a PVC or node cache): load and
# engine start only; cold = the same after downloading the weights (about 54 GB) first.
WARM_START_S = 120.0
COLD_START_S = 600.0

ASSUMPTIONS = [
    "arrivals: Poisson; rate = base rate x the demand multiple at that time (thinning); the "
    "workload (arrival times and every sample's token count) is drawn before the run, so every "
    "autoscaler setting sees the same requests",
    "demand: 1x for `before_s`, linear ramp to `peak`x over `ramp_s`, `peak`x for `peak_s`, "
    "linear ramp back to 1x over `ramp_s`, 1x for `after_s`",
    "every request asks for the same k with the same latency budget",
    "engine: one per pod, a roofline fitted to a published vLLM concurrency sweep "
    f"({SWEEP_SOURCE}: Llama-3.1-8B fp16 on one H100, t1 = TPOT at concurrency 1, "
    "T_max = peak output throughput), scaled to the served model by its weight bytes "
    "(t1 x s, T_max / s, s = 27.2e9 / 8.03e9 for DeepSeek-GRM-27B, Gemma-2-27B based); "
    "TPOT(b) = max(t1, b / T_max) for b running sequences; prefill not modelled",
    "processor sharing: every running sequence of a pod advances at 1 / TPOT(b) tokens/s "
    "(a per-pod virtual token clock); a sample ends when it has generated its tokens",
    "tokens per sample: lognormal (median `tokens_median`, sigma `tokens_sigma`)",
    "each pod runs at most `capacity` samples at once (the sampler's concurrency); one FIFO "
    "queue for the whole pool; a queued sample goes to the least loaded ready pod",
    "k planner: grm.core.planner.KPlanner (p95 of the last 256 service times, the budget "
    "margin of grm.core.plan.Margins) with the pool's capacity (ready pods x capacity) and "
    "the samples in flight or queued; before any sample finished it grants the full k",
    "anytime voting: at budget - margin (Margins.vote_cutoff_ms) the finished samples are "
    "voted over and the rest cancelled, freeing their slots at once; with none finished the "
    "request waits for its first sample; voting and network take no time",
    "budget attained: time from arrival to the vote <= budget",
    "pods: hold a GPU from creation; ready `start_delay_s` later (warm: weights on the "
    "model cache, load and engine start only; cold: download the weights first); pods not "
    "ready report no metric (the HPA's missing pods) and take no samples",
    "scale-down removes not-ready pods first, then the newest; a removed pod takes no new "
    "samples and holds its GPU until its running samples end (graceful drain)",
    "metric: per ready pod (in flight + its share of the queue) / capacity; with the chart's "
    "`metric.window` (avg_over_time in the adapter rule) each pod's mean of 1 s gauges over "
    "that window (a pod ready for less than the window: since it became ready), else the "
    "value at the sync instant; no scrape or adapter delay",
    "k deficit (`deficit.enabled`): the samples the planner cut per second over "
    "`deficit.window` x the mean service time of the samples that ended in that window / "
    "capacity, in pods; `add`: each ready pod's metric carries an equal share of it (the "
    "HPA's sum over pods is then in-flight + queued + cut); `separate`: a second (External) "
    "metric at the same target, the HPA taking the larger proposal",
    "HPA: grm_dev.bench.hpa (replica calculator with tolerance and missing pods, "
    "stabilization windows, rate policies, min/max) with the given sampler.autoscaling values; "
    "sync every `sync_s`",
    "pod-hours: every pod that holds a GPU (starting, ready or draining)",
    "oracle: per minute, max(1, ceil(tokens of the full k of the requests arriving in that "
    "minute / (60 s x the per-pod throughput at b_fit))); b_fit = the largest concurrency "
    "<= capacity at which a p99-length sample still ends within the vote cutoff (a fluid "
    "lower bound: no start time, no queueing, perfect packing)",
]


def parse_window(text: str) -> float:
    """A PromQL range ('1m', '90s', '1m30s', '' = none) in seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"([0-9]+)(ms|s|m|h)", text)
    if "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a PromQL duration: {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


@dataclass(frozen=True)
class SimConfig:
    seed: int = 1
    base_rate: float = 0.1  # requests per second at 1x
    peak: float = 10.0
    before_s: float = 600.0
    ramp_s: float = 300.0
    peak_s: float = 900.0
    after_s: float = 1500.0
    k: int = 32
    budget_ms: float = 30000.0
    capacity: int = 10  # samples at once per pod (the sampler's concurrency): past the knee
    t1_ms: float = GRM_27B_H100.t1_ms
    tmax_tok_s: float = GRM_27B_H100.tmax_tok_s
    tokens_median: float = 300.0
    tokens_sigma: float = 0.3
    start_delay_s: float = WARM_START_S
    initial_replicas: int = 3
    warmup_s: float = 1200.0  # 1x before t = 0 (not reported) so the HPA starts settled
    max_replicas: int = 0  # 0: the autoscaling values' maxReplicas
    sync_s: float = 15.0
    record_s: float = 5.0  # time-series resolution
    autoscaling: dict[str, Any] = field(default_factory=lambda: CHART_AUTOSCALING)

    @property
    def engine(self) -> Roofline:
        return Roofline(self.t1_ms, self.tmax_tok_s)

    @property
    def duration_s(self) -> float:
        return self.before_s + 2 * self.ramp_s + self.peak_s + self.after_s

    @property
    def window_s(self) -> float:
        return parse_window(str(self.autoscaling["metric"].get("window") or ""))

    @property
    def deficit(self) -> tuple[str, float] | None:
        """How the k deficit enters the HPA (`add` to the demand metric or a `separate`
        External metric) and its rate window in seconds; None when off."""
        d = self.autoscaling.get("deficit") or {}
        if not d.get("enabled"):
            return None
        return str(d.get("combine", "add")), parse_window(str(d.get("window") or "1m"))

    def multiple(self, t: float) -> float:
        """The demand multiple at time t (1 during the warm-up, t < 0)."""
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

    def tokens_quantile(self, z: float) -> float:
        """A quantile of the tokens per sample (z: the normal quantile, 2.326 = p99)."""
        return self.tokens_median * math.exp(z * self.tokens_sigma)


def fit_concurrency(cfg: SimConfig) -> int:
    """b_fit: the most concurrent samples per pod at which a p99-length sample still ends by
    the vote cutoff (at least 1, at most the sampler's capacity)."""
    cutoff_s = MARGINS.vote_cutoff_ms(cfg.budget_ms) / 1000
    longest = cfg.tokens_quantile(2.326)
    fits = [b for b in range(1, cfg.capacity + 1) if longest * cfg.engine.tpot_s(b) <= cutoff_s]
    return max(fits, default=1)


def oracle_pods(cfg: SimConfig, tokens_by_minute: Sequence[float]) -> list[int]:
    """The fewest ready pods per minute that serve that minute's demanded tokens (full k)
    at the per-pod throughput of b_fit concurrent samples (a fluid lower bound; >= 1)."""
    per_pod = cfg.engine.throughput(fit_concurrency(cfg)) * 60.0
    return [max(1, math.ceil(tokens / per_pod - 1e-9)) for tokens in tokens_by_minute]


@dataclass
class Pod:
    """One engine: its running sequences share one speed through a virtual token clock.

    `v` counts the tokens every running sequence has generated since the pod started; it
    advances at 1 / TPOT(b) per second while b sequences run, so a sequence that joins at
    v0 with n tokens to generate ends when v reaches v0 + n, whatever joins or leaves meanwhile.
    """

    created: float
    ready_at: float
    engine: Roofline
    removed: bool = False
    deleted: float | None = None
    v: float = 0.0
    v_at: float = 0.0
    version: int = 0  # bumped at each change; a scheduled end with an old version is stale
    ends: list[tuple[float, int]] = field(default_factory=list)  # (virtual end, job)
    live: set[int] = field(default_factory=set)
    gauges: deque[tuple[float, float]] = field(default_factory=deque)  # (time, demand ratio)

    @property
    def running(self) -> int:
        return len(self.live)

    def advance(self, now: float) -> None:
        if self.live:
            self.v += (now - self.v_at) / self.engine.tpot_s(len(self.live))
        self.v_at = now

    def add(self, now: float, job: int, tokens: float) -> None:
        self.advance(now)
        self.live.add(job)
        heapq.heappush(self.ends, (self.v + tokens, job))

    def drop(self, now: float, job: int) -> None:
        self.advance(now)
        self.live.discard(job)

    def next_end(self) -> tuple[float, int] | None:
        """(real time, job) of the next sequence to end at the current batch, if any."""
        while self.ends and self.ends[0][1] not in self.live:
            heapq.heappop(self.ends)
        if not self.ends:
            return None
        end_v, job = self.ends[0]
        return self.v_at + max(0.0, end_v - self.v) * self.engine.tpot_s(len(self.live)), job

    def pop_end(self, now: float) -> int:
        """Advance to `now` and end the sequence due then (the one next_end named)."""
        self.advance(now)
        end = self.next_end()
        assert end is not None
        end_v, job = heapq.heappop(self.ends)
        self.v = max(self.v, end_v)
        self.live.discard(job)
        return job


@dataclass
class Request:
    arrived: float
    k: int
    tokens: list[float]  # every sample's tokens, for the full k requested
    done: int = 0
    finished: float | None = None
    jobs: list[int] = field(default_factory=list)


@dataclass
class SimResult:
    config: SimConfig
    series: list[dict[str, float]]  # every record_s: time, demand, pods, queue, ...
    requests: list[dict[str, float]]  # arrived, latency_ms, k_planned, k_used, met
    pods: list[tuple[float, float]]  # (created, deleted or the end) of every pod
    oracle: list[int]  # oracle pods per minute

    def pod_hours(self, start: float = 0.0, end: float = math.inf) -> float:
        """GPU-holding pod-hours within [start, end)."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.pods) / 3600

    def oracle_pod_hours(self, start: float = 0.0, end: float = math.inf) -> float:
        total = 0.0
        for m, n in enumerate(self.oracle):
            a, b = m * 60.0, min((m + 1) * 60.0, self.config.duration_s)
            total += n * max(0.0, min(b, end) - max(a, start))
        return total / 3600

    def summary(self, name: str, start: float, end: float) -> dict[str, Any]:
        """Budget attainment, k, pods and pod-hours of the requests and time in [start, end)."""
        k = self.config.k
        reqs = [r for r in self.requests if start <= r["arrived"] < end]
        pts = [p for p in self.series if start <= p["t"] < end]
        n = len(reqs)
        hours, oracle_hours = self.pod_hours(start, end), self.oracle_pod_hours(start, end)

        def mean(values: Sequence[float]) -> float:
            return sum(values) / len(values) if values else math.nan

        return {
            "phase": name,
            "start_s": start,
            "end_s": end,
            "requests": n,
            "attainment": mean([r["met"] for r in reqs]),
            "k_granted": mean([r["k_planned"] / k for r in reqs]),
            "k_voted": mean([r["k_used"] / k for r in reqs]),
            "mean_ready": mean([p["ready"] for p in pts]),
            "mean_oracle": mean([p["oracle"] for p in pts]),
            "max_pods": max((p["desired"] for p in pts), default=0),
            "pod_hours": hours,
            "oracle_pod_hours": oracle_hours,
            "cost_ratio": hours / oracle_hours if oracle_hours else math.nan,
            "p99_latency_ms": _p99([r["latency_ms"] for r in reqs]),
        }

    def phase_table(self) -> list[dict[str, Any]]:
        return [self.summary(*phase) for phase in self.config.phases()]

    def overall(self) -> dict[str, Any]:
        return self.summary("all", 0.0, self.config.duration_s)


def _p99(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(0.99 * len(ordered)))) - 1]


def workload(cfg: SimConfig) -> list[Request]:
    """The requests of the profile: arrival times and every sample's tokens (full k)."""
    rng = random.Random(cfg.seed)
    lam_max = cfg.base_rate * max(1.0, cfg.peak)
    out: list[Request] = []
    t = -cfg.warmup_s + (rng.expovariate(lam_max) if lam_max > 0 else math.inf)
    mu = math.log(cfg.tokens_median)
    while t < cfg.duration_s:  # thinning: accepted with rate(t) / lam_max
        if rng.random() < cfg.base_rate * cfg.multiple(t) / lam_max:
            tokens = [
                max(1.0, round(rng.lognormvariate(mu, cfg.tokens_sigma))) for _ in range(cfg.k)
            ]
            out.append(Request(arrived=t, k=cfg.k, tokens=tokens))
        t += rng.expovariate(lam_max)
    return out


def simulate(cfg: SimConfig) -> SimResult:
    """Run the whole profile; deterministic for a given config (seed included)."""
    spec = HpaSpec.from_values(cfg.autoscaling)
    overrides: dict[str, Any] = {"sync_s": cfg.sync_s}
    if cfg.max_replicas:
        overrides["max_replicas"] = cfg.max_replicas
    hpa = Hpa(HpaSpec(**{**spec.__dict__, **overrides}))
    planner = KPlanner(LatencyWindow())
    cutoff_s = MARGINS.vote_cutoff_ms(cfg.budget_ms) / 1000
    window_s = cfg.window_s
    engine = cfg.engine
    pod_ids = itertools.count()
    pods: dict[int, Pod] = {}
    start = -cfg.warmup_s
    for _ in range(cfg.initial_replicas):
        pods[next(pod_ids)] = Pod(created=start, ready_at=start, engine=engine, v_at=start)
    gone: list[tuple[float, float]] = []  # (created, deleted) of deleted pods
    queue: deque[int] = deque()  # job ids (cancelled ones are skipped)
    queued = 0
    # job -> (request index, pod id or -1 while queued, service start)
    jobs: dict[int, tuple[int, int, float]] = {}
    requests = workload(cfg)
    tokens_by_minute = [0.0] * math.ceil(cfg.duration_s / 60)
    for req in requests:
        if req.arrived >= 0:
            tokens_by_minute[int(req.arrived // 60)] += sum(req.tokens)
    oracle = oracle_pods(cfg, tokens_by_minute)
    deficit = cfg.deficit
    cut: deque[tuple[float, int]] = deque()  # (time, samples the planner cut)
    served: deque[tuple[float, float]] = deque()  # (end time, service seconds)
    events: list[tuple[float, int, str, int, int]] = []  # (time, order, kind, payload, version)
    order = itertools.count()
    job_ids = itertools.count()
    series: list[dict[str, float]] = []

    def push(t: float, kind: str, payload: int = 0, version: int = 0) -> None:
        heapq.heappush(events, (t, next(order), kind, payload, version))

    def schedule(pod_id: int) -> None:
        pod = pods[pod_id]
        pod.version += 1
        end = pod.next_end()
        if end is not None:
            push(end[0], "end", pod_id, pod.version)

    def delete(pod_id: int, now: float) -> None:
        pod = pods.pop(pod_id)
        gone.append((pod.created, now))

    def ready_ids(now: float) -> list[int]:
        return [i for i, p in pods.items() if not p.removed and p.ready_at <= now]

    def in_flight() -> int:
        return sum(p.running for p in pods.values())

    def deficit_pods(now: float, window: float) -> float:
        """rate(k deficit) x mean sample time / capacity over the window: the pods the cut
        samples would have kept busy (Little's law), as the adapter rule computes it."""
        while cut and cut[0][0] <= now - window:
            cut.popleft()
        while served and served[0][0] <= now - window:
            served.popleft()
        if not served:
            return 0.0
        sample_s = sum(d for _, d in served) / len(served)
        return sum(n for _, n in cut) / window * sample_s / cfg.capacity

    def dispatch(now: float) -> None:
        nonlocal queued
        free = [i for i in ready_ids(now) if pods[i].running < cfg.capacity]
        touched: set[int] = set()
        while queue and free:
            job = queue.popleft()
            if job not in jobs:
                continue  # cancelled while queued
            pod_id = min(free, key=lambda i: pods[i].running)
            req_i, _, _ = jobs[job]
            req = requests[req_i]
            jobs[job] = (req_i, pod_id, now)
            queued -= 1
            pods[pod_id].add(now, job, req.tokens[req.jobs.index(job)])
            touched.add(pod_id)
            if pods[pod_id].running >= cfg.capacity:
                free.remove(pod_id)
        for pod_id in touched:
            schedule(pod_id)

    def finish(now: float, req_i: int) -> None:
        nonlocal queued
        req = requests[req_i]
        req.finished = now
        touched: set[int] = set()
        for job in req.jobs:
            if job in jobs:  # cancel: drop from the queue or free the slot
                _, pod_id, _ = jobs.pop(job)
                if pod_id < 0:
                    queued -= 1
                else:
                    pods[pod_id].drop(now, job)
                    touched.add(pod_id)
        for pod_id in touched:
            if pods[pod_id].removed and not pods[pod_id].running:
                delete(pod_id, now)
            else:
                schedule(pod_id)
        dispatch(now)

    for i, req in enumerate(requests):
        push(req.arrived, "arrive", i)
    s = start
    while s < cfg.duration_s:
        push(s, "sync")
        s += cfg.sync_s
    if window_s > 0:
        for second in range(math.floor(start), int(cfg.duration_s) + 1):
            push(float(second), "tick")
    r = 0.0
    while r <= cfg.duration_s:
        push(r, "record")
        r += cfg.record_s

    while events:
        now, _, kind, payload, version = heapq.heappop(events)
        if kind == "arrive":
            capacity = len(ready_ids(now)) * cfg.capacity
            busy = in_flight() + queued
            plan = planner.plan(
                cfg.k,
                cfg.budget_ms,
                capacity - busy,
                capacity=capacity,
                margin_ms=MARGINS.vote_margin_ms(cfg.budget_ms),
            )
            req = requests[payload]
            req.k = plan.k_planned
            if deficit is not None and plan.deficit:
                cut.append((now, plan.deficit))
            for _ in range(plan.k_planned):
                job = next(job_ids)
                jobs[job] = (payload, -1, now)
                req.jobs.append(job)
                queue.append(job)
                queued += 1
            push(now + cutoff_s, "cutoff", payload)
            dispatch(now)
        elif kind == "end":
            pod = pods.get(payload)
            if pod is None or version != pod.version:
                continue  # the batch changed since this end was scheduled
            job = pod.pop_end(now)
            req_i, _, started = jobs.pop(job)
            planner.window.observe((now - started) * 1000)  # service time, as the pool does
            if deficit is not None:
                served.append((now, now - started))
            req = requests[req_i]
            req.done += 1
            if pod.removed and not pod.running:
                delete(payload, now)
            else:
                schedule(payload)
            if req.finished is None and (req.done == req.k or now - req.arrived >= cutoff_s - 1e-9):
                finish(now, req_i)
            dispatch(now)
        elif kind == "cutoff":
            req = requests[payload]
            if req.finished is None and req.done > 0:
                finish(now, payload)
        elif kind == "ready":
            dispatch(now)
        elif kind == "tick":  # each ready pod's gauge, 1 s apart, for avg_over_time
            ready = ready_ids(now)
            share = queued / len(ready) if ready else 0.0
            for i in ready:
                gauges = pods[i].gauges
                gauges.append((now, (pods[i].running + share) / cfg.capacity))
                while gauges[0][0] <= now - window_s:
                    gauges.popleft()
        elif kind == "sync":
            active = [i for i, p in pods.items() if not p.removed]
            ready = [i for i in active if pods[i].ready_at <= now]
            share = queued / len(ready) if ready else 0.0
            values = [(pods[i].running + share) / cfg.capacity for i in ready]
            if window_s > 0:  # a pod's mean over the window (only since it became ready)
                values = [
                    sum(v for _, v in pods[i].gauges) / len(pods[i].gauges)
                    if pods[i].gauges
                    else value
                    for i, value in zip(ready, values, strict=True)
                ]
            external: list[tuple[float, float]] = []
            if deficit is not None:
                combine, deficit_window = deficit
                extra = deficit_pods(now, deficit_window)
                if combine == "add" and ready:  # each pod's metric carries its share
                    values = [v + extra / len(ready) for v in values]
                elif combine == "separate":  # an External metric, pods at the same target
                    external.append((extra, hpa.spec.target))
            new = hpa.sync(
                now, len(active), values, missing=len(active) - len(ready), external=external
            )
            if new > len(active):
                for _ in range(new - len(active)):
                    pods[next(pod_ids)] = Pod(
                        created=now, ready_at=now + cfg.start_delay_s, engine=engine
                    )
                push(now + cfg.start_delay_s, "ready")
            elif new < len(active):
                # not-ready pods first, then the newest
                victims = sorted(
                    active, key=lambda i: (pods[i].ready_at <= now, -pods[i].created, -i)
                )
                for pod_id in victims[: len(active) - new]:
                    pods[pod_id].removed = True
                    if not pods[pod_id].running:
                        delete(pod_id, now)
        elif kind == "record":
            active = [p for p in pods.values() if not p.removed]
            minute = min(int(now // 60), len(oracle) - 1)
            series.append(
                {
                    "t": now,
                    "demand": cfg.multiple(now),
                    "desired": len(active),
                    "ready": len([p for p in active if p.ready_at <= now]),
                    "gpu_pods": len(pods),
                    "oracle": oracle[minute],
                    "queue": queued,
                    "in_flight": in_flight(),
                }
            )
    end = cfg.duration_s
    spans = gone + [(p.created, end) for p in pods.values()]
    rows = [_row(req, cfg.budget_ms) for req in requests if req.arrived >= 0]
    return SimResult(cfg, series, rows, spans, oracle)


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
