"""`grm bench autoscale`: the sampler pool under the chart's HPA through a 1x-10x-1x surge.

A discrete-event simulation (grm_dev.bench.poolsim: pure Python, deterministic for a seed, runs
in seconds) of requests asking for k samples under a latency budget, granted k by the real
k planner (grm.core.planner), served by per-pod slots, with the HPA (grm_dev.bench.hpa) scaling
the pool on grm_sampler_demand_ratio with the chart's target, tolerance, stabilization
windows, policies and min/max replicas, and a pod start delay. Reports per phase (before,
ramp up, peak, ramp down, after): budget attainment, mean k, replicas; writes JSON (with
every assumption of the model) and a PNG (replicas, k, queue and attainment over time).

Assumptions (also in the JSON's `assumptions`): see grm_dev.bench.poolsim.ASSUMPTIONS.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from grm_dev.bench.poolsim import ASSUMPTIONS, SimConfig, SimResult, simulate
from grm_dev.bench.report import table, write_json


def add_args(p: argparse.ArgumentParser) -> None:
    d = SimConfig()
    p.add_argument("--seed", type=int, default=d.seed, help="seeds arrivals and service times")
    p.add_argument("--base-rate", type=float, default=d.base_rate, help="requests/s at 1x")
    p.add_argument("--peak", type=float, default=d.peak, help="demand multiple at the peak")
    p.add_argument("--before-s", type=float, default=d.before_s, help="1x before the ramp")
    p.add_argument("--ramp-s", type=float, default=d.ramp_s, help="each ramp's length")
    p.add_argument("--peak-s", type=float, default=d.peak_s, help="time at the peak")
    p.add_argument("--after-s", type=float, default=d.after_s, help="1x after the ramp down")
    p.add_argument("--k", type=int, default=d.k, help="k each request asks for")
    p.add_argument("--budget-ms", type=float, default=d.budget_ms, help="latency budget")
    p.add_argument("--capacity", type=int, default=d.capacity, help="samples at once per pod")
    p.add_argument("--service-ms", type=float, default=d.service_ms, help="median sample time")
    p.add_argument("--service-sigma", type=float, default=d.service_sigma, help="lognormal")
    p.add_argument("--start-delay-s", type=float, default=d.start_delay_s, help="pod start")
    p.add_argument("--initial-replicas", type=int, default=d.initial_replicas)
    p.add_argument("--sync-s", type=float, default=d.sync_s, help="HPA sync period")
    p.add_argument(
        "--metric-window-s",
        type=float,
        default=d.metric_window_s,
        help="0: the metric at the sync instant (the chart's default); else its moving mean "
        "(the chart's sampler.autoscaling.metric.window, e.g. 60 for 1m)",
    )
    p.add_argument("--out", default="bench-results")


def config(args: argparse.Namespace) -> SimConfig:
    names = {f.name for f in dataclasses.fields(SimConfig)} - {"autoscaling", "record_s"}
    return SimConfig(**{n: getattr(args, n) for n in names})


def plot(path: Path, result: SimResult, bin_s: float = 30.0) -> None:
    """Three stacked panels: replicas and demand, k granted and attainment, queue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result.series
    ts = [p["t"] / 60 for p in series]
    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    top.step(ts, [p["desired"] for p in series], where="post", label="desired replicas")
    top.step(ts, [p["ready"] for p in series], where="post", label="ready replicas")
    top.plot(ts, [p["demand"] for p in series], "k:", label="demand (x base)")
    top.set_ylabel("pods / demand")
    top.legend(loc="upper right")
    bins: dict[int, list[dict[str, float]]] = {}
    for r in result.requests:
        bins.setdefault(int(r["arrived"] // bin_s), []).append(r)
    xs = [(b + 0.5) * bin_s / 60 for b in sorted(bins)]
    mid.plot(xs, [sum(r["k_used"] for r in bins[b]) / len(bins[b]) for b in sorted(bins)], "b-")
    mid.set_ylabel("mean k used", color="b")
    mid.set_ylim(0, result.config.k * 1.05)
    twin = mid.twinx()
    twin.plot(xs, [sum(r["met"] for r in bins[b]) / len(bins[b]) for b in sorted(bins)], "g-")
    twin.set_ylabel("budget attainment", color="g")
    twin.set_ylim(0, 1.05)
    low.plot(ts, [p["queue"] for p in series], label="queued samples")
    low.plot(ts, [p["in_flight"] for p in series], label="samples in flight")
    low.set_ylabel("samples")
    low.set_xlabel("minutes")
    low.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = config(args)
    result = simulate(cfg)
    phases = result.phase_table()
    n = len(result.requests)
    overall = {
        "requests": n,
        "attainment": sum(r["met"] for r in result.requests) / n if n else 0.0,
        "mean_k": sum(r["k_used"] for r in result.requests) / n if n else 0.0,
        "max_desired": max((p["desired"] for p in result.series), default=0),
    }
    print(
        f"Sampler pool under the chart's HPA (simulated): demand 1x -> {cfg.peak:g}x -> 1x, "
        f"{cfg.base_rate:g} req/s at 1x, k={cfg.k}, budget {cfg.budget_ms:g} ms, "
        f"{cfg.capacity} slots/pod, {cfg.service_ms:g} ms median sample, "
        f"pods ready {cfg.start_delay_s:g} s after creation"
    )
    headers = ["phase", "from s", "to s", "requests", "attain", "mean k", "mean ready", "max pods"]
    rows = [
        [
            p["phase"],
            p["start_s"],
            p["end_s"],
            p["requests"],
            p["attainment"],
            p["mean_k"],
            p["mean_ready"],
            p["max_desired"],
        ]
        for p in phases
    ]
    print(table(headers, rows))
    print(
        f"overall: {n} requests, attainment {overall['attainment']:.1%}, "
        f"mean k {overall['mean_k']:.1f}"
    )
    settings = dataclasses.asdict(cfg)
    payload = {
        "settings": settings,
        "assumptions": ASSUMPTIONS,
        "phases": phases,
        "overall": overall,
        "series": result.series,
    }
    path = write_json(args.out, "autoscale", payload)
    png = Path(args.out) / "autoscale.png"
    plot(png, result)
    print(f"wrote {path} and {png}")
    return payload
