"""`grm up`: the whole suite on this machine, each service in its own process.

One principle generator, N critique samplers (separate processes, so they really generate
in parallel, each with its share of the cores) and the aggregator front door. Children bind
free ports and report them through port files; the front door starts once every sampler is
SERVING. Ctrl-C or SIGTERM stops the front door first (in-flight requests finish), then the rest.
"""

from __future__ import annotations

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
from typing import TextIO

from grm.server import wait_serving, write_port_file

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
        "grm.cli",
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
    waiter = asyncio.ensure_future(wait_serving(child.address, within_s=deadline - loop.time()))
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
                    ["principles", *common, "--port", "0", *model],
                    ports / "principles.port",
                )
            )
            for i in range(settings.samplers):
                backends.append(
                    await _spawn(
                        f"sampler-{i}",
                        ["sampler", *common, "--port", "0", "--n-threads", str(threads), *model],
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
                    ],
                    ports / "aggregator.port",
                )
            )
            if not await _until(_ready(front[0], settings.host, settings.startup_timeout_s), stop):
                return 130
            out.write(instructions(front[0].address, samplers, backends[0].address))
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
