"""One Score through the services (`grm up`: two samplers) vs the in-process pipeline.

Usage: .venv/bin/python scripts/measure_services_latency.py [--k 4] [--max-new-tokens 64]

Scores each item of examples/items.jsonl once through `grm up` (a real child-process suite on
the embedded model; the client's wall-clock time per Score), stops the suite, then scores the
same items with the same seeds in process (`build_local_stack`: one model with all cores, as
`grm score` runs it; and the same pipeline with one llama.cpp thread).
Prints a JSON report: per-item latencies, and on which sampler each sample was drawn.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings
from grm.client import AsyncGrmClient
from grm.core.templates import load_templates
from grm.core.validation import build_item
from grm.cli.local import LocalStack, build_local_stack
from grm.scoring.pipeline import ScoringPipeline
from grm.scoring.critique import CritiqueSampler
from grm.cli.scorefile import item_fields

ROOT = Path(__file__).resolve().parents[1]
# Loads the model's code paths and the template prefix into each KV cache; not measured.
WARM_UP = ("warm-up", {"query": "Say hello.", "turns": [], "responses": ["Hello!", "No."]})


def load_items(path: Path) -> list[tuple[str, dict]]:
    out = []
    for line in path.read_text().splitlines():
        data = json.loads(line)
        out.append((str(data["id"]), item_fields(data)))
    return out


async def remote(items: list, args: argparse.Namespace) -> tuple[list[dict], dict]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        up = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "grm.cli.main", "up", "--port", "0", "--port-file", str(port_file),
            "--samplers", str(args.samplers), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            started = time.monotonic()
            while not port_file.exists():
                if up.returncode is not None or time.monotonic() - started > 300:
                    raise SystemExit("grm up did not start")
                await asyncio.sleep(0.1)
            startup_s = time.monotonic() - started
            address = f"127.0.0.1:{port_file.read_text().strip()}"
            rows = []
            async with AsyncGrmClient(address, timeout=600) as client:
                for item_id, fields in [WARM_UP, *items]:
                    item = build_item(**fields, k=args.k, max_new_tokens=args.max_new_tokens)
                    t0 = time.perf_counter()
                    result = await client.score_item(item, include_samples=True)
                    wall_ms = (time.perf_counter() - t0) * 1000
                    spread = collections.Counter(s.sampler for s in result.samples if s.valid)
                    rows.append(
                        {
                            "id": item_id,
                            "wall_ms": round(wall_ms),
                            "server_total_ms": round(result.timings.total_ms),
                            "k_used": result.k_used,
                            "invalid": result.invalid_samples,
                            "rewards": result.rewards,
                            "samples_per_sampler": dict(spread),
                            "tokens": [s.tokens_generated for s in result.samples],
                        }
                    )
        finally:
            up.send_signal(signal.SIGTERM)
            await up.wait()
    return rows, {"startup_s": round(startup_s, 1), "address": address}


async def local(items: list, args: argparse.Namespace, threads: int | None) -> list[dict]:
    """The in-process pipeline (`grm score`'s stack); `threads` None = all cores, its default."""
    if threads is None:
        stack = build_local_stack()
    else:
        backend = EmbeddedBackend(EmbeddedSettings(n_threads=threads))
        sampler = CritiqueSampler(backend, load_templates())
        stack = LocalStack(backend, sampler, ScoringPipeline(sampler))
    await stack.start()
    rows = []
    try:
        for item_id, fields in [WARM_UP, *items]:
            item = build_item(**fields, k=args.k, max_new_tokens=args.max_new_tokens)
            t0 = time.perf_counter()
            result = await stack.pipeline.score(item)
            rows.append(
                {
                    "id": item_id,
                    "wall_ms": round((time.perf_counter() - t0) * 1000),
                    "k_used": result.k_used,
                    "invalid": result.invalid_samples,
                    "rewards": result.rewards,
                    "tokens": [s.tokens_generated for s in result.samples],
                }
            )
    finally:
        await stack.close()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--samplers", type=int, default=2)
    parser.add_argument("--items", default=str(ROOT / "examples/items.jsonl"))
    args = parser.parse_args()
    items = load_items(Path(args.items))
    load_before = os.getloadavg()
    remote_rows, info = await remote(items, args)
    local_rows = await local(items, args, None)
    local_1t_rows = await local(items, args, 1)
    measured = [r["id"] != "warm-up" for r in remote_rows]

    def mean(rows: list[dict]) -> float:
        vals = [r["wall_ms"] for r, m in zip(rows, measured, strict=True) if m]
        return round(sum(vals) / len(vals))

    report = {
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "samplers": args.samplers,
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "suite": info,
        "services_mean_wall_ms": mean(remote_rows),
        "in_process_mean_wall_ms": mean(local_rows),
        "in_process_1_thread_mean_wall_ms": mean(local_1t_rows),
        "services": remote_rows,
        "in_process": local_rows,
        "in_process_1_thread": local_1t_rows,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
