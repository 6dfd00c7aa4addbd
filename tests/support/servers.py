"""Real gRPC servers for the service tests: the three services on free loopback ports.

Only the model is a test double (tests.support.scripted.ScriptedBackend and the variants here); the
servers, interceptor, channels, pool and pipeline are the production code. Also runnable as
a child process (`python -m tests.support.servers sampler --port-file F --delay S`) for tests that
kill a sampler process outright.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from grm.backends.base import GenerationRequest, GenerationResult
from grm.core.templates import load_templates
from grm.core.validation import Defaults, Limits
from grm.rpc.server import GrmServer, ServerSettings, serve
from grm.scoring.critique import CritiqueSampler
from grm.scoring.principles import PrincipleGenerator
from grm.services.aggregator.main import Aggregator, AggregatorSettings, build
from grm.services.principles.main import PrincipleSettings
from grm.services.principles.main import build_server as build_principle_server
from grm.services.sampler.main import SamplerSettings
from grm.services.sampler.main import build_server as build_sampler_server
from tests.support.scripted import ScriptedBackend, keyword_judge

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = ServerSettings(host="127.0.0.1", port=0, grace_s=1.0)


class TrackingBackend(ScriptedBackend):
    """A ScriptedBackend that also counts generations finished and cancelled."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.finished = 0
        self.cancelled = 0
        self.running = 0

    async def generate_one(self, request: GenerationRequest) -> GenerationResult:
        self.running += 1
        try:
            result = await super().generate_one(request)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        self.finished += 1
        return result


@dataclass
class RunningService:
    """A service on a loopback port with its (scripted) backend."""

    server: GrmServer
    backend: TrackingBackend

    @property
    def address(self) -> str:
        return self.server.address

    async def stop(self, grace: float | None = 0) -> None:
        await self.server.stop(grace)


@dataclass
class RunningSampler(RunningService):
    sampler: CritiqueSampler


async def start_sampler(
    backend: TrackingBackend | None = None,
    *,
    concurrency: int | None = None,
    limits: Limits | None = None,
    server: ServerSettings = LOOPBACK,
    channel_write_interval_ms: float | None = None,
) -> RunningSampler:
    """A CritiqueService on a free port, SERVING (`server`: e.g. TLS and a token)."""
    backend = backend or TrackingBackend()
    sampler = CritiqueSampler(backend, load_templates(), concurrency=concurrency)
    settings = SamplerSettings(
        server=server,
        model=None,  # type: ignore[arg-type]  # the scripted backend needs no model file
        template="grm-default-v3",
        concurrency=concurrency,
        limits=limits or Limits(),
        log_level="INFO",
        channel_write_interval_ms=channel_write_interval_ms,
    )
    server = build_sampler_server(settings, sampler)
    await server.start()
    await backend.start()
    await server.set_serving(True)
    return RunningSampler(server, backend, sampler)


async def start_principles(
    backend: TrackingBackend | None = None, *, server: ServerSettings = LOOPBACK
) -> RunningService:
    """A PrincipleService on a free port, SERVING."""
    backend = backend or TrackingBackend(lambda r: "Specific Criteria: accuracy (60%), tone (40%).")
    templates = load_templates()
    settings = PrincipleSettings(
        server=server,
        model=None,  # type: ignore[arg-type]
        template="grm-default-v3",
        limits=Limits(),
        log_level="INFO",
    )
    server = build_principle_server(settings, PrincipleGenerator(backend, templates))
    await server.start()
    await server.set_serving(True)
    return RunningService(server, backend)


@dataclass
class Suite:
    """Two (or more) samplers, a principle generator and the aggregator, all real servers."""

    aggregator: Aggregator
    samplers: list[RunningSampler]
    principles: RunningService
    extra: list[Any] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.aggregator.server.address


@contextlib.asynccontextmanager
async def running_suite(
    *,
    samplers: int = 2,
    script: Callable[[GenerationRequest], str] = keyword_judge,
    delay: float = 0.0,
    capacity: int = 4,
    sampler_addresses: Sequence[str] = (),
    backend_server: ServerSettings = LOOPBACK,
    **settings: Any,
) -> AsyncIterator[Suite]:
    """Start the suite; `settings` override AggregatorSettings fields (limits, meta_rm, ...).

    `backend_server`: the samplers' and principle generator's transport (TLS, token).
    """
    started = [
        await start_sampler(
            TrackingBackend(script, capacity=capacity, delay=delay), server=backend_server
        )
        for _ in range(samplers)
    ]
    principles = await start_principles(server=backend_server)
    agg_settings = AggregatorSettings(
        server=LOOPBACK,
        samplers=(*(s.address for s in started), *sampler_addresses),
        principles=(principles.address,),
        limits=settings.pop("limits", Limits()),
        defaults=settings.pop("defaults", Defaults()),
    )
    agg_settings = replace(agg_settings, **settings)
    aggregator = build(agg_settings)
    await aggregator.server.start()
    await aggregator.warm_up()
    await aggregator.server.set_serving(True)
    try:
        yield Suite(aggregator, started, principles)
    finally:
        await aggregator.server.stop(0)
        await aggregator.close()
        for s in [*started, principles]:
            await s.stop(0)


def child_env() -> dict[str, str]:
    """Environment for child processes: the repo root importable (for `tests.*`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def _child_sampler(port_file: str, delay: float) -> None:
    """A scripted sampler as a process of its own, shut down by SIGTERM like the real one."""
    backend = TrackingBackend(keyword_judge, capacity=1, delay=delay)
    sampler = CritiqueSampler(backend, load_templates())
    settings = SamplerSettings(
        server=replace(LOOPBACK, port_file=port_file),
        model=None,  # type: ignore[arg-type]
        template="grm-default-v3",
        concurrency=None,
        limits=Limits(),
        log_level="INFO",
    )
    await serve(build_sampler_server(settings, sampler), warm_up=backend.start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("service", choices=["sampler"])
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    asyncio.run(_child_sampler(args.port_file, args.delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
