"""Shared setup of the suite benchmarks: `grm dev-tgi --scripted` (or `grm dev-openai
--scripted` in an engine's dialect) and `grm up --backend tgi` (or `--backend openai`).

Both run as child processes on free loopback ports (reported through port files), so the
servers' work never shares the benchmark's event loop. Logs go to files in a temporary folder.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import aiohttp

from grm.cli.launcher import ChildProcess

QUERY = "Which answer is right?"
RESPONSES = ("The capital of France is Paris.", "France has no capital.")


def parse_ks(text: str) -> list[int]:
    """'1,4,8' -> [1, 4, 8]."""
    ks = [int(x) for x in text.split(",") if x.strip()]
    if not ks or min(ks) < 1:
        raise ValueError(f"need positive k values, got {text!r}")
    return ks


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms),
        "min_ms": min(ms),
    }


@contextlib.asynccontextmanager
async def child(
    argv: Sequence[str],
    tmp: Path,
    name: str,
    env: Mapping[str, str] | None = None,
    *,
    serving: bool = False,
) -> AsyncIterator[ChildProcess]:
    """A `python -m ...` child on a free port (logs in `tmp`); yields it once its port is
    bound, or once its gRPC health is SERVING with `serving`.

    `env`: variables added to this process's environment for the child (e.g. GRM_* settings).
    """
    proc = ChildProcess(name, argv, tmp, env=env)
    await proc.spawn(["--port", "0"])
    try:
        await proc.wait_port(60)
        if serving:
            await proc.wait_serving("127.0.0.1", 60)
        yield proc
    finally:
        await proc.stop()


@contextlib.asynccontextmanager
async def dev_tgi(
    tmp: Path, *, latency_ms: float, max_concurrent: int, analysis_words: int = 0
) -> AsyncIterator[str]:
    """`grm dev-tgi --scripted` with a fixed latency; yields its URL."""
    argv = ["-m", "grm_dev.devtgi", "--scripted", "--latency-ms", str(latency_ms)]
    argv += ["--max-concurrent-requests", str(max_concurrent), "--log-level", "WARNING"]
    argv += ["--analysis-words", str(analysis_words)]
    async with child(argv, tmp, "dev-tgi") as proc:
        yield f"http://127.0.0.1:{proc.port}"


@contextlib.asynccontextmanager
async def dev_openai(
    tmp: Path, *, latency_ms: float, max_concurrent: int, dialect: str = "vllm"
) -> AsyncIterator[str]:
    """`grm dev-openai --scripted --dialect ...` with a fixed latency; yields its `/v1` URL."""
    argv = ["-m", "grm_dev.devopenai", "--scripted", "--dialect", dialect]
    argv += ["--latency-ms", str(latency_ms), "--max-concurrent-requests", str(max_concurrent)]
    argv += ["--log-level", "WARNING"]
    async with child(argv, tmp, f"dev-openai-{dialect}") as proc:
        yield f"http://127.0.0.1:{proc.port}/v1"


@contextlib.asynccontextmanager
async def suite(
    tmp: Path,
    url: str,
    *,
    samplers: int = 2,
    env: Mapping[str, str] | None = None,
    backend: str = "tgi",
) -> AsyncIterator[str]:
    """`grm up --backend tgi|openai` against `url`; yields the front door's address.

    `env` reaches every service `grm up` starts (GRM_* variables set their flags).
    """
    argv = ["-m", "grm.cli", "up", "--backend", backend, f"--{backend}-url", url]
    argv += ["--samplers", str(samplers), "--metrics-port", "0"]
    async with child(argv, tmp, f"up-{backend}-{samplers}", env) as proc:
        yield f"127.0.0.1:{proc.port}"


async def generate_count(tgi_url: str) -> int:
    """`/generate` requests the dev server has answered (its tgi_request_count)."""
    async with aiohttp.ClientSession() as session, session.get(f"{tgi_url}/metrics") as resp:
        text = await resp.text()
    match = re.search(r"^tgi_request_count(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0
