"""Shared setup of the suite benchmarks: `grm dev-tgi --scripted` and `grm up --backend tgi`.

Both run as child processes on free loopback ports (reported through port files), so the
servers' work never shares the benchmark's event loop. Logs go to files in a temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
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
async def _child(
    argv: Sequence[str], tmp: Path, name: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[str]:
    """A `python -m ...` child that writes its port to a file; yields the port.

    `env`: variables added to this process's environment for the child (e.g. GRM_* settings).
    """
    port_file = tmp / f"{name}.port"
    log_path = tmp / f"{name}.log"
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, "--port", "0", "--port-file", str(port_file),
            stdout=log, stderr=log, env={**os.environ, **env} if env else None,
        )  # fmt: skip
        try:
            yield await _wait_port(proc, port_file, name, log_path)
        finally:
            await stop_process(proc)


@contextlib.asynccontextmanager
async def dev_tgi(tmp: Path, *, latency_ms: float, max_concurrent: int) -> AsyncIterator[str]:
    """`grm dev-tgi --scripted` with a fixed latency; yields its URL."""
    argv = ["-m", "grm_dev.devtgi", "--scripted", "--latency-ms", str(latency_ms)]
    argv += ["--max-concurrent-requests", str(max_concurrent), "--log-level", "WARNING"]
    async with _child(argv, tmp, "dev-tgi") as port:
        yield f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def suite(
    tmp: Path, tgi_url: str, *, samplers: int = 2, env: Mapping[str, str] | None = None
) -> AsyncIterator[str]:
    """`grm up --backend tgi` against `tgi_url`; yields the front door's address.

    `env` reaches every service `grm up` starts (GRM_* variables set their flags).
    """
    argv = ["-m", "grm.cli.main", "up", "--backend", "tgi", "--tgi-url", tgi_url]
    argv += ["--samplers", str(samplers), "--metrics-port", "0"]
    async with _child(argv, tmp, f"up-{samplers}", env) as port:
        yield f"127.0.0.1:{port}"


async def generate_count(tgi_url: str) -> int:
    """`/generate` requests the dev server has answered (its tgi_request_count)."""
    async with aiohttp.ClientSession() as session, session.get(f"{tgi_url}/metrics") as resp:
        text = await resp.text()
    match = re.search(r"^tgi_request_count(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc; empty elsewhere or when it is gone)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in task.read_text().split()]
    return out


def _service_name(pid: int) -> str | None:
    """'dev-tgi', 'aggregator', 'principles', 'sampler-0', ... from a child's command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in argv if a]
    if "grm_dev.devtgi" in args:
        return "dev-tgi"
    if "serve" not in args:
        return None
    if "--port-file" in args:  # `grm up` names every port file after the service
        return Path(args[args.index("--port-file") + 1]).stem
    return args[args.index("serve") + 1] if args.index("serve") + 1 < len(args) else None


def service_pids(root: int | None = None) -> dict[str, int]:
    """The suite's service processes below this one (dev server, aggregator, samplers, ...).

    `grm up` runs each service as its own child; they are found through /proc so that CPU
    time can be charged per service (the benchmark process itself is not included).
    """
    found: dict[str, int] = {}
    stack = _children(os.getpid() if root is None else root)
    while stack:
        pid = stack.pop()
        name = _service_name(pid)
        if name is not None:
            found[name] = pid
        stack += _children(pid)
    return dict(sorted(found.items()))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0.0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # After the ")" closing the command name: state is field 3, utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far per service name."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent per service between two snapshots."""
    return {name: after[name] - before.get(name, 0.0) for name in after}


async def stop_process(proc: asyncio.subprocess.Process, grace_s: float = 30) -> None:
    """SIGTERM a child service and wait for its drain; SIGKILL it after `grace_s`."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
