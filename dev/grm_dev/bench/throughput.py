"""`grm bench throughput`: Score calls/s and samples/s at zero backend latency (pure suite cost).

For each sampler count (default 1 and 2) it starts a scripted `grm dev-tgi --latency-ms 0` and
`grm up --backend tgi --samplers N` (child processes), then keeps `--concurrency` Score calls in
flight for `--duration-s` seconds (after a warm-up), each with k samples and a new seed (no
cache hits); with `--batch-items N` each call is a ScoreBatch of N such items (how the TRL
and verl integrations and `score_many` call), and "calls" below count items. All processes
share this machine's cores, so the numbers are the suite's cost per call and per sample on
this host; the scaling ratio is measured in the same run.

CPU time: each service process (`grm up`'s aggregator, principle generator and samplers, and
the dev TGI server) is found below this process in /proc; its utime + stime is read before and
after the timed phase and reported as microseconds per sample and per Score call, so one can
see which service a sample's cost lands in and how it spreads over two samplers.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from grm.client import AsyncGrmClient
from grm.core.types import ScoreStatus
from grm_dev import procinfo
from grm_dev.bench import suite
from grm_dev.bench.overhead import score_suite
from grm_dev.bench.report import Panel, plot, table, write_json


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=4, help="samples per Score call")
    p.add_argument("--concurrency", type=int, default=16, help="Score calls in flight")
    p.add_argument(
        "--batch-items",
        type=int,
        default=1,
        help="items per call: 1 = Score calls, N > 1 = ScoreBatch calls of N items",
    )
    p.add_argument("--duration-s", type=float, default=10.0, help="timed seconds per setup")
    p.add_argument("--warmup-s", type=float, default=2.0, help="untimed seconds per setup")
    p.add_argument("--samplers", default="1,2", help="sampler process counts to compare")
    p.add_argument("--latency-ms", type=float, default=0.0, help="scripted server latency")
    p.add_argument(
        "--analysis-words",
        type=int,
        default=0,
        help="pad the scripted judgements (150 words: ~300 tokens, a real critique's length)",
    )
    p.add_argument("--out", default="bench-results")


async def _load(
    address: str, *, k: int, concurrency: int, seconds: float, seeds: Any, batch_items: int = 1
) -> int:
    """Items scored in `seconds` with `concurrency` workers (each checked complete)."""
    stop = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            if batch_items <= 1:
                await score_suite(client, k=k, seed=next(seeds))
            else:
                await _score_batch(client, k=k, seeds=seeds, n=batch_items)
            done += batch_items

    async with AsyncGrmClient(address, timeout=120) as client:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def _score_batch(client: AsyncGrmClient, *, k: int, seeds: Any, n: int) -> None:
    items = [
        {"query": suite.QUERY, "responses": list(suite.RESPONSES), "k": k, "seed": next(seeds)}
        for _ in range(n)
    ]
    for outcome in await client.score_batch(items):
        if isinstance(outcome, Exception):
            raise RuntimeError(f"ScoreBatch item failed: {outcome}")
        if outcome.status is not ScoreStatus.COMPLETE or outcome.k_used != k:
            raise RuntimeError(f"ScoreBatch item: {outcome.status} with k_used={outcome.k_used}")


async def measure(args: argparse.Namespace, samplers: int) -> dict[str, Any]:
    seeds = itertools.count(1 + samplers * 10_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            suite.dev_tgi(
                Path(tmp),
                latency_ms=args.latency_ms,
                max_concurrent=max(256, 4 * args.k),
                analysis_words=args.analysis_words,
            ) as url,
            suite.suite(Path(tmp), url, samplers=samplers) as address,
        ):
            common = {
                "k": args.k,
                "concurrency": args.concurrency,
                "seeds": seeds,
                "batch_items": args.batch_items,
            }
            await _load(address, seconds=args.warmup_s, **common)
            pids = procinfo.service_pids()
            cpu_before = procinfo.cpu_snapshot(pids)
            t0 = time.perf_counter()
            calls = await _load(address, seconds=args.duration_s, **common)
            elapsed = time.perf_counter() - t0
            cpu = procinfo.cpu_delta(cpu_before, procinfo.cpu_snapshot(pids))
    samples = max(1, calls * args.k)
    return {
        "calls": calls,
        "elapsed_s": elapsed,
        "calls_per_s": calls / elapsed,
        "samples_per_s": calls * args.k / elapsed,
        # per call (a Score, or a ScoreBatch of batch_items)
        "mean_latency_ms": 1000 * elapsed * args.concurrency * args.batch_items / max(1, calls),
        "cpu_s": cpu,
        "cpu_us_per_sample": {name: 1e6 * v / samples for name, v in cpu.items()},
        "cpu_us_per_call": {name: 1e6 * v / max(1, calls) for name, v in cpu.items()},
        "cpu_us_per_sample_total": 1e6 * sum(cpu.values()) / samples,
        # what the suite itself costs: the front door and the samplers (not the engine)
        "suite_cpu_us_per_sample": 1e6 * sum(v for k, v in cpu.items() if _is_suite(k)) / samples,
        "cpu_utilization": sum(cpu.values()) / elapsed,  # cores busy, on average
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = suite.parse_ks(args.samplers)
    results = {str(n): await measure(args, n) for n in counts}
    base = results[str(counts[0])]
    for r in results.values():
        r["scaling_vs_first"] = r["calls_per_s"] / base["calls_per_s"]
    rows = [
        [
            n,
            r["calls"],
            r["calls_per_s"],
            r["samples_per_s"],
            r["mean_latency_ms"],
            r["scaling_vs_first"],
        ]
        for n, r in results.items()
    ]
    calls = "Score calls" if args.batch_items <= 1 else f"ScoreBatch calls of {args.batch_items}"
    print(
        f"Score throughput at {args.latency_ms} ms backend latency: k={args.k}, "
        f"{args.concurrency} {calls} in flight, {args.duration_s} s per setup (calls = items)"
    )
    print(table(["samplers", "calls", "calls/s", "samples/s", "mean ms", "scaling"], rows))
    services = sorted({name for r in results.values() for name in r["cpu_s"]}, key=_service_order)
    print(
        f"\nCPU per sample and per Score call by service (utime+stime, µs; clock tick "
        f"{1e6 / os.sysconf('SC_CLK_TCK'):.0f} µs per process)"
    )
    cpu_rows = []
    for n, r in results.items():
        for name in services:
            if name in r["cpu_s"]:
                per_sample, per_call = r["cpu_us_per_sample"][name], r["cpu_us_per_call"][name]
                cpu_rows.append([n, name, per_sample, per_call])
        cpu_rows.append(
            [n, "all services", r["cpu_us_per_sample_total"], r["cpu_us_per_sample_total"] * args.k]
        )
    print(table(["samplers", "service", "µs/sample", "µs/Score"], cpu_rows))
    for n, r in results.items():
        print(f"{n} sampler(s): {r['cpu_utilization']:.2f} cores busy on average")
        suite_us = r["suite_cpu_us_per_sample"]
        verdict = "met" if suite_us <= TARGET_US_PER_SAMPLE else "not met"
        print(
            f"{n} sampler(s): target aggregator + sampler CPU per sample <= "
            f"{TARGET_US_PER_SAMPLE:.0f} µs: {suite_us:.0f} µs ({verdict})"
        )
    labels = list(results)
    png = plot(
        args.out,
        "throughput",
        [
            Panel(
                f"Throughput (k={args.k}, {args.concurrency} in flight)",
                labels,
                {
                    "calls/s": [r["calls_per_s"] for r in results.values()],
                    "samples/s": [r["samples_per_s"] for r in results.values()],
                },
                xlabel="sampler processes",
                kind="bar",
            ),
            Panel(
                "CPU per sample by service",
                services,
                {
                    f"{n} sampler(s)": [r["cpu_us_per_sample"].get(s, 0.0) for s in services]
                    for n, r in results.items()
                },
                ylabel="µs per sample",
                kind="bar",
            ),
        ],
    )
    payload = {
        "k": args.k,
        "concurrency": args.concurrency,
        "batch_items": args.batch_items,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "latency_ms": args.latency_ms,
        "analysis_words": args.analysis_words,
        "results": results,
        "plot": png.name if png else None,
    }
    path = write_json(args.out, "throughput", payload)
    print(f"wrote {path}")
    return payload


TARGET_US_PER_SAMPLE = 500.0


def _is_suite(service: str) -> bool:
    """The aggregator and the samplers: the CPU the suite adds per sample (the principle
    generator is idle here, the dev server stands in for the engine)."""
    return service == "aggregator" or service.startswith("sampler")


def _service_order(name: str) -> tuple[int, str]:
    """Front door first, then samplers, then the rest (principles, dev server)."""
    rank = {"aggregator": 0, "principles": 2, "dev-tgi": 3}.get(name, 1)
    return rank, name
