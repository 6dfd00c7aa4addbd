"""`grm bench load`: steady load within capacity, then beyond the admission limit, then a soak.

Starts `grm dev-tgi --scripted` (fixed latency), one `grm serve sampler --backend tgi` and
`grm serve aggregator --max-inflight-requests L` as child processes on free loopback ports,
and drives the aggregator's Score over one channel without client retries (each status is
what the server said):

1. capacity: `--concurrency` (at most L) calls in flight for `--duration-s`. Admission can
   never refuse them, so any error is a fault of the suite (counted, reported).
2. overload: `--overload-concurrency` (beyond L) callers for `--overload-s`. Calls over the
   limit must be refused with RESOURCE_EXHAUSTED at once: the rejection latency p50/p99 is
   reported next to the served calls' latency.
3. soak: `--concurrency` calls for `--soak-s`; the aggregator's VmRSS (/proc/PID/status) and
   open descriptors are sampled every `--rss-interval-s` after `--soak-warmup-s`, so growth
   (a leak) shows as the difference between the first and last samples.

The aggregator runs with `--cache false` by default: every call then goes down to the
sampler, and a cache filling up is not mistaken for a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from grm.rpc import convert
from grm.rpc.server import channel_options
from grm.v1 import reward_pb2_grpc
from grm_dev import procinfo
from grm_dev.bench import suite
from grm_dev.bench.report import table, write_json


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=2, help="samples per Score call")
    p.add_argument("--max-inflight", type=int, default=8, help="aggregator admission limit")
    p.add_argument("--concurrency", type=int, default=4, help="calls in flight (<= limit)")
    p.add_argument("--duration-s", type=float, default=5.0, help="capacity phase seconds")
    p.add_argument("--overload-concurrency", type=int, default=32, help="callers beyond it")
    p.add_argument("--overload-s", type=float, default=5.0, help="overload phase seconds")
    p.add_argument("--soak-s", type=float, default=30.0, help="soak seconds (warm-up included)")
    p.add_argument("--soak-warmup-s", type=float, default=5.0, help="soak seconds before RSS")
    p.add_argument("--rss-interval-s", type=float, default=1.0, help="RSS sampling interval")
    p.add_argument("--latency-ms", type=float, default=20.0, help="scripted TGI latency")
    p.add_argument("--cache", default="false", help="the aggregator's --cache")
    p.add_argument("--out", default="bench-results")


@contextlib.asynccontextmanager
async def _service(argv: Sequence[str], tmp: Path, name: str) -> AsyncIterator[tuple[str, int]]:
    """A `grm serve ...` child; yields (address, pid) once it is SERVING."""
    argv = ["-m", "grm.cli", "serve", *argv, "--host", "127.0.0.1", "--log-level", "WARNING"]
    async with suite.child(argv, tmp, name, serving=True) as proc:
        yield f"127.0.0.1:{proc.port}", proc.pid


class Phase:
    """Outcomes of one phase: latencies of served and rejected calls, other errors by code."""

    def __init__(self) -> None:
        self.served: list[float] = []
        self.rejected: list[float] = []
        self.errors: Counter[str] = Counter()
        self.seconds = 0.0

    def summary(self) -> dict[str, Any]:
        calls = len(self.served) + len(self.rejected) + sum(self.errors.values())
        return {
            "calls": calls,
            "served": len(self.served),
            "rejected": len(self.rejected),
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "served_per_s": len(self.served) / self.seconds if self.seconds else 0.0,
            "served_latency": suite.summary_ms(self.served) if self.served else None,
            "rejection_latency": suite.summary_ms(self.rejected) if self.rejected else None,
        }


async def drive(
    stub: reward_pb2_grpc.RewardServiceStub,
    *,
    concurrency: int,
    seconds: float,
    k: int,
    seeds: Iterator[int],
) -> Phase:
    """`concurrency` callers, each sending its next call as soon as the last one ends."""
    phase = Phase()
    started = time.perf_counter()
    stop = started + seconds

    async def caller() -> None:
        while time.perf_counter() < stop:
            request = convert.score_request(
                query=suite.QUERY, responses=list(suite.RESPONSES), k=k, seed=next(seeds)
            )
            t0 = time.perf_counter()
            try:
                await stub.Score(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    phase.rejected.append(time.perf_counter() - t0)
                else:
                    phase.errors[exc.code().name] += 1
                continue
            phase.served.append(time.perf_counter() - t0)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - started
    return phase


async def soak(
    stub: reward_pb2_grpc.RewardServiceStub, pid: int, args: argparse.Namespace, seeds: Any
) -> dict[str, Any]:
    """Steady load while the aggregator's RSS and descriptors are sampled after a warm-up."""
    samples: list[tuple[float, int, int, int]] = []  # (t, rss KiB, fds, sockets)
    load = asyncio.ensure_future(
        drive(stub, concurrency=args.concurrency, seconds=args.soak_s, k=args.k, seeds=seeds)
    )
    started = time.perf_counter()
    await asyncio.sleep(args.soak_warmup_s)
    while not load.done():
        fds = procinfo.open_fds(pid)
        samples.append(
            (time.perf_counter() - started, procinfo.rss_kib(pid), fds.total, fds.sockets)
        )
        await asyncio.wait({load}, timeout=args.rss_interval_s)
    phase = load.result()
    rss = [s[1] for s in samples]
    out = phase.summary()
    out.update(
        rss_samples=[
            {"t_s": round(t, 2), "rss_kib": r, "fds": f, "sockets": s} for t, r, f, s in samples
        ],
        rss_first_kib=rss[0] if rss else None,
        rss_last_kib=rss[-1] if rss else None,
        rss_max_kib=max(rss, default=None),
        rss_growth_kib=(rss[-1] - rss[0]) if rss else None,
        fds_first=samples[0][2] if samples else None,
        fds_last=samples[-1][2] if samples else None,
        sockets_first=samples[0][3] if samples else None,
        sockets_last=samples[-1][3] if samples else None,
    )
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if not 1 <= args.concurrency <= args.max_inflight < args.overload_concurrency:
        raise SystemExit("need 1 <= --concurrency <= --max-inflight < --overload-concurrency")
    seeds = itertools.count(1)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        async with contextlib.AsyncExitStack() as stack:
            tgi_url = await stack.enter_async_context(
                suite.dev_tgi(tmp, latency_ms=args.latency_ms, max_concurrent=256)
            )
            sampler, _ = await stack.enter_async_context(
                _service(["sampler", "--backend", "tgi", "--tgi-url", tgi_url], tmp, "sampler")
            )
            agg_argv = ["aggregator", "--samplers", sampler, "--cache", args.cache]
            agg_argv += ["--max-inflight-requests", str(args.max_inflight)]
            address, pid = await stack.enter_async_context(_service(agg_argv, tmp, "aggregator"))
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(address, options=channel_options())
            )
            stub = reward_pb2_grpc.RewardServiceStub(channel)
            await drive(stub, concurrency=1, seconds=0.2, k=args.k, seeds=seeds)  # connect
            capacity = await drive(
                stub, concurrency=args.concurrency, seconds=args.duration_s, k=args.k, seeds=seeds
            )
            overload = await drive(
                stub,
                concurrency=args.overload_concurrency,
                seconds=args.overload_s,
                k=args.k,
                seeds=seeds,
            )
            soaked = await soak(stub, pid, args, seeds)
    payload: dict[str, Any] = {
        "k": args.k,
        "latency_ms": args.latency_ms,
        "cache": args.cache,
        "admission": {"max_inflight_requests": args.max_inflight},
        "capacity": {"concurrency": args.concurrency, **capacity.summary()},
        "overload": {"concurrency": args.overload_concurrency, **overload.summary()},
        "soak": {"concurrency": args.concurrency, "warmup_s": args.soak_warmup_s, **soaked},
    }
    rows = []
    for name in ("capacity", "overload", "soak"):
        r = payload[name]
        served = r["served_latency"] or {}
        rejected = r["rejection_latency"] or {}
        rows.append([
            name, r["concurrency"], r["served"], r["rejected"], sum(r["errors"].values()),
            served.get("p50_ms", "-"), served.get("p99_ms", "-"),
            rejected.get("p50_ms", "-"), rejected.get("p99_ms", "-"),
        ])  # fmt: skip
    print(f"aggregator admission limit: {args.max_inflight} requests in flight, k={args.k}")
    print(
        table(
            ["phase", "conc", "served", "rejected", "errors", "p50 ms", "p99 ms",
             "reject p50 ms", "reject p99 ms"],
            rows,
        )
    )  # fmt: skip
    s = payload["soak"]
    print(
        f"soak RSS (after {args.soak_warmup_s:.0f}s warm-up): {s['rss_first_kib']} -> "
        f"{s['rss_last_kib']} KiB (max {s['rss_max_kib']}); sockets {s['sockets_first']} -> "
        f"{s['sockets_last']}"
    )
    print(f"wrote {write_json(args.out, 'load', payload)}")
    return payload
