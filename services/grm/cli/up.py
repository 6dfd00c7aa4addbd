"""`grm up`: the whole suite on this machine, each service in its own process.

One principle generator, N critique samplers (separate processes, so they really generate
in parallel, each with its share of the cores) and the aggregator front door. Children bind
free ports and report them through port files; the front door starts once every sampler is
SERVING. Ctrl-C or SIGTERM stops the front door first (in-flight requests finish), then the rest.

`--backend tgi --tgi-url URL` runs the samplers and the principle generator against TGI
servers instead of the embedded model; `--redis-url` gives the aggregator a Redis cache. The
children also inherit GRM_* variables (GRM_BACKEND, GRM_TGI_URL, GRM_REDIS_URL, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from grm.rpc.security import client_security_from_env
from grm.rpc.server import wait_serving, write_port_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpSettings:
    host: str = "127.0.0.1"
    port: int = 50051
    samplers: int = 2
    model_path: str | None = None
    n_ctx: int = 4096
    threads_per_sampler: int | None = None  # default: cores / samplers
    meta_rm: str = "agreement"
    port_file: str | None = None  # write the front door's port here once it is SERVING
    startup_timeout_s: float = 180.0
    grace_s: float = 10.0
    backend: str | None = None  # embedded | tgi (None: the children's default / GRM_BACKEND)
    tgi_url: str | None = None  # URL[,URL...] of the TGI servers (--backend tgi)
    redis_url: str | None = None  # the aggregator's cache (None: in-memory / GRM_REDIS_URL)
    metrics_port: int = 0  # aggregator's /metrics; principles +1, samplers +2... (0 = off)
    log_format: str = "text"  # the children's log lines: text | json
    http_port: int = 0  # the aggregator's OpenRLHF POST /get_reward (0 = off)


def add_up_options(parser: argparse.ArgumentParser) -> None:
    """The `grm up` flags that choose the backend and the cache (cli.py's `up` parser)."""
    parser.add_argument(
        "--backend", choices=["embedded", "tgi"], default=None, help="generation backend"
    )
    parser.add_argument("--tgi-url", default=None, help="TGI server URL(s), comma-separated")
    parser.add_argument(
        "--redis-url", default=None, help="cache in Redis (default: in-memory per aggregator)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=9464,
        help="aggregator's /metrics; principles +1, samplers +2 and up (0 = off)",
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="the services' log lines"
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=0,
        help="also serve OpenRLHF's POST /get_reward on this HTTP port (0 = off)",
    )


def up_options(args: argparse.Namespace) -> dict[str, Any]:
    """UpSettings fields from the flags `add_up_options` declared."""
    return {
        "backend": getattr(args, "backend", None),
        "tgi_url": getattr(args, "tgi_url", None),
        "redis_url": getattr(args, "redis_url", None),
        "metrics_port": getattr(args, "metrics_port", 0),
        "log_format": getattr(args, "log_format", "text"),
        "http_port": getattr(args, "http_port", 0),
    }


def backend_args(settings: UpSettings) -> list[str]:
    """Flags for the sampler and principle children."""
    out = []
    if settings.backend:
        out += ["--backend", settings.backend]
    if settings.tgi_url:
        out += ["--tgi-url", settings.tgi_url]
    return out


def telemetry_args(settings: UpSettings, offset: int) -> list[str]:
    """Flags for child number `offset` (0 aggregator, 1 principles, 2+ samplers)."""
    out = ["--log-format", settings.log_format]
    if settings.metrics_port:
        out += ["--metrics-port", str(settings.metrics_port + offset)]
    return out


def metrics_lines(settings: UpSettings, samplers: int) -> str:
    """Where `grm up` serves each child's /metrics (printed with the instructions)."""
    if not settings.metrics_port:
        return ""
    names = ["aggregator", "principles", *(f"sampler-{i}" for i in range(samplers))]
    urls = [
        f"  {name}: http://{settings.host}:{settings.metrics_port + i}/metrics"
        for i, name in enumerate(names)
    ]
    return "Prometheus metrics:\n" + "\n".join(urls) + "\n"


def aggregator_args(settings: UpSettings) -> list[str]:
    """Flags for the aggregator child."""
    out = ["--redis-url", settings.redis_url] if settings.redis_url else []
    if settings.http_port:
        out += ["--http-port", str(settings.http_port)]
    return out


def http_lines(settings: UpSettings) -> str:
    """Where `grm up` serves OpenRLHF's remote reward model endpoint (if it does)."""
    if not settings.http_port:
        return ""
    return (
        "OpenRLHF remote reward model (--remote_rm_url):\n"
        f"  http://{settings.host}:{settings.http_port}/get_reward\n"
    )


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    port_file: Path
    address: str = ""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM the child if `grm up` itself dies, so no model process is orphaned."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _spawn(name: str, argv: Sequence[str], port_file: Path) -> Child:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "grm.cli.main",
        "serve",
        *argv,
        "--port-file",
        str(port_file),
        env=env,
        start_new_session=True,  # Ctrl-C reaches `grm up` only; it stops children in order
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    log.info("started %s (pid %d)", name, process.pid)
    return Child(name, process, port_file)


async def _ready(child: Child, host: str, within_s: float) -> None:
    """Wait for the child's port file, then for its health to turn SERVING."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not child.port_file.exists():
        if child.process.returncode is not None:
            raise RuntimeError(f"{child.name} exited with code {child.process.returncode}")
        if loop.time() > deadline:
            raise TimeoutError(f"{child.name} did not bind a port within {within_s:.0f}s")
        await asyncio.sleep(0.05)
    port = int(child.port_file.read_text().strip())
    child.address = f"{host}:{port}"
    # Children inherit GRM_TLS_* and serve TLS then: readiness dials as the aggregator does.
    security = client_security_from_env()
    waiter = asyncio.ensure_future(
        wait_serving(child.address, within_s=deadline - loop.time(), security=security)
    )
    exited = asyncio.ensure_future(child.process.wait())
    await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
    if not waiter.done():
        waiter.cancel()
        raise RuntimeError(f"{child.name} exited with code {child.process.returncode}")
    exited.cancel()
    waiter.result()


async def _stop(children: Sequence[Child], grace_s: float) -> None:
    """SIGTERM in the given order (each service drains), SIGKILL what outlives the grace."""
    for child in children:
        if child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.process.wait(), grace_s + 5)
            except TimeoutError:
                log.warning("%s did not stop in time; killing it", child.name)
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()


def instructions(address: str, samplers: Sequence[str], principles: str) -> str:
    body = '{"query": "What is 2 + 2?", "responses": ["4", "5"], "k": 2}'
    return (
        f"GRM Suite is up: RewardService on {address}\n"
        f"  samplers: {', '.join(samplers)}; principle generator: {principles}\n"
        "Score with grpcurl (server reflection is on):\n"
        f"  grpcurl -plaintext -d '{body}' {address} grm.v1.RewardService/Score\n"
        "or with the CLI / Python client:\n"
        f"  grm score examples/items.jsonl --target {address}\n"
        f"  python -c 'from grm.client import GrmClient; "
        f'print(GrmClient("{address}").score("What is 2 + 2?", ["4", "5"], k=2).rewards)\'\n'
        "Ctrl-C stops everything.\n"
    )


async def run_up(settings: UpSettings, out: TextIO = sys.stdout) -> int:
    """Start the suite, print how to call it, and run until SIGINT/SIGTERM or a child dies."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    threads = settings.threads_per_sampler or max(1, (os.cpu_count() or 1) // settings.samplers)
    model = ["--n-ctx", str(settings.n_ctx)]
    if settings.model_path:
        model += ["--model-path", settings.model_path]
    model += backend_args(settings)
    common = ["--host", settings.host, "--grace-s", str(settings.grace_s)]
    backends: list[Child] = []
    front: list[Child] = []
    code = 0
    with tempfile.TemporaryDirectory(prefix="grm-up-") as tmp:
        ports = Path(tmp)
        try:
            backends.append(
                await _spawn(
                    "principles",
                    ["principles", *common, "--port", "0", *model, *telemetry_args(settings, 1)],
                    ports / "principles.port",
                )
            )
            for i in range(settings.samplers):
                backends.append(
                    await _spawn(
                        f"sampler-{i}",
                        [
                            "sampler",
                            *common,
                            "--port",
                            "0",
                            "--n-threads",
                            str(threads),
                            *model,
                            *telemetry_args(settings, 2 + i),
                        ],
                        ports / f"sampler-{i}.port",
                    )
                )
            starting = asyncio.gather(
                *(_ready(c, settings.host, settings.startup_timeout_s) for c in backends)
            )
            if not await _until(starting, stop):
                return 130
            samplers = [c.address for c in backends[1:]]
            front.append(
                await _spawn(
                    "aggregator",
                    [
                        "aggregator",
                        *common,
                        "--port",
                        str(settings.port),
                        "--samplers",
                        ",".join(samplers),
                        "--principles",
                        backends[0].address,
                        "--meta-rm",
                        settings.meta_rm,
                        *aggregator_args(settings),
                        *telemetry_args(settings, 0),
                    ],
                    ports / "aggregator.port",
                )
            )
            if not await _until(_ready(front[0], settings.host, settings.startup_timeout_s), stop):
                return 130
            out.write(instructions(front[0].address, samplers, backends[0].address))
            out.write(metrics_lines(settings, len(samplers)))
            out.write(http_lines(settings))
            out.flush()
            if settings.port_file:
                write_port_file(settings.port_file, int(front[0].address.rsplit(":", 1)[1]))
            died = [asyncio.ensure_future(c.process.wait()) for c in [*front, *backends]]
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({stopping, *died}, return_when=asyncio.FIRST_COMPLETED)
            for task in (stopping, *died):
                task.cancel()
            if not stop.is_set():
                dead = [c.name for c in [*front, *backends] if c.process.returncode is not None]
                log.error("%s exited; stopping the suite", ", ".join(dead))
                code = 1
        except (RuntimeError, TimeoutError) as exc:
            log.error("grm up failed: %s", exc)
            code = 1
        finally:
            await _stop([*front, *backends], settings.grace_s)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    return code


async def _until(work: asyncio.Future[object] | object, stop: asyncio.Event) -> bool:
    """Await `work` unless `stop` comes first (then cancel it and return False)."""
    task = asyncio.ensure_future(work)  # type: ignore[arg-type]
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return False
    stopping.cancel()
    task.result()
    return True
