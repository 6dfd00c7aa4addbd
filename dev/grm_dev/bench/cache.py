"""`grm bench cache`: the aggregator's cache through the suite (its default in-memory cache).

Same setup as `overhead` (scripted `grm dev-tgi` at a fixed latency, `grm up --backend tgi`).
Backend samples are counted on the dev server (`tgi_request_count` on its /metrics), so
"saved" is measured, not inferred. Three parts:
1. hit vs miss: a Score with a new seed (miss), then the identical request again (hit).
2. GRPO-like workload: P prompts x G responses scored pointwise (n=1), E epochs, `--parallel`
   calls in flight; once with the same responses every epoch (as when a group is re-scored),
   once with fresh responses every epoch; backend samples and wall time of each.
3. incremental k: k=K1 then k=K2 for the same request (the first K1 samples are reused), vs
   k=K2 cold with another seed.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from grm.client import AsyncGrmClient
from grm_dev.bench import suite
from grm_dev.bench.report import Panel, plot, table, write_json


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=8, help="samples per Score (hit/miss, GRPO)")
    p.add_argument("--reps", type=int, default=20, help="hit/miss pairs")
    p.add_argument("--prompts", type=int, default=16, help="GRPO: prompts per epoch")
    p.add_argument("--group", type=int, default=8, help="GRPO: responses per prompt")
    p.add_argument("--epochs", type=int, default=3, help="GRPO: epochs")
    p.add_argument("--parallel", type=int, default=16, help="GRPO: Score calls in flight")
    p.add_argument("--k-incremental", default="8,16", help="K1,K2 for the incremental-k part")
    p.add_argument("--latency-ms", type=float, default=50.0, help="scripted server latency")
    p.add_argument("--out", default="bench-results")


async def _timed(client: AsyncGrmClient, query: str, responses: list[str], **kw: Any) -> float:
    t0 = time.perf_counter()
    result = await client.score(query, responses, **kw)
    elapsed = time.perf_counter() - t0
    if result.k_used < 1:
        raise RuntimeError(f"Score returned no samples: {result.status}")
    return elapsed


async def _hit_miss(client: AsyncGrmClient, args: argparse.Namespace) -> dict[str, Any]:
    miss: list[float] = []
    hit: list[float] = []
    for rep in range(args.reps + 1):
        kw = {"k": args.k, "seed": 500_000 + rep}
        m = await _timed(client, suite.QUERY, list(suite.RESPONSES), **kw)
        h = await _timed(client, suite.QUERY, list(suite.RESPONSES), **kw)
        if rep:  # the first pair is warm-up
            miss.append(m)
            hit.append(h)
    ms, hs = suite.summary_ms(miss), suite.summary_ms(hit)
    return {"miss": ms, "hit": hs, "hit_over_miss_p50": hs["p50_ms"] / ms["p50_ms"]}


async def _grpo(
    client: AsyncGrmClient, url: str, args: argparse.Namespace, mode: str
) -> dict[str, Any]:
    gate = asyncio.Semaphore(args.parallel)

    async def one(p: int, g: int, epoch: int) -> None:
        tag = f" (epoch {epoch})" if mode == "fresh" else ""
        query = f"[{mode}] Prompt {p}: explain topic number {p}."
        response = f"Response {g} to prompt {p}{tag}: a candidate answer."
        async with gate:
            await _timed(client, query, [response], k=args.k)

    before = await suite.generate_count(url)
    t0 = time.perf_counter()
    per_epoch = []
    for epoch in range(args.epochs):
        e0 = await suite.generate_count(url)
        await asyncio.gather(
            *(one(p, g, epoch) for p in range(args.prompts) for g in range(args.group))
        )
        per_epoch.append(await suite.generate_count(url) - e0)
    wall = time.perf_counter() - t0
    samples = await suite.generate_count(url) - before
    return {
        "calls": args.prompts * args.group * args.epochs,
        "samples_requested": args.prompts * args.group * args.epochs * args.k,
        "backend_samples": samples,
        "backend_samples_per_epoch": per_epoch,
        "wall_s": wall,
    }


async def _incremental(client: AsyncGrmClient, url: str, k1: int, k2: int) -> dict[str, Any]:
    query, responses = "Incremental k: which answer is right?", list(suite.RESPONSES)
    out: dict[str, Any] = {}
    for name, k, seed in (("first", k1, 42), ("grown", k2, 42), ("cold", k2, 43)):
        before = await suite.generate_count(url)
        elapsed = await _timed(client, query, responses, k=k, seed=seed)
        out[name] = {
            "k": k,
            "latency_ms": elapsed * 1000,
            "backend_samples": await suite.generate_count(url) - before,
        }
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    k1, k2 = suite.parse_ks(args.k_incremental)[:2]
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            suite.dev_tgi(
                Path(tmp), latency_ms=args.latency_ms, max_concurrent=max(256, 4 * args.k)
            ) as url,
            suite.suite(Path(tmp), url) as address,
            AsyncGrmClient(address, timeout=120) as client,
        ):
            hit_miss = await _hit_miss(client, args)
            grpo = {mode: await _grpo(client, url, args, mode) for mode in ("same", "fresh")}
            incremental = await _incremental(client, url, k1, k2)
    saved = grpo["fresh"]["backend_samples"] - grpo["same"]["backend_samples"]
    grpo_summary = {
        "saved_samples": saved,
        "saved_share": saved / max(1, grpo["fresh"]["backend_samples"]),
        "wall_ratio_same_over_fresh": grpo["same"]["wall_s"] / grpo["fresh"]["wall_s"],
    }
    print(f"Cache through the suite (in-memory); scripted TGI at {args.latency_ms} ms")
    print(
        table(
            ["request", "p50 ms", "p99 ms", "mean ms"],
            [
                [
                    f"miss (k={args.k})",
                    *(hit_miss["miss"][c] for c in ("p50_ms", "p99_ms", "mean_ms")),
                ],
                [
                    f"hit (k={args.k})",
                    *(hit_miss["hit"][c] for c in ("p50_ms", "p99_ms", "mean_ms")),
                ],
            ],
        )
    )
    print(f"hit/miss p50: {hit_miss['hit_over_miss_p50']:.3f}")
    print(
        f"\nGRPO-like: {args.prompts} prompts x {args.group} responses x {args.epochs} epochs, "
        f"k={args.k}, pointwise"
    )
    print(
        table(
            ["responses", "calls", "samples asked", "backend samples", "per epoch", "wall s"],
            [
                [
                    mode,
                    g["calls"],
                    g["samples_requested"],
                    g["backend_samples"],
                    "/".join(str(x) for x in g["backend_samples_per_epoch"]),
                    g["wall_s"],
                ]
                for mode, g in grpo.items()
            ],
        )
    )
    print(
        f"saved {saved} backend samples ({grpo_summary['saved_share']:.1%}); wall same/fresh "
        f"{grpo_summary['wall_ratio_same_over_fresh']:.3f}"
    )
    print("\nIncremental k")
    print(
        table(
            ["request", "k", "latency ms", "backend samples"],
            [
                [name, r["k"], r["latency_ms"], r["backend_samples"]]
                for name, r in incremental.items()
            ],
        )
    )
    png = plot(
        args.out,
        "cache",
        [
            Panel(
                f"Hit vs miss (k={args.k})",
                ["p50", "p99", "mean"],
                {
                    part: [hit_miss[part][f"{q}_ms"] for q in ("p50", "p99", "mean")]
                    for part in ("miss", "hit")
                },
                ylabel="latency (ms)",
                kind="bar",
            ),
            Panel(
                f"GRPO-like, {args.epochs} epochs: backend samples",
                list(grpo),
                {
                    "samples asked": [g["samples_requested"] for g in grpo.values()],
                    "backend samples": [g["backend_samples"] for g in grpo.values()],
                },
                xlabel="responses per epoch",
                kind="bar",
            ),
            Panel(
                "Incremental k: backend samples",
                [f"{n} (k={r['k']})" for n, r in incremental.items()],
                {"backend samples": [r["backend_samples"] for r in incremental.values()]},
                kind="bar",
            ),
        ],
    )
    payload = {
        "k": args.k,
        "reps": args.reps,
        "latency_ms": args.latency_ms,
        "plot": png.name if png else None,
        "hit_miss": hit_miss,
        "grpo": {
            **grpo,
            **grpo_summary,
            "prompts": args.prompts,
            "group": args.group,
            "epochs": args.epochs,
        },
        "incremental": incremental,
    }
    path = write_json(args.out, "cache", payload)
    print(f"wrote {path}")
    return payload
