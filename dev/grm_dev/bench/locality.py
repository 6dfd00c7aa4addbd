"""`grm bench locality`: how many engine endpoints an item's samples touch, and what that costs
with an engine's prefix cache, with and without the samplers' prefix locality.

Two copies of the suite (`grm up --backend tgi`, child processes) run side by side, one with
`GRM_PREFIX_LOCALITY=true` (the default) and one with `false` (least-loaded choice only), each
on its own `--endpoints` scripted dev TGI servers (in this process, so their request logs can
be read) with `--prefix-cost-ms`: prefill time per 1,000 prompt tokens a server has not seen
as a prefix, one prefill at a time per server (grm_dev.devtgi.prefix). Every item has its own
long conversation (so its prompt prefix is its own) and k samples; `--concurrency` items are
in flight in each suite, the two suites alternating item by item. Reported per mode: the
endpoints each item's samples reached (read from the servers' logs), Score latency and the
share of prompt tokens served from the servers' prefix caches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from grm.client import AsyncGrmClient
from grm.core.types import ScoreStatus
from grm_dev.bench import suite
from grm_dev.bench.report import Panel, plot, table, write_json
from grm_dev.devtgi.app import DevTgiSettings, FaultSettings
from grm_dev.devtgi.engines import ScriptedEngine
from grm_dev.devtgi.main import DevTgiServer, start_dev_server

MODES = ("locality", "least-loaded")
_ITEM = re.compile(r"\[item (\d+)\]")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", type=int, default=40, help="timed items per mode")
    p.add_argument("--warmup", type=int, default=4, help="untimed items per mode")
    p.add_argument("--k", type=int, default=8, help="samples per item")
    p.add_argument("--endpoints", type=int, default=4, help="dev TGI servers per mode")
    p.add_argument("--samplers", type=int, default=2, help="sampler processes per suite")
    p.add_argument("--concurrency", type=int, default=4, help="items in flight per mode")
    p.add_argument("--latency-ms", type=float, default=50.0, help="scripted generation time")
    p.add_argument(
        "--prefix-cost-ms", type=float, default=40.0, help="prefill ms per 1,000 uncached tokens"
    )
    p.add_argument("--context-words", type=int, default=1000, help="words of each item's context")
    p.add_argument("--out", default="bench-results")


@contextlib.asynccontextmanager
async def _servers(args: argparse.Namespace) -> AsyncIterator[list[DevTgiServer]]:
    faults = FaultSettings(latency_ms=args.latency_ms, prefix_cost_ms=args.prefix_cost_ms)
    settings = DevTgiSettings(
        max_concurrent_requests=max(256, 8 * args.k), record=True, faults=faults
    )
    servers = [await start_dev_server(ScriptedEngine(), settings) for _ in range(args.endpoints)]
    try:
        yield servers
    finally:
        for server in servers:
            await server.close()


def _query(item: int, words: int) -> str:
    """An item's own conversation: the marker first, so no two items share a prefix past the
    template's text."""
    body = " ".join(f"w{(item * 7919 + i) % 10007}" for i in range(words))
    return f"[item {item}] Please answer after reading this context. {body}"


async def _score(client: AsyncGrmClient, item: int, args: argparse.Namespace) -> float:
    t0 = time.perf_counter()
    result = await client.score(
        _query(item, args.context_words), list(suite.RESPONSES), k=args.k, seed=item + 1
    )
    elapsed = time.perf_counter() - t0
    if result.status is not ScoreStatus.COMPLETE or result.k_used != args.k:
        raise RuntimeError(f"item {item}: {result.status} with k_used={result.k_used}")
    return elapsed


def _touched(servers: list[DevTgiServer], items: range) -> dict[int, int]:
    """Per item: how many of `servers` answered a /generate for it."""
    seen: dict[int, set[int]] = {i: set() for i in items}
    for index, server in enumerate(servers):
        for x in server.state.exchanges:
            if x.path == "/generate" and isinstance(x.request, dict):
                match = _ITEM.search(str(x.request.get("inputs", "")))
                if match and int(match.group(1)) in seen:
                    seen[int(match.group(1))].add(index)
    return {i: len(s) for i, s in seen.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    total = args.warmup + args.items
    timed = range(args.warmup, total)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for sub in ("on", "off"):
            (Path(tmp) / sub).mkdir()
        async with (
            _servers(args) as on_servers,
            _servers(args) as off_servers,
            suite.suite(
                Path(tmp) / "on",
                ",".join(s.url for s in on_servers),
                samplers=args.samplers,
                env={"GRM_PREFIX_LOCALITY": "true"},
            ) as on_address,
            suite.suite(
                Path(tmp) / "off",
                ",".join(s.url for s in off_servers),
                samplers=args.samplers,
                env={"GRM_PREFIX_LOCALITY": "false"},
            ) as off_address,
            AsyncGrmClient(on_address, timeout=120) as on_client,
            AsyncGrmClient(off_address, timeout=120) as off_client,
        ):
            clients = {"locality": on_client, "least-loaded": off_client}
            queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
            for item in range(total):  # the two modes alternate item by item
                order = MODES if item % 2 == 0 else tuple(reversed(MODES))
                for mode in order:
                    queue.put_nowait((mode, item))

            async def worker() -> None:
                while not queue.empty():
                    mode, item = queue.get_nowait()
                    elapsed = await _score(clients[mode], item, args)
                    if item >= args.warmup:
                        times[mode].append(elapsed)

            await asyncio.gather(*(worker() for _ in range(2 * args.concurrency)))
            groups = {"locality": on_servers, "least-loaded": off_servers}
            results: dict[str, Any] = {}
            for mode in MODES:
                touched = _touched(groups[mode], timed)
                hits = sum(s.state.prefill.cache.hit_tokens for s in groups[mode])
                misses = sum(s.state.prefill.cache.miss_tokens for s in groups[mode])
                counts = list(touched.values())
                results[mode] = {
                    **suite.summary_ms(times[mode]),
                    "endpoints_per_item_mean": statistics.fmean(counts),
                    "endpoints_per_item_max": max(counts),
                    "endpoints_per_item": {
                        str(n): counts.count(n) for n in range(1, args.endpoints + 1)
                    },
                    "prefix_cached_share": hits / max(1, hits + misses),
                    "prefill_tokens": misses,
                }
    on, off = results["locality"], results["least-loaded"]
    rows = [
        [mode, args.items, args.k, r["endpoints_per_item_mean"], r["endpoints_per_item_max"],
         r["p50_ms"], r["p99_ms"], r["mean_ms"], r["prefix_cached_share"], r["prefill_tokens"]]
        for mode, r in results.items()
    ]  # fmt: skip
    print(
        f"Prefix locality: {args.endpoints} scripted TGI endpoints per mode at {args.latency_ms} "
        f"ms + {args.prefix_cost_ms} ms per 1,000 uncached prompt tokens (one prefill at a "
        f"time per endpoint); {args.samplers} samplers; k={args.k}; {args.concurrency} items "
        f"in flight per mode, modes interleaved"
    )
    print(
        table(
            ["mode", "items", "k", "endpoints/item", "max", "p50 ms", "p99 ms", "mean ms",
             "prompt tokens cached", "tokens prefilled"],
            rows,
        )
    )  # fmt: skip
    print(
        f"locality / least-loaded: p50 x{on['p50_ms'] / off['p50_ms']:.2f}, "
        f"mean x{on['mean_ms'] / off['mean_ms']:.2f}, prefilled tokens "
        f"x{on['prefill_tokens'] / max(1, off['prefill_tokens']):.2f}"
    )
    png = plot(
        args.out,
        "locality",
        [
            Panel(
                "Endpoints an item's samples reached",
                [str(n) for n in range(1, args.endpoints + 1)],
                {m: list(results[m]["endpoints_per_item"].values()) for m in MODES},
                xlabel="endpoints",
                ylabel="items",
                kind="bar",
            ),
            Panel(
                "Score latency",
                ["p50", "mean", "p99"],
                {m: [results[m][f"{q}_ms"] for q in ("p50", "mean", "p99")] for m in MODES},
                ylabel="ms",
                kind="bar",
            ),
        ],
    )
    payload = {
        **{k: v for k, v in vars(args).items() if k not in ("func", "scenario")},
        "results": results,
        "times_s": times,
        "plot": png.name if png else None,
    }
    path = write_json(args.out, "locality", payload)
    print(f"wrote {path}")
    return payload
