"""`grm bench fanout`: Score latency(k)/latency(1) through the suite with enough capacity.

The same setup as `overhead` (scripted `grm dev-tgi` at a fixed latency, `grm up --backend tgi`,
child processes on loopback), with the dev server's `--max-concurrent-requests` well above the
largest k. The k values are interleaved per repetition (so drift hits all alike); every call
has a new seed (no cache hits). Ratios use the p50 (and mean) of k=1 measured in this run.
Beside the suite, the same k samples go straight to the dev server from the caller (the
`overhead` baselines: `direct`, one pooled session; `stock`, text_generation's AsyncClient),
interleaved with it, so the suite's fan-out reads against what a caller's own fan-out costs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from grm.client import AsyncGrmClient
from grm_dev.bench import suite
from grm_dev.bench.overhead import Direct, DirectPooled, _direct_timed, score_suite
from grm_dev.bench.report import Panel, plot, table, write_json


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ks", default="1,2,4,8,16,32", help="comma-separated k values (1 added)")
    p.add_argument("--reps", type=int, default=40, help="timed repetitions per k")
    p.add_argument("--warmup", type=int, default=3, help="untimed repetitions per k")
    p.add_argument("--latency-ms", type=float, default=50.0, help="scripted server latency")
    p.add_argument("--samplers", type=int, default=2, help="sampler processes in the suite")
    p.add_argument("--out", default="bench-results")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ks = sorted({1, *suite.parse_ks(args.ks)})
    paths = ("suite", "direct", "stock")
    times: dict[str, dict[str, list[float]]] = {p: {str(k): [] for k in ks} for p in paths}
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            suite.dev_tgi(
                Path(tmp), latency_ms=args.latency_ms, max_concurrent=max(256, 4 * max(ks))
            ) as url,
            suite.suite(Path(tmp), url, samplers=args.samplers) as address,
            AsyncGrmClient(address, timeout=120) as client,
            DirectPooled(url) as pooled,
            Direct(url) as stock,
        ):
            for rep in range(args.warmup + args.reps):
                for k in ks if rep % 2 == 0 else list(reversed(ks)):
                    seed = 7 + k * 1_000_000 + rep
                    shift = rep % len(paths)
                    for path in paths[shift:] + paths[:shift]:
                        if path == "suite":
                            elapsed = await score_suite(client, k=k, seed=seed)
                        else:
                            baseline = pooled if path == "direct" else stock
                            elapsed = await _direct_timed(baseline, k=k, seed=seed)
                        if rep >= args.warmup:
                            times[path][str(k)].append(elapsed)
    by_path = {}
    for path in paths:
        stats = {k: suite.summary_ms(ts) for k, ts in times[path].items()}
        base = stats["1"]
        by_path[path] = {
            k: {
                **s,
                "ratio_p50": s["p50_ms"] / base["p50_ms"],
                "ratio_mean": s["mean_ms"] / base["mean_ms"],
            }
            for k, s in stats.items()
        }
    results = by_path["suite"]
    direct, stock_r = by_path["direct"], by_path["stock"]
    rows = [
        [k, r["p50_ms"], r["p99_ms"], r["ratio_p50"], direct[k]["p50_ms"],
         direct[k]["ratio_p50"], stock_r[k]["p50_ms"], stock_r[k]["ratio_p50"],
         r["p50_ms"] / direct[k]["p50_ms"]]
        for k, r in results.items()
    ]  # fmt: skip
    print(
        f"Score latency vs k through the suite ({args.samplers} samplers) and straight from "
        f"the caller (direct: one pooled session; stock: AsyncClient); scripted TGI at "
        f"{args.latency_ms} ms; {args.reps} repetitions per k and path, interleaved"
    )
    print(
        table(
            ["k", "suite p50", "suite p99", "suite /k=1", "direct p50", "direct /k=1",
             "stock p50", "stock /k=1", "suite/direct"],
            rows,
        )
    )  # fmt: skip
    top = str(max(ks))
    if top == "32":
        verdict = "met" if results[top]["ratio_p50"] <= 1.2 else "missed"
        print(f"target p50 ratio <= 1.2 at k=32: {results[top]['ratio_p50']:.3f} ({verdict})")
    png = plot(
        args.out,
        "fanout",
        [
            Panel(
                f"Fan-out: latency(k) / latency(1), TGI at {args.latency_ms:g} ms",
                ks,
                {
                    f"{path} p50 ratio": [by_path[path][str(k)]["ratio_p50"] for k in ks]
                    for path in paths
                },
                xlabel="k (samples per Score)",
                ylabel="ratio to k=1",
                targets={"target 1.2 (k=32)": 1.2},
                log2_x=True,
            ),
            Panel(
                "Score latency vs k",
                ks,
                {
                    f"{path} {q}": [by_path[path][str(k)][f"{q}_ms"] for k in ks]
                    for path in paths
                    for q in ("p50", "p99")
                },
                xlabel="k (samples per Score)",
                ylabel="latency (ms)",
                log2_x=True,
            ),
        ],
    )
    payload = {
        "ks": ks,
        "reps": args.reps,
        "warmup": args.warmup,
        "latency_ms": args.latency_ms,
        "samplers": args.samplers,
        "results": results,
        "direct": direct,
        "stock": stock_r,
        "times_s": times["suite"],
        "times_s_by_path": times,
        "plot": png.name if png else None,
    }
    path = write_json(args.out, "fanout", payload)
    print(f"wrote {path}")
    return payload
