"""Shared setup of the suite benchmarks: `grm dev-tgi --scripted` and `grm up --backend tgi`.

Both run as child processes on free loopback ports (reported through port files), so the
servers' work never shares the benchmark's event loop. Logs go to files in a temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp

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


def _read(path: Path, tail: int | None = None) -> str:
    if not path.exists():
        return ""
    text = path.read_text(errors="replace")
    return text[-tail:] if tail else text.strip()


async def _wait_port(
    proc: asyncio.subprocess.Process, port_file: Path, what: str, log: Path
) -> str:
    for _ in range(1200):
        text = _read(port_file)
        if text:
            return text
        if proc.returncode is not None:
            tail = _read(log, 2000)
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} did not start within 60 s")


@contextlib.asynccontextmanager
async def _child(argv: Sequence[str], tmp: Path, name: str) -> AsyncIterator[str]:
    """A `python -m ...` child that writes its port to a file; yields the port."""
    port_file = tmp / f"{name}.port"
    log_path = tmp / f"{name}.log"
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, "--port", "0", "--port-file", str(port_file),
            stdout=log, stderr=log,
        )  # fmt: skip
        try:
            yield await _wait_port(proc, port_file, name, log_path)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


@contextlib.asynccontextmanager
async def dev_tgi(tmp: Path, *, latency_ms: float, max_concurrent: int) -> AsyncIterator[str]:
    """`grm dev-tgi --scripted` with a fixed latency; yields its URL."""
    argv = ["-m", "grm.devtgi", "--scripted", "--latency-ms", str(latency_ms)]
    argv += ["--max-concurrent-requests", str(max_concurrent), "--log-level", "WARNING"]
    async with _child(argv, tmp, "dev-tgi") as port:
        yield f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def suite(tmp: Path, tgi_url: str, *, samplers: int = 2) -> AsyncIterator[str]:
    """`grm up --backend tgi` against `tgi_url`; yields the front door's address."""
    argv = ["-m", "grm.cli", "up", "--backend", "tgi", "--tgi-url", tgi_url]
    argv += ["--samplers", str(samplers), "--metrics-port", "0"]
    async with _child(argv, tmp, f"up-{samplers}") as port:
        yield f"127.0.0.1:{port}"


async def generate_count(tgi_url: str) -> int:
    """`/generate` requests the dev server has answered (its tgi_request_count)."""
    async with aiohttp.ClientSession() as session, session.get(f"{tgi_url}/metrics") as resp:
        text = await resp.text()
    match = re.search(r"^tgi_request_count(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0
