"""`grm up`: the whole suite on this machine, each service in its own process.

One principle generator, N critique samplers (separate processes, so they really generate
in parallel, each with its share of the cores) and the aggregator front door. Children bind
free ports and report them through port files; the front door starts once every sampler is
SERVING. Ctrl-C or SIGTERM stops the front door first (in-flight requests finish), then the rest.

`--backend tgi --tgi-url URL` (or `--backend openai --openai-url URL/v1 [--engine ...]`) runs
the samplers and the principle generator against TGI servers (or vLLM, SGLang, llama.cpp's
server) instead of the embedded model; `--redis-url` gives the aggregator a Redis cache. The
children also inherit GRM_* variables (GRM_BACKEND, GRM_TGI_URL, GRM_OPENAI_URL,
GRM_OPENAI_API_KEY_FILE, GRM_REDIS_URL, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from grm.cli.launcher import ChildProcess, stop_all
from grm.core.decoding import profile_for_backend
from grm.rpc.security import client_security_from_env
from grm.rpc.server import write_port_file

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
    backend: str | None = None  # embedded | tgi | openai (None: children's default / GRM_BACKEND)
    tgi_url: str | None = None  # URL[,URL...] of the TGI servers (--backend tgi)
    openai_url: str | None = None  # URL[,URL...] of OpenAI-compatible engines (--backend openai)
    engine: str | None = None  # vllm | sglang | llamacpp | tgi (None: detected)
    redis_url: str | None = None  # the aggregator's cache (None: in-memory / GRM_REDIS_URL)
    metrics_port: int = 0  # aggregator's /metrics; principles +1, samplers +2... (0 = off)
    log_format: str = "text"  # the children's log lines: text | json
    http_port: int = 0  # the aggregator's OpenRLHF POST /get_reward (0 = off)


def add_up_options(parser: argparse.ArgumentParser) -> None:
    """The `grm up` flags that choose the backend and the cache (cli.py's `up` parser)."""
    parser.add_argument(
        "--backend", choices=["embedded", "tgi", "openai"], default=None, help="generation backend"
    )
    parser.add_argument("--tgi-url", default=None, help="TGI server URL(s), comma-separated")
    parser.add_argument(
        "--openai-url",
        default=None,
        help="OpenAI-compatible base URL(s) (http://host:port/v1), comma-separated",
    )
    parser.add_argument(
        "--engine",
        choices=["vllm", "sglang", "llamacpp", "tgi"],
        default=None,
        help="the engine behind --openai-url (default: detected)",
    )
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
        "openai_url": getattr(args, "openai_url", None),
        "engine": getattr(args, "engine", None),
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
    if settings.openai_url:
        out += ["--openai-url", settings.openai_url]
    if settings.engine:
        out += ["--engine", settings.engine]
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


def decoding_profile(settings: UpSettings, environ: Mapping[str, str]) -> str:
    """The decoding profile of the backend the samplers run (grm.core.decoding): the
    aggregator fills requests' unset sampling fields from it."""
    backend = settings.backend or environ.get("GRM_BACKEND", "").strip().lower() or "embedded"
    return environ.get("GRM_DECODING") or profile_for_backend(backend)


def aggregator_args(settings: UpSettings, environ: Mapping[str, str] | None = None) -> list[str]:
    """Flags for the aggregator child."""
    environ = os.environ if environ is None else environ
    out = ["--decoding", decoding_profile(settings, environ)]
    if settings.redis_url:
        out += ["--redis-url", settings.redis_url]
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


def _service(name: str, argv: Sequence[str], workdir: Path) -> ChildProcess:
    """A `grm serve ...` child whose output goes to this terminal."""
    return ChildProcess(
        name,
        ["-m", "grm.cli", "serve", *argv],
        workdir,
        log_to_file=False,
        own_session=True,  # Ctrl-C reaches `grm up` only; it stops children in order
    )


async def _ready(child: ChildProcess, host: str, within_s: float) -> None:
    """Wait for the child's port, then for its health to turn SERVING."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    await child.wait_port(within_s)
    # Children inherit GRM_TLS_* and serve TLS then: readiness dials as the aggregator does.
    await child.wait_serving(host, deadline - loop.time(), client_security_from_env())


def _address(host: str, child: ChildProcess) -> str:
    return f"{host}:{child.port}"


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
    backends: list[ChildProcess] = []
    front: list[ChildProcess] = []
    code = 0
    with tempfile.TemporaryDirectory(prefix="grm-up-") as tmp:
        ports = Path(tmp)
        try:
            principles = _service(
                "principles",
                ["principles", *common, "--port", "0", *model, *telemetry_args(settings, 1)],
                ports,
            )
            backends.append(principles)
            await principles.spawn()
            for i in range(settings.samplers):
                sampler = _service(
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
                    ports,
                )
                backends.append(sampler)
                await sampler.spawn()
            starting = asyncio.gather(
                *(_ready(c, settings.host, settings.startup_timeout_s) for c in backends)
            )
            if not await _until(starting, stop):
                return 130
            samplers = [_address(settings.host, c) for c in backends[1:]]
            aggregator = _service(
                "aggregator",
                [
                    "aggregator",
                    *common,
                    "--port",
                    str(settings.port),
                    "--samplers",
                    ",".join(samplers),
                    "--principles",
                    _address(settings.host, principles),
                    "--meta-rm",
                    settings.meta_rm,
                    *aggregator_args(settings),
                    *telemetry_args(settings, 0),
                ],
                ports,
            )
            front.append(aggregator)
            await aggregator.spawn()
            if not await _until(
                _ready(aggregator, settings.host, settings.startup_timeout_s), stop
            ):
                return 130
            address = _address(settings.host, aggregator)
            out.write(instructions(address, samplers, _address(settings.host, principles)))
            out.write(metrics_lines(settings, len(samplers)))
            out.write(http_lines(settings))
            out.flush()
            if settings.port_file:
                write_port_file(settings.port_file, aggregator.port)
            children = [*front, *backends]
            died = [asyncio.ensure_future(c.proc.wait()) for c in children if c.proc]
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({stopping, *died}, return_when=asyncio.FIRST_COMPLETED)
            for task in (stopping, *died):
                task.cancel()
            if not stop.is_set():
                dead = [c.name for c in children if not c.running]
                log.error("%s exited; stopping the suite", ", ".join(dead))
                code = 1
        except (RuntimeError, TimeoutError) as exc:
            log.error("grm up failed: %s", exc)
            code = 1
        finally:
            await stop_all([*front, *backends], settings.grace_s + 5)
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
