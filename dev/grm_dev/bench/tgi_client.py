"""`grm bench tgi-client`: k samples through the pooled session vs the stock AsyncClient.

Starts `grm dev-tgi --scripted` in a subprocess (its own process, so the server's work does
not share the client's event loop) with a fixed per-request latency, or uses `--url`. Each
repetition sends k concurrent sample requests through both TgiBackend modes, alternating
which goes first; reported: the median (and p90, min) wall time of the k samples per mode.
Prompts are rendered once and cached (`/chat_tokenize`), so the timed path is `/generate`
— the one call the switch changes; `--fresh-prompts` renders new prompts every repetition.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from grm.backends.base import GenerationRequest
from grm.backends.tgi import TgiBackend, TgiSettings
from grm.core.templates import load_templates
from grm.core.types import Context
from grm_dev.bench.report import table, write_json
from grm_dev.bench.stock_tgi import StockTgiBackend


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="a TGI (or dev-tgi) URL; default: start one")
    p.add_argument("--k", type=int, default=8, help="concurrent samples per repetition")
    p.add_argument("--reps", type=int, default=30, help="repetitions per mode")
    p.add_argument("--warmup", type=int, default=3, help="untimed repetitions per mode")
    p.add_argument("--latency-ms", type=float, default=50.0, help="scripted server latency")
    p.add_argument("--fresh-prompts", action="store_true", help="no prompt cache hits")
    p.add_argument("--out", default="bench-results")


def _requests(k: int, rep: int, fresh: bool) -> list[GenerationRequest]:
    query = f"Which answer is right? (round {rep})" if fresh else "Which answer is right?"
    messages = tuple(load_templates().joint(Context.from_query(query), ["good", "bad"]))
    return [
        GenerationRequest(
            messages=messages,
            seed=1 + rep * k + i,
            temperature=0.5,
            top_p=1.0,
            max_new_tokens=256,
            score_count=2,
        )
        for i in range(k)
    ]


async def _timed(backend: TgiBackend, requests: list[GenerationRequest]) -> float:
    t0 = time.perf_counter()
    results = await backend.generate(requests)
    elapsed = time.perf_counter() - t0
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} sample(s) failed: {failed[0]}")
    return elapsed


async def compare(
    url: str, *, k: int, reps: int, warmup: int, fresh: bool
) -> dict[str, list[float]]:
    """Seconds per k-sample repetition, per mode, interleaved on one warm server."""
    backends = {
        "pooled": TgiBackend(TgiSettings(urls=(url,))),
        "stock": StockTgiBackend(TgiSettings(urls=(url,))),
    }
    for b in backends.values():
        await b.start()
    times: dict[str, list[float]] = {name: [] for name in backends}
    try:
        for rep in range(warmup + reps):
            order = list(backends) if rep % 2 == 0 else list(reversed(backends))
            for name in order:
                elapsed = await _timed(backends[name], _requests(k, rep, fresh))
                if rep >= warmup:
                    times[name].append(elapsed)
    finally:
        for b in backends.values():
            await b.close()
    return times


def _start_server(latency_ms: float, port_file: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "grm_dev.devtgi", "--scripted", "--port", "0"]
    command += ["--port-file", str(port_file), "--latency-ms", str(latency_ms)]
    return subprocess.Popen([*command, "--log-level", "WARNING"])


def _read_port(port_file: Path) -> str:
    return port_file.read_text().strip() if port_file.exists() else ""


async def _wait_for_port(proc: subprocess.Popen[bytes], port_file: Path) -> str:
    for _ in range(400):
        port = _read_port(port_file)
        if port:
            return f"http://127.0.0.1:{port}"
        if proc.poll() is not None:
            raise RuntimeError(f"grm dev-tgi exited with {proc.returncode}")
        await asyncio.sleep(0.05)
    raise RuntimeError("grm dev-tgi did not start")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url
        if url is None:
            port_file = Path(tmp) / "port"
            proc = _start_server(args.latency_ms, port_file)
            url = await _wait_for_port(proc, port_file)
        try:
            times = await compare(
                url, k=args.k, reps=args.reps, warmup=args.warmup, fresh=args.fresh_prompts
            )
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
    summary = {
        name: {
            "median_ms": statistics.median(ts) * 1000,
            "p90_ms": sorted(ts)[int(0.9 * (len(ts) - 1))] * 1000,
            "min_ms": min(ts) * 1000,
            "mean_ms": statistics.fmean(ts) * 1000,
        }
        for name, ts in times.items()
    }
    print(
        f"k={args.k} concurrent samples, {args.reps} repetitions per mode, server latency "
        f"{args.latency_ms if args.url is None else 'external'} ms, "
        f"{'fresh' if args.fresh_prompts else 'cached'} prompts"
    )
    rows = [[n, s["median_ms"], s["p90_ms"], s["min_ms"], s["mean_ms"]] for n, s in summary.items()]
    print(table(["client", "median ms", "p90 ms", "min ms", "mean ms"], rows))
    payload = {
        "k": args.k,
        "reps": args.reps,
        "latency_ms": args.latency_ms,
        "fresh_prompts": args.fresh_prompts,
        "summary": summary,
        "times_s": times,
    }
    path = write_json(args.out, "tgi-client", payload)
    print(f"wrote {path}")
    return payload
