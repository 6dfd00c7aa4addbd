"""`grm bench planner`: latency-budget attainment and the k the planner grants, per budget.

Starts the scripted `grm dev-tgi` at a fixed per-request latency with a bounded number of
generations at once, and `grm up --backend tgi` against it (child processes on loopback; each
sampler's TGI in-flight bound is the dev server's bound divided among the samplers, so the
capacity the aggregator plans with is the dev server's real one). After a few untimed warm-up
requests (the planner needs measured latencies), it sends `--requests` mixed requests: a seeded
mix of latency budgets and k, sent `--concurrency` at a time, each with a fresh seed (no cache
hit). Per budget and overall it reports:

- attainment: the share whose client-measured latency is within budget + `--margin-ms`, and
  the share the server counted as met (the reply's `budget_met`);
- mean k_used and k_planned;
- the feasible maximum k: min(k, floor(budget / latency) × slots), with slots the pool's
  capacity (the dev server's bound) — what the budget allows a request that has the pool to
  itself; with `--concurrency` > 1 requests share the pool, so `k_share` (slots divided by the
  concurrency, at least 1) is reported too;
- whether the mean k_used is within one wave (`slots`) of the feasible maximum.

Then two single requests on the idle pool: k=32 with a 500 ms budget (must return within the
budget with 1 <= k_used < 32) and k=32 with a 5 s budget (must use all 32).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grm.client import NO_RETRY, AsyncGrmClient
from grm_dev.bench import suite
from grm_dev.bench.report import table, write_json


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=200, help="mixed requests (timed)")
    p.add_argument("--warmup", type=int, default=8, help="untimed requests first (k=8, 2 s)")
    p.add_argument("--budgets", default="300,500,1000,2000,5000", help="latency budgets (ms)")
    p.add_argument("--ks", default="8,16,32", help="requested k values")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    p.add_argument("--latency-ms", type=float, default=200.0, help="scripted server latency")
    p.add_argument("--max-concurrent", type=int, default=8, help="dev server's generation bound")
    p.add_argument("--samplers", type=int, default=2, help="sampler processes in the suite")
    p.add_argument("--margin-ms", type=float, default=50.0, help="client-side slack on budgets")
    p.add_argument("--seed", type=int, default=1, help="seeds the mix (budgets, k, order)")
    p.add_argument("--no-checks", action="store_true", help="skip the two single requests")
    p.add_argument("--out", default="bench-results")


def feasible_k(k: int, budget_ms: float, latency_ms: float, slots: int) -> int:
    """min(k, floor(budget / latency) × slots), at least 1: the budget's whole waves."""
    waves = math.floor(budget_ms / latency_ms)
    return max(1, min(k, waves * max(1, slots)))


def mix(n: int, budgets: Sequence[int], ks: Sequence[int], seed: int) -> list[tuple[int, int]]:
    """n (budget_ms, k) pairs, every combination about equally often, in a seeded order."""
    rng = random.Random(seed)
    combos = [(b, k) for b in budgets for k in ks]
    out = [combos[i % len(combos)] for i in range(n)]
    rng.shuffle(out)
    return out


async def _one(
    client: AsyncGrmClient, budget_ms: int, k: int, seed: int, timeout_s: float
) -> dict[str, Any]:
    t0 = time.perf_counter()
    r = await client.score(
        suite.QUERY, list(suite.RESPONSES), k=k, seed=seed, latency_budget_ms=budget_ms,
        timeout=timeout_s,
    )  # fmt: skip
    took_ms = (time.perf_counter() - t0) * 1000
    return {
        "budget_ms": budget_ms,
        "k": k,
        "seed": seed,
        "latency_ms": took_ms,
        "k_used": r.k_used,
        "k_planned": r.k_planned,
        "budget_met": bool(r.budget_met),
        "status": r.status.name,
    }


async def _send_all(
    client: AsyncGrmClient, plan: Sequence[tuple[int, int]], concurrency: int, seed0: int
) -> list[dict[str, Any]]:
    """Send the plan with at most `concurrency` requests in flight; results in plan order."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def go(i: int, budget_ms: int, k: int) -> dict[str, Any]:
        async with gate:
            return await _one(client, budget_ms, k, seed0 + i, timeout_s=budget_ms / 1000 + 30)

    return list(await asyncio.gather(*(go(i, b, k) for i, (b, k) in enumerate(plan))))


def summarize(
    rows: Sequence[dict[str, Any]],
    *,
    latency_ms: float,
    slots: int,
    concurrency: int,
    margin_ms: float,
) -> dict[str, Any]:
    """Attainment, mean k and the feasible maximum for one group of results."""
    n = len(rows)
    met = sum(r["latency_ms"] <= r["budget_ms"] + margin_ms for r in rows)
    flagged = sum(bool(r["budget_met"]) for r in rows)
    share = max(1, slots // max(1, concurrency))
    feasible = [feasible_k(r["k"], r["budget_ms"], latency_ms, slots) for r in rows]
    feasible_share = [feasible_k(r["k"], r["budget_ms"], latency_ms, share) for r in rows]
    mean_used = sum(r["k_used"] for r in rows) / n
    mean_feasible = sum(feasible) / n
    return {
        "requests": n,
        "attainment": met / n,
        "budget_met_flag": flagged / n,
        "mean_k_requested": sum(r["k"] for r in rows) / n,
        "mean_k_used": mean_used,
        "mean_k_planned": sum(r["k_planned"] for r in rows) / n,
        "mean_k_feasible": mean_feasible,
        "mean_k_share": sum(feasible_share) / n,
        "within_one_wave": mean_used >= mean_feasible - slots,
        "p50_ms": suite.percentile([r["latency_ms"] for r in rows], 50),
        "p99_ms": suite.percentile([r["latency_ms"] for r in rows], 99),
        "max_over_budget_ms": max(r["latency_ms"] - r["budget_ms"] for r in rows),
    }


async def _checks(client: AsyncGrmClient, margin_ms: float, seed0: int) -> dict[str, Any]:
    """The issue's two single requests, on the idle pool."""
    short = await _one(client, 500, 32, seed0, timeout_s=30)
    long = await _one(client, 5000, 32, seed0 + 1, timeout_s=30)
    return {
        "k32_500ms": {
            **short,
            "ok": short["latency_ms"] <= 500 + margin_ms and 1 <= short["k_used"] < 32,
        },
        "k32_5s": {**long, "ok": long["k_used"] == 32 and long["latency_ms"] <= 5000 + margin_ms},
    }


def plot(path: Path, results: Sequence[dict[str, Any]], groups: dict[str, Any]) -> None:
    """Latency / budget per request and mean k used vs feasible per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    budgets = sorted({r["budget_ms"] for r in results})
    for b in budgets:
        ys = [r["latency_ms"] / b for r in results if r["budget_ms"] == b]
        left.scatter([budgets.index(b)] * len(ys), ys, s=8, alpha=0.5)
    left.axhline(1.0, color="red", lw=1, label="budget")
    left.set_xticks(range(len(budgets)), [str(b) for b in budgets])
    left.set_xlabel("budget (ms)")
    left.set_ylabel("client latency / budget")
    left.legend()
    xs = range(len(budgets))
    g = [groups[str(b)] for b in budgets]
    right.bar([x - 0.2 for x in xs], [s["mean_k_used"] for s in g], 0.4, label="mean k_used")
    right.bar([x + 0.2 for x in xs], [s["mean_k_feasible"] for s in g], 0.4, label="feasible k")
    right.set_xticks(list(xs), [str(b) for b in budgets])
    right.set_xlabel("budget (ms)")
    right.set_ylabel("k")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    budgets = suite.parse_ks(args.budgets)
    ks = suite.parse_ks(args.ks)
    samplers = max(1, args.samplers)
    per_sampler = max(1, args.max_concurrent // samplers)
    slots = per_sampler * samplers  # what the aggregator plans with (all samplers' bounds)
    plan = mix(args.requests, budgets, ks, args.seed)
    seed0 = 1_000_000 * args.seed
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            suite.dev_tgi(Path(tmp), latency_ms=args.latency_ms, max_concurrent=slots) as url,
            suite.suite(
                Path(tmp), url, samplers=samplers, env={"GRM_TGI_MAX_IN_FLIGHT": str(per_sampler)}
            ) as address,
            AsyncGrmClient(address, timeout=60, retry=NO_RETRY) as client,
        ):
            for i in range(args.warmup):
                await _one(client, 2000, 8, seed0 - 1000 - i, timeout_s=30)
            started = time.perf_counter()
            results = await _send_all(client, plan, args.concurrency, seed0)
            wall_s = time.perf_counter() - started
            checks = None if args.no_checks else await _checks(client, args.margin_ms, seed0 - 10)

    def group(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return summarize(
            rows,
            latency_ms=args.latency_ms,
            slots=slots,
            concurrency=args.concurrency,
            margin_ms=args.margin_ms,
        )

    groups = {str(b): group([r for r in results if r["budget_ms"] == b]) for b in budgets}
    overall = group(results)
    print(
        f"Latency budgets through the suite ({samplers} samplers, {slots} slots); scripted TGI "
        f"at {args.latency_ms} ms; {args.requests} mixed requests (k in {ks}), "
        f"{args.concurrency} at a time; attainment = client latency <= budget + "
        f"{args.margin_ms} ms; feasible k = min(k, floor(budget / latency) x slots)"
    )
    headers = [
        "budget ms", "n", "attain", "met flag", "k req", "k planned", "k used",
        "k feasible", "k share", "1 wave?", "p99 ms",
    ]  # fmt: skip
    keys = [
        "requests", "attainment", "budget_met_flag", "mean_k_requested", "mean_k_planned",
        "mean_k_used", "mean_k_feasible", "mean_k_share",
    ]  # fmt: skip
    rows = [
        [name, *(s[key] for key in keys), "yes" if s["within_one_wave"] else "no", s["p99_ms"]]
        for name, s in [*groups.items(), ("all", overall)]
    ]
    print(table(headers, rows))
    verdict = "met" if overall["attainment"] >= 0.99 else "missed"
    print(f"target >= 99% within budget: {overall['attainment']:.1%} ({verdict})")
    if checks is not None:
        for name, c in checks.items():
            print(
                f"check {name}: {c['latency_ms']:.0f} ms, k_used={c['k_used']}, "
                f"k_planned={c['k_planned']} ({'ok' if c['ok'] else 'FAILED'})"
            )
    payload = {
        "settings": {
            "requests": args.requests,
            "warmup": args.warmup,
            "budgets_ms": budgets,
            "ks": ks,
            "concurrency": args.concurrency,
            "latency_ms": args.latency_ms,
            "max_concurrent": args.max_concurrent,
            "samplers": samplers,
            "slots": slots,
            "margin_ms": args.margin_ms,
            "seed": args.seed,
        },
        "feasible_formula": "min(k, max(1, floor(budget_ms / latency_ms) * slots))",
        "wall_s": wall_s,
        "per_budget": groups,
        "overall": overall,
        "checks": checks,
        "results": results,
    }
    path = write_json(args.out, "planner", payload)
    png = Path(args.out) / "planner.png"
    plot(png, results, groups)
    print(f"wrote {path} and {png}")
    return payload
