"""`grm bench autoscale`: the sampler pool's HPA through a 1x-10x-1x surge, warm and cold pods.

A discrete-event simulation (grm_dev.bench.poolsim: pure Python, deterministic for a seed, a
simulated hour in about a second) of requests asking for k samples under a latency budget,
granted k by the real k planner (grm.core.planner), served by GPU engines that batch (a
roofline fitted to a published vLLM concurrency sweep, scaled to DeepSeek-GRM-27B), with the
HPA (grm_dev.bench.hpa) scaling the pool on grm_sampler_demand_ratio. One run compares the
chart's sampler.autoscaling defaults with the previous defaults and other candidates, each with
warm pods (weights on the model cache) and cold ones (downloaded first), against an oracle (the
fewest ready pods per minute that serve every request's full k within budget). Prints a
comparison table and the chart defaults' per-phase tables; writes JSON (every assumption, the
engine fit, the tables, the time series) and a PNG.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grm_dev.bench.hpa import CHART_AUTOSCALING
from grm_dev.bench.poolsim import (
    ASSUMPTIONS,
    COLD_START_S,
    GEMMA_2_27B_PARAMS,
    INFERENCEBENCH_H100_LLAMA8B,
    LLAMA_3_1_8B_PARAMS,
    SWEEP_SOURCE,
    SWEPT_ENGINE,
    WARM_START_S,
    SimConfig,
    SimResult,
    fit_concurrency,
    simulate,
)
from grm_dev.bench.report import table, write_json

# Done when (issue 21): >= 99 % of budgets met with pod-hours <= 1.5 x the oracle's.
ATTAINMENT_GOAL = 0.99
COST_GOAL = 1.5


def _variant(
    target: str,
    window: str,
    down_window_s: int,
    down_percent: int,
    up_window_s: int = 0,
) -> dict[str, Any]:
    """The chart's values with another metric target/window and scale-down/up windows, and
    without the k deficit."""
    values = copy.deepcopy(CHART_AUTOSCALING)
    values["metric"].update(targetAverageValue=target, window=window)
    values["deficit"] = {"enabled": False}
    values["behavior"]["scaleUp"]["stabilizationWindowSeconds"] = up_window_s
    values["behavior"]["scaleDown"] = {
        "stabilizationWindowSeconds": down_window_s,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": down_percent, "periodSeconds": 60}],
    }
    return values


# The chart's sampler.autoscaling before this comparison (instant gauges, 10 calm minutes,
# then one pod per 2 minutes).
PREVIOUS = copy.deepcopy(CHART_AUTOSCALING)
PREVIOUS["metric"].update(targetAverageValue="800m", window="")
PREVIOUS["deficit"] = {"enabled": False}
PREVIOUS["behavior"] = {
    "scaleUp": copy.deepcopy(CHART_AUTOSCALING["behavior"]["scaleUp"]),
    "scaleDown": {
        "stabilizationWindowSeconds": 600,
        "selectPolicy": "Min",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
    },
}
PREVIOUS["behavior"]["scaleUp"]["stabilizationWindowSeconds"] = 0


def _deficit(target: str, combine: str = "") -> dict[str, Any]:
    """The chart's values with another target, without the k deficit (combine "") or with it
    `add`ed to the demand metric or as a `separate` metric (see poolsim.SimConfig.deficit)."""
    values = copy.deepcopy(CHART_AUTOSCALING)
    values["metric"]["targetAverageValue"] = target
    values["deficit"] = (
        {"enabled": True, "window": "1m", "combine": combine} if combine else {"enabled": False}
    )
    return values


CANDIDATES: dict[str, dict[str, Any]] = {
    "previous defaults": PREVIOUS,
    "instant, down 120s 50%/min": _variant("800m", "", 120, 50),
    "1m, down 300s 50%/min": _variant("800m", "1m", 300, 50),
    "2m, down 60s 50%/min": _variant("800m", "2m", 60, 50),
    "1m target 1, down 120s": _variant("1", "1m", 120, 50),
    # the chart's defaults before the k deficit counted (target 800m), and with it
    "800m, no deficit": _deficit("800m"),
    "1, no deficit": _deficit("1"),
    "800m, deficit metric": _deficit("800m", "separate"),
    "800m, deficit added": _deficit("800m", "add"),
    "900m, deficit added": _deficit("900m", "add"),
    "chart defaults": CHART_AUTOSCALING,  # 1, deficit added
}


def add_args(p: argparse.ArgumentParser) -> None:
    d = SimConfig()
    p.add_argument("--seeds", default="1,2,3", help="comma-separated; the first gets the tables")
    p.add_argument("--base-rate", type=float, default=d.base_rate, help="requests/s at 1x")
    p.add_argument("--peak", type=float, default=d.peak, help="demand multiple at the peak")
    p.add_argument("--before-s", type=float, default=d.before_s, help="1x before the ramp")
    p.add_argument("--ramp-s", type=float, default=d.ramp_s, help="each ramp's length")
    p.add_argument("--peak-s", type=float, default=d.peak_s, help="time at the peak")
    p.add_argument("--after-s", type=float, default=d.after_s, help="1x after the ramp down")
    p.add_argument("--warmup-s", type=float, default=d.warmup_s, help="1x before t=0, unreported")
    p.add_argument("--k", type=int, default=d.k, help="k each request asks for")
    p.add_argument("--budget-ms", type=float, default=d.budget_ms, help="latency budget")
    p.add_argument("--capacity", type=int, default=d.capacity, help="samples at once per pod")
    p.add_argument("--t1-ms", type=float, default=round(d.t1_ms, 2), help="TPOT of 1 sequence")
    p.add_argument(
        "--tmax-tok-s", type=float, default=round(d.tmax_tok_s, 1), help="engine's peak tok/s"
    )
    p.add_argument("--tokens-median", type=float, default=d.tokens_median, help="per sample")
    p.add_argument("--tokens-sigma", type=float, default=d.tokens_sigma, help="lognormal sigma")
    p.add_argument("--warm-start-s", type=float, default=WARM_START_S, help="cached weights")
    p.add_argument("--cold-start-s", type=float, default=COLD_START_S, help="download first")
    p.add_argument("--initial-replicas", type=int, default=d.initial_replicas)
    p.add_argument(
        "--max-replicas", type=int, default=200, help="overrides maxReplicas (0: the values')"
    )
    p.add_argument("--sync-s", type=float, default=d.sync_s, help="HPA sync period")
    p.add_argument(
        "--candidates",
        choices=["all", "chart", "deficit"],
        default="all",
        help="all: the comparison; chart: the chart's defaults only; deficit: the chart's "
        "defaults and the candidates that count the k deficit as demand",
    )
    p.add_argument(
        "--starts", default="warm,cold", help="comma-separated pod starts to run: warm, cold"
    )
    p.add_argument("--out", default="bench-results")


def config(
    args: argparse.Namespace, seed: int, start_s: float, values: dict[str, Any]
) -> SimConfig:
    names = {f.name for f in dataclasses.fields(SimConfig)}
    names -= {"seed", "start_delay_s", "autoscaling", "record_s"}
    return SimConfig(
        seed=seed,
        start_delay_s=start_s,
        autoscaling=values,
        **{n: getattr(args, n) for n in names},
    )


def _row(name: str, start: str, results: Sequence[SimResult]) -> dict[str, Any]:
    """One candidate with one kind of start over the seeds: means, and the worst seed."""
    overall = [r.overall() for r in results]
    peak = [r.phase_table()[2] for r in results]
    n = len(results)
    return {
        "candidate": name,
        "start": start,
        "seeds": n,
        "attainment": sum(o["attainment"] for o in overall) / n,
        "attainment_worst": min(o["attainment"] for o in overall),
        "k_granted": sum(o["k_granted"] for o in overall) / n,
        "peak_k_granted": sum(p["k_granted"] for p in peak) / n,
        "mean_ready": sum(o["mean_ready"] for o in overall) / n,
        "mean_oracle": sum(o["mean_oracle"] for o in overall) / n,
        "pod_hours": sum(o["pod_hours"] for o in overall) / n,
        "oracle_pod_hours": sum(o["oracle_pod_hours"] for o in overall) / n,
        "cost_ratio": sum(o["cost_ratio"] for o in overall) / n,
        "cost_ratio_worst": max(o["cost_ratio"] for o in overall),
        "max_pods": max(o["max_pods"] for o in overall),
    }


def plot(path: Path, runs: dict[str, SimResult], bin_s: float = 60.0) -> None:
    """Per start (columns): pods vs the oracle and demand; k granted and attainment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(runs), figsize=(5.5 * len(runs), 6.5), sharex=True)
    if len(runs) == 1:
        axes = [[axes[0]], [axes[1]]]
    for col, (title, result) in enumerate(runs.items()):
        top, low = axes[0][col], axes[1][col]
        series = result.series
        ts = [p["t"] / 60 for p in series]
        top.step(ts, [p["gpu_pods"] for p in series], where="post", label="pods holding a GPU")
        top.step(ts, [p["ready"] for p in series], where="post", label="ready pods")
        top.step(ts, [p["oracle"] for p in series], "k--", where="post", label="oracle pods")
        top.set_title(title, fontsize=10)
        top.set_ylabel("pods")
        top.legend(loc="upper right", fontsize=8)
        bins: dict[int, list[dict[str, float]]] = {}
        for r in result.requests:
            bins.setdefault(int(r["arrived"] // bin_s), []).append(r)
        keys = sorted(bins)
        xs = [(b + 0.5) * bin_s / 60 for b in keys]
        k = result.config.k
        low.plot(xs, [sum(r["k_planned"] for r in bins[b]) / len(bins[b]) / k for b in keys],
                 "b-", label="k granted / k")  # fmt: skip
        low.plot(xs, [sum(r["met"] for r in bins[b]) / len(bins[b]) for b in keys], "g-",
                 label="budget attainment")  # fmt: skip
        low.plot(ts, [p["demand"] / result.config.peak for p in series], "k:",
                 label="demand / peak")  # fmt: skip
        low.set_ylim(0, 1.05)
        low.set_xlabel("minutes")
        low.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _phase_rows(result: SimResult) -> list[list[Any]]:
    rows = []
    for p in [*result.phase_table(), result.overall()]:
        rows.append(
            [
                p["phase"],
                p["requests"],
                p["attainment"],
                p["k_granted"],
                p["mean_ready"],
                p["mean_oracle"],
                p["pod_hours"],
                p["oracle_pod_hours"],
                p["cost_ratio"],
                p["max_pods"],
            ]
        )
    return rows


PHASE_HEADERS = [
    "phase", "requests", "attain", "k granted/k", "ready", "oracle", "pod-h", "oracle pod-h",
    "pod-h/oracle", "max pods",
]  # fmt: skip


COMPARISON_KEYS = [
    "candidate", "start", "attainment", "attainment_worst", "k_granted", "peak_k_granted",
    "mean_ready", "mean_oracle", "pod_hours", "oracle_pod_hours", "cost_ratio",
    "cost_ratio_worst", "max_pods",
]  # fmt: skip


async def run(args: argparse.Namespace) -> dict[str, Any]:
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    every = {"warm": args.warm_start_s, "cold": args.cold_start_s}
    picked = [s.strip() for s in str(args.starts).split(",") if s.strip()]
    if not picked or set(picked) - set(every):
        raise SystemExit(f"--starts: a comma-separated list of {', '.join(every)}")
    starts = {name: every[name] for name in picked}
    names = {
        "all": list(CANDIDATES),
        "chart": ["chart defaults"],
        "deficit": [n for n in CANDIDATES if "deficit" in n or n == "chart defaults"],
    }[args.candidates]
    first = config(args, seeds[0], args.warm_start_s, CHART_AUTOSCALING)
    engine = first.engine
    print(
        f"Sampler pool under the HPA (simulated): demand 1x -> {first.peak:g}x -> 1x, "
        f"{first.base_rate:g} req/s at 1x, k={first.k}, budget {first.budget_ms / 1000:g} s, "
        f"{first.capacity} samples at once per pod; engine TPOT(b) = max({engine.t1_ms:.1f} ms, "
        f"b / {engine.tmax_tok_s:.0f} tok/s) (knee {engine.knee:.1f}); tokens/sample lognormal "
        f"median {first.tokens_median:g}; pods ready {args.warm_start_s:g} s (warm) or "
        f"{args.cold_start_s:g} s (cold) after creation; "
        f"maxReplicas {args.max_replicas or 'as set'}; "
        f"oracle at {fit_concurrency(first)} samples/pod; seeds {seeds}"
    )
    rows: list[dict[str, Any]] = []
    chart_runs: dict[str, SimResult] = {}
    for name in names:
        for start, start_s in starts.items():
            results = [simulate(config(args, s, start_s, CANDIDATES[name])) for s in seeds]
            rows.append(_row(name, start, results))
            if name == "chart defaults":
                chart_runs[f"chart defaults, {start} pods ({start_s:g} s start)"] = results[0]
    headers = [
        "candidate", "start", "attain", "worst", "k granted/k", "peak k/k", "ready", "oracle",
        "pod-h", "oracle pod-h", "pod-h/oracle", "worst", "max pods",
    ]  # fmt: skip
    print(
        table(
            headers,
            [[r[key] for key in COMPARISON_KEYS] for r in rows],
        )
    )
    phases: dict[str, Any] = {}
    for title, result in chart_runs.items():
        print(f"\n{title}, seed {seeds[0]}:")
        print(table(PHASE_HEADERS, _phase_rows(result)))
        phases[title] = [*result.phase_table(), result.overall()]
    checks = {
        r["start"]: {
            "attainment_worst": r["attainment_worst"],
            "cost_ratio_worst": r["cost_ratio_worst"],
            "ok": r["attainment_worst"] >= ATTAINMENT_GOAL and r["cost_ratio_worst"] <= COST_GOAL,
        }
        for r in rows
        if r["candidate"] == "chart defaults"
    }
    for start, c in checks.items():
        print(
            f"chart defaults, {start}: worst attainment {c['attainment_worst']:.1%} "
            f"(goal >= {ATTAINMENT_GOAL:.0%}), worst pod-hours/oracle "
            f"{c['cost_ratio_worst']:.2f} (goal <= {COST_GOAL:g}): "
            f"{'ok' if c['ok'] else 'missed'}"
        )
    payload = {
        "settings": {**dataclasses.asdict(first), "seeds": seeds, "starts": starts},
        "assumptions": ASSUMPTIONS,
        "engine": {
            "source": SWEEP_SOURCE,
            "sweep": [
                {"concurrency": b, "tok_s": tok, "tpot_ms": tpot}
                for b, tok, tpot in INFERENCEBENCH_H100_LLAMA8B
            ],
            "fit": dataclasses.asdict(SWEPT_ENGINE),
            "scale": GEMMA_2_27B_PARAMS / LLAMA_3_1_8B_PARAMS,
            "served": {**dataclasses.asdict(engine), "knee": engine.knee},
            "oracle_concurrency": fit_concurrency(first),
        },
        "candidates": {name: CANDIDATES[name] for name in names},
        "comparison": rows,
        "phases": phases,
        "checks": checks,
        "series": {
            title: [p for p in result.series if p["t"] % 30 == 0]
            for title, result in chart_runs.items()
        },
    }
    path = write_json(args.out, "autoscale", payload)
    png = Path(args.out) / "autoscale.png"
    plot(png, chart_runs)
    print(f"wrote {path} and {png}")
    return payload
